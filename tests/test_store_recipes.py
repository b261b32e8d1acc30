"""Schema 6's recipes (runs.recipe_id) and schema 8's tag sets (runs.tagset_id): the reports
group the runs by the recipe and tag set stored with each run instead of stripping the seed from
every config and reading every run's tags in the query.

A run's recipe is computed once, when it is created, from its config, method and dataset, which
never change, and its tag set whenever its tags change (the tags but the Slurm job tags, in any
order): the tests check that the stored grouping is the one the version-5 query computed
(``json_remove(config_json, '$.seed')``, method, dataset, tags without the job tags) on stores
built through the API, after every way a run changes (tags added, Slurm jobs, resumed, failed,
deleted, new seeds), and on a store of an older version upgraded in place -- whose table-s5 is
then the one it had before.
"""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest
from alembic import command
from hypothesis import assume, given
from hypothesis import strategies as st
from sqlalchemy import create_engine, inspect, text, update

from sslbench.db import Store, migrations, queries
from sslbench.db.models import Meta, Recipe, Run
from sslbench.db.records import NewRun
from sslbench.db.values import flatten, leaves
from sslbench.errors import StoreError
from sslbench.report.base import EmptyReportError
from sslbench.report.grid import table_s5_report
from sslbench.report.output import report_text
from tests.test_report_recipes import FILTERS, check_recipes_against_runs, fill

#: The recipe of every run as version 5's query computed it, per dialect.
OLD_KEY = {"sqlite": "json_remove(config_json, '$.seed')",
           "postgresql": "(config_json::jsonb - 'seed')::text"}


#: What each older version lacks: the column of the runs, and its table.
LACKS = {5: ("recipe_id", "recipes"), 7: ("tagset_id", "tagsets")}


def as_version(url: str, version: int) -> None:
    """Take a store back to schema ``version`` (5: no recipes; 7: no tag sets): the store an
    sslbench of that version would have written, holding the same rows."""
    engine = create_engine(url)
    with engine.begin() as conn:
        command.downgrade(migrations.alembic_config(conn), migrations.revision_of(version))
        conn.execute(update(Meta).where(Meta.key == "schema_version")
                     .values(value=str(version)))
    engine.dispose()


def as_version_5(url: str) -> None:
    as_version(url, 5)


def _tag_set(tags_json: str) -> str:
    """The tags that group runs, as the reports of version 7 would have read them had they left
    out the Slurm job tags and the order: a frozenset's text."""
    return repr(sorted({t for t in json.loads(tags_json) if not t.startswith("slurm:")}))


def partitions(store: Store) -> tuple[set[frozenset[str]], set[frozenset[str]]]:
    """The runs grouped by version 5's recipe key with their tags (but the Slurm job tags, in
    any order), and by the stored recipe and tag set."""
    old_key = OLD_KEY[store._engine.dialect.name]
    old: dict[tuple, set[str]] = {}
    new: dict[tuple, set[str]] = {}
    with store._engine.connect() as conn:
        for run_id, key, method, dataset, tags, recipe_id, tagset_id in conn.execute(text(
                f"SELECT run_id, {old_key}, method, dataset, tags_json, recipe_id, tagset_id "
                "FROM runs")):
            old.setdefault((key, method, dataset, _tag_set(tags)), set()).add(run_id)
            new.setdefault((recipe_id, tagset_id), set()).add(run_id)
    return {frozenset(v) for v in old.values()}, {frozenset(v) for v in new.values()}


def table_s5_texts(store: Store) -> list[str]:
    """table-s5 as JSON and markdown under each of the recipe tests' filters, both selects."""
    out = []
    for filters in FILTERS:
        for select in ("final", "best"):
            try:
                report = table_s5_report(store, select=select, filters=filters)
            except EmptyReportError as err:
                out.append(f"empty: {err}")
                continue
            out.append("\n".join(report_text(report, fmt) for fmt in ("json", "markdown")))
    return out


def change_runs(store: Store, rng: random.Random) -> None:
    """Everything that happens to runs after they are created: tags added, runs resumed (and
    completed again, or failed), deleted, and new seeds of stored recipes."""
    runs = store.find_runs(kind="pretrain")
    for run in rng.sample(runs, 8):
        store.add_tags(run.run_id, [rng.choice(("x", "simclr-orig", "late"))])
    for run in rng.sample(runs, 12):  # what the Slurm backend does: the seeds stay together
        store.add_tags(run.run_id, [f"slurm:{rng.randint(1, 3)}_{rng.randint(0, 9)}"])
    for run in rng.sample(runs, 8):
        store.set_status(run.run_id, "running")
        store.log_metrics(run.run_id, 10, {"online_top1": rng.uniform(40, 70)})
        store.set_status(run.run_id, rng.choice(("completed", "failed", "interrupted")))
    for run in rng.sample(runs, 5):
        store.delete_run(run.run_id)
    for i, run in enumerate(rng.sample(store.find_runs(kind="pretrain"), 6)):
        config = {**run.config, "seed": 10_000 + i}
        store.upsert_runs([NewRun(run_id=f"late{i}", kind="pretrain", config=config,
                                  command=[], env={}, tags=run.tags)])
        store.log_metrics(f"late{i}", 0, {"online_top1": rng.uniform(40, 70)})
        store.set_status(f"late{i}", "completed")


def test_a_run_s_recipe_is_its_config_without_the_seed_method_and_dataset(tmp_path):
    with Store.open(str(tmp_path / "s.sqlite")) as store:
        base = {"method": "simclr", "dataset": "cifar10", "lr": 0.3, "seed": {"data": 1}}
        runs = [NewRun(run_id="a", kind="pretrain", config=base, command=[], env={}),
                NewRun(run_id="b", kind="pretrain", config={**base, "seed": 2}, command=[],
                       env={}, tags=["t"]),
                NewRun(run_id="c", kind="pretrain", config={**base, "lr": 0.5}, command=[],
                       env={}),
                NewRun(run_id="d", kind="pretrain", config=base, command=[], env={},
                       dataset="imagenet"),
                NewRun(run_id="e", kind="pretrain", command=[], env={},
                       config=dict(reversed(list({**base, "seed": 5}.items()))))]
        store.upsert_runs(runs)
        store.upsert_runs(runs[:1])  # a run stored again keeps its recipe
        with store._session() as session:
            ids = dict(session.execute(text("SELECT run_id, recipe_id FROM runs")).all())
            stored = session.query(Recipe).count()
        assert ids["a"] == ids["b"] and len({ids["a"], ids["c"], ids["d"]}) == 3
        assert ids["e"] == ids["a"]  # the keys in another order: the same config
        assert stored == 3
        old, new = partitions(store)
        assert old == new


#: Configs whose params are awkward to read off the recipe: nulls, lists, empty and nested
#: mappings, a key with a dot of its own, keys some configs lack, a NaN.
ODD_CONFIGS = [
    {"method": "vicreg", "dim": None, "projector": [1, 2], "loss": {}, "seed": 1},
    {"method": "vicreg", "dim": 3, "loss.sim_coeff": 2.0, "epochs": True, "seed": 2},
    {"method": "simclr", "dim": 3.5, "loss": {"temperature": float("nan")},
     "a.b": {"c": 1}, "seed": 3},
    {"method": "simclr", "augment": {"x": {"y": 1}}, "lr": 0.1 + 0.2, "seed": {"data": 4}},
]


def test_a_recipe_s_params_are_those_of_each_of_its_runs(tmp_path):
    """The recipes' params are read off their configs; each run's are its own rows."""
    keys = ("dim", "projector", "loss", "loss.sim_coeff", "loss.temperature", "epochs",
            "a.b.c", "augment.x.y", "augment", "lr", "absent", "seed")
    with Store.open(str(tmp_path / "s.sqlite")) as store:
        fill(store, random.Random(0), 60)
        store.upsert_runs([NewRun(run_id=f"odd{i}.{seed}", kind="pretrain", command=[], env={},
                                  config={**config, "seed": seed})
                           for i, config in enumerate(ODD_CONFIGS) for seed in range(2)])
        recipes, runs = store.recipe_runs(params=keys, summaries=())
        frame = store.runs_frame(params=keys, summaries=())
    assert "param.seed" not in recipes and recipes["runs"].sum() == len(frame)
    shared = [f"param.{k}" for k in keys if k != "seed"]
    mine = recipes.loc[runs["recipe"], shared].set_axis(runs["run_id"]).sort_index()
    pd.testing.assert_frame_equal(mine, frame.set_index("run_id")[shared].sort_index(),
                                  check_exact=True, check_names=False, check_index_type=False)
    odd = mine.loc["odd2.0"]
    assert odd["param.a.b.c"] == 1 and odd["param.dim"] == 3.5
    assert pd.isna(odd["param.loss.temperature"]) and pd.isna(odd["param.absent"])


def test_recipes_read_once_are_not_read_again(tmp_path, monkeypatch):
    """``report all`` reads the same recipes with and without run ids: the second time from
    ``parsed``, the same frame, which the caller may change without changing the kept one."""
    reads = []
    read = queries._read_recipes
    monkeypatch.setattr(queries, "_read_recipes", lambda *a: reads.append(a) or read(*a))
    parsed: dict = {}
    with Store.open(str(tmp_path / "s.sqlite")) as store:
        fill(store, random.Random(2), 60)
        ask = {"params": ("dim", "projector"), "summaries": ("online_top1",)}
        first, _ = store.recipe_runs(**ask, parsed=parsed)
        first["dim_again"] = first["param.dim"]
        again, runs = store.recipe_runs(**ask, run_ids=False, parsed=parsed)
        assert len(reads) == 1
        store.recipe_runs(params=("dim",), summaries=(), parsed=parsed)  # other keys: read
        assert len(reads) == 2
        fresh, _ = store.recipe_runs(**ask)
    pd.testing.assert_frame_equal(again, fresh)
    assert again["runs"].sum() == len(runs)


def test_the_runs_of_the_recipes_come_in_listing_order(tmp_path):
    """With their ids the runs come oldest first, as ``runs list`` lists them (runs created
    together, at one time, by id), though SQLite reads them in run-id order first."""
    with Store.open(str(tmp_path / "s.sqlite")) as store:
        fill(store, random.Random(1), 80)
        store.upsert_runs([NewRun(run_id=f"{9 - i}-together", kind="pretrain", command=[],
                                  env={}, config={"method": "vicreg", "seed": i})
                           for i in range(10)])
        _, runs = store.recipe_runs(params=(), summaries=("online_top1",))
        listed = [run.run_id for run in store.find_runs()]
    assert runs["run_id"].tolist() == listed
    assert listed[-10:] == sorted(listed[-10:])


@given(st.lists(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(
        st.sampled_from(("a", "b", "a.b", "b.a", "c")), inner, max_size=3),
    max_leaves=8), max_size=6))
def test_leaves_are_the_flattened_configs_values(configs):
    configs = [c for c in configs if isinstance(c, dict)]
    names = [[name for name, _ in flatten(c)] for c in configs]
    assume(all(len(n) == len(set(n)) for n in names))  # a store refuses the others
    for key in ("a", "b", "a.b", "a.b.a", "b.a.b", "a.b.c", "c", "c.a"):
        assert leaves(configs, key, missing="-") == [
            dict(flatten(c)).get(key, "-") for c in configs]


def test_the_seeds_of_a_recipe_that_slurm_jobs_ran_stay_one_recipe(tmp_path):
    """The Slurm backend tags each run with its job (``slurm:JOBID``) when it claims it: the
    reports see the run's other tags only, in any order."""
    with Store.open(str(tmp_path / "s.sqlite")) as store:
        base = {"method": "simclr", "dataset": "cifar10", "lr": 0.3}
        store.upsert_runs([NewRun(run_id=f"s{seed}", kind="pretrain", command=[], env={},
                                  config={**base, "seed": seed}, tags=tags)
                           for seed, tags in enumerate((["sweep:a", "x"], ["x", "sweep:a"],
                                                        ["x", "sweep:a", "slurm:5_0"], ["x"]))])
        store.add_tags("s0", ["slurm:7_1"])
        assert store.claim_run("s1", scheduler_id="slurm-task", device="cpu", slots=(),
                               tag="slurm:8_2") == 1
        for run_id in ("s0", "s1", "s2", "s3"):
            store.log_metrics(run_id, 0, {"online_top1": 50.0})
            store.set_status(run_id, "completed")
        assert store.get_run("s0").tags == ["sweep:a", "x", "slurm:7_1"]
        recipes, runs = store.recipe_runs(params=(), summaries=("online_top1",))
    assert recipes["tags"].tolist() == [["sweep:a", "x"], ["x"]]
    assert recipes["runs"].tolist() == [3, 1]
    assert runs.set_index("run_id")["recipe"].to_dict() == {"s0": 0, "s1": 0, "s2": 0, "s3": 1}


@pytest.mark.parametrize("seed", range(2))
def test_the_stored_recipes_group_as_version_5_did_after_every_change(tmp_path, seed):
    with Store.open(str(tmp_path / "s.sqlite")) as store:
        fill(store, random.Random(seed), 100)
        change_runs(store, random.Random(seed))
        old, new = partitions(store)
        assert old == new and len(new) > 10
        check_recipes_against_runs(store)


def check_upgrade_keeps_table_s5(url: str, rng: random.Random, version: int = 5) -> None:
    column, table = LACKS[version]
    with Store.open(url) as store:
        fill(store, rng, 100)
        change_runs(store, rng)
        before = table_s5_texts(store)
    as_version(url, version)
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM sslbench_meta WHERE key = "
                                 f"'schema_version' AND value = '{version}'")).scalar() == 1
        assert column not in {c["name"] for c in inspect(conn).get_columns("runs")}
        assert not inspect(conn).has_table(table)
    engine.dispose()
    with Store.open(url) as store:
        assert store.upgraded_from == version
        with store._session() as session:
            assert session.query(Run).filter(getattr(Run, column).is_(None)).count() == 0
        assert table_s5_texts(store) == before
        old, new = partitions(store)
        assert old == new
        check_recipes_against_runs(store)
        # A new seed of an upgraded run joins its recipe, whichever job runs it.
        run = store.find_runs(kind="pretrain", status="completed")[0]
        store.upsert_runs([NewRun(run_id="after", kind="pretrain", command=[], env={},
                                  config={**run.config, "seed": 99},
                                  tags=[*run.tags[::-1], "slurm:77_1"])])
        with store._session() as session:
            after, before_run = session.get(Run, "after"), session.get(Run, run.run_id)
            assert (after.recipe_id, after.tagset_id) == (before_run.recipe_id,
                                                          before_run.tagset_id)


@pytest.mark.parametrize(("version", "seed"), [(5, 0), (5, 1), (7, 2)])
def test_an_older_store_upgrades_to_the_same_table_s5(tmp_path, version, seed):
    check_upgrade_keeps_table_s5(f"sqlite:///{tmp_path / 's.sqlite'}", random.Random(seed),
                                 version)


def check_runs_without_recipe_get_theirs(store: Store, version: int = 5) -> None:
    """An sslbench of schema ``version`` still running when the store was upgraded creates runs
    without a recipe (5) or tag set (7), whose columns it does not know: the next report gives
    them theirs, never a wrong number; the query alone (a store that cannot be written)
    refuses in one line."""
    column, table = LACKS[version]
    what = {5: "recipe", 7: "tag set"}[version]
    fill(store, random.Random(version), 40)
    change_runs(store, random.Random(version))
    before = table_s5_texts(store)
    with store._session(write=True) as session:
        session.execute(text(f"UPDATE runs SET {column} = NULL WHERE run_id IN (SELECT run_id "
                             "FROM runs WHERE status = 'completed' ORDER BY run_id LIMIT 5)"))
        session.execute(text(f"DELETE FROM {table} WHERE {column} NOT IN (SELECT {column} "
                             f"FROM runs WHERE {column} IS NOT NULL)"))
    with store._session() as session:
        with pytest.raises(StoreError, match=f"some runs have no {what} yet"):
            queries.recipe_runs(session, params=(), summaries=("online_top1",))
    assert table_s5_texts(store) == before
    old, new = partitions(store)
    assert old == new
    with store._engine.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM runs WHERE {column} IS NULL")
                            ).scalar() == 0


@pytest.mark.parametrize("version", LACKS)
def test_runs_an_older_sslbench_creates_after_the_upgrade_get_their_recipe(tmp_path, version):
    with Store.open(str(tmp_path / "s.sqlite")) as store:
        check_runs_without_recipe_get_theirs(store, version)


def test_eval_pending_finds_a_run_s_children_by_their_parent(tmp_path):
    """With ix_runs_kind_status holding recipes and tags, SQLite must still look a run's
    evaluations up by parent (not read every completed evaluation for each run)."""
    from sqlalchemy import event

    with Store.open(str(tmp_path / "s.sqlite")) as store:
        fill(store, random.Random(0), 10)
        with store._session() as session:
            statements: list[tuple] = []
            event.listen(session.connection(), "before_cursor_execute",
                         lambda conn, cursor, sql, params, *_: statements.append((sql, params)))
            queries.pending_evaluations(session, ["linear", "knn"])
            sql, params = statements[-1]
            plan = [row[3] for row in session.connection().exec_driver_sql(
                f"EXPLAIN QUERY PLAN {sql}", params)]
    children = [step for step in plan if step.startswith("SEARCH runs_1")]
    assert children and all("ix_runs_parent (parent_id=?" in step for step in children), plan
