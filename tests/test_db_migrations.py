"""Older stores are upgraded in place, newer ones refused: against real store files.

``tests/fixtures/store_v<N>.sqlite`` stand for the stores users have: versions 1 and 2 built
from those versions' own models, the current one written through today's Store (see
``tests/fixtures/make_stores.py``, which also says when to regenerate them). A schema change
without its migration, or without a new current fixture, fails here.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sqlite3
import traceback
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from sslbench.db import SCHEMA_VERSION, Store, migrations
from sslbench.db.migrations import VERSION_TABLE
from sslbench.db.models import Base
from sslbench.db.values import recipe, tagset, to_json
from sslbench.errors import StoreError
from tests.conftest import race, run_cli
from tests.fixtures.make_stores import RUN_IDS as FIXTURE_RUN_IDS  # in every fixture

FIXTURES = Path(__file__).parent / "fixtures"
OLD_VERSIONS = range(1, SCHEMA_VERSION)


def fixture_copy(version: int, folder: Path) -> Path:
    path = folder / "store.sqlite"
    shutil.copyfile(FIXTURES / f"store_v{version}.sqlite", path)
    return path


def store_contents(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row of every sslbench table, in primary-key order (Alembic's tables left out)."""
    with contextlib.closing(sqlite3.connect(path)) as con:
        con.row_factory = sqlite3.Row
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                            "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        out = {}
        for table in (t for t in tables if t not in ("alembic_version", VERSION_TABLE)):
            info = con.execute(f"PRAGMA table_info({table})").fetchall()
            keys = ", ".join(r["name"] for r in sorted(info, key=lambda r: r["pk"]) if r["pk"])
            out[table] = [dict(r) for r in con.execute(f"SELECT * FROM {table} ORDER BY {keys}")]
        return out


def schema_version_of(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as con:
        return con.execute("SELECT value FROM sslbench_meta "
                           "WHERE key = 'schema_version'").fetchone()[0]


def migrated_schema_diff(conn: Connection) -> list[Any]:
    """What Alembic's autogenerate finds between the database and today's models."""
    context = MigrationContext.configure(conn, opts={"compare_type": True,
                                                     "version_table": VERSION_TABLE})
    return compare_metadata(context, Base.metadata)


def _backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".bak-*"))


# ---------------------------------------------------------------- the chain of revisions


def test_revisions_are_one_per_schema_version():
    assert migrations.head_version() == SCHEMA_VERSION, (
        "SCHEMA_VERSION and the newest migration disagree: a schema change needs both")
    files = sorted(p.name for p in (migrations.SCRIPT_LOCATION / "versions").glob("0*.py"))
    assert [f[:4] for f in files] == [migrations.revision_of(v)
                                      for v in range(1, SCHEMA_VERSION + 1)]


def test_revisions_from_nothing_build_the_models_schema_and_go_back(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'chain.sqlite'}")
    with engine.begin() as conn:
        config = migrations.alembic_config(conn)
        command.upgrade(config, "head")
        assert migrated_schema_diff(conn) == []
        command.downgrade(config, "base")
        command.upgrade(config, "head")
        assert migrated_schema_diff(conn) == []
    engine.dispose()


# --------------------------------------------------------------- upgrading the fixtures


@pytest.mark.parametrize("version", OLD_VERSIONS)
def test_old_store_is_upgraded_in_place_with_every_row(tmp_path, version):
    path = fixture_copy(version, tmp_path)
    before = store_contents(path)
    with Store.open(str(path)) as store:
        assert store.upgraded_from == version
        assert store.backup_path is not None and store.backup_path.parent == tmp_path
    after = store_contents(path)
    for table, rows in before.items():
        assert rows, f"the fixture's {table} is empty: it would prove nothing"
        if table == "sslbench_meta":  # only the version changes
            rows = [{**r, "value": str(SCHEMA_VERSION)} if r["key"] == "schema_version" else r
                    for r in rows]
        old_columns = set(rows[0]) if rows else set()
        assert [{k: r[k] for k in old_columns} for r in after[table]] == rows, table
        added = {k for r in after[table] for k in r} - old_columns
        # from the stored config and tags
        filled = {"recipe_id", "tagset_id"} if table == "runs" else set()
        assert all(r[k] is None for r in after[table] for k in added - filled), table
    # Every run names its recipe: the one of its config without the seed, method and dataset;
    # and its tag set: its tags but the Slurm jobs'.
    recipes = {r["recipe_id"]: r for r in after["recipes"]}
    tagsets = {r["tagset_id"]: r for r in after["tagsets"]}
    for run in after["runs"]:
        config = json.loads(run["config_json"])
        key, text = recipe(config, run["method"], run["dataset"])
        assert recipes[run["recipe_id"]]["key"] == key
        assert json.loads(recipes[run["recipe_id"]]["config_json"]) == {
            k: v for k, v in config.items() if k != "seed"} == json.loads(text)
        assert (tagsets[run["tagset_id"]]["key"], tagsets[run["tagset_id"]]["tags_json"]) == (
            tagset(json.loads(run["tags_json"])))
    # The backup is the store as it was: a valid store of the old version.
    (backup,) = _backups(path)
    assert backup == store.backup_path
    assert re.fullmatch(rf"store\.sqlite\.bak-v{version}-\d{{8}}T\d{{6}}Z", backup.name)
    assert store_contents(backup) == before and schema_version_of(backup) == str(version)
    with contextlib.closing(sqlite3.connect(backup)) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.parametrize("version", OLD_VERSIONS)
def test_upgraded_store_reads_and_writes(tmp_path, version):
    path = fixture_copy(version, tmp_path)
    with Store.open(str(path)) as store:
        first, child, _ = FIXTURE_RUN_IDS
        assert [r.run_id for r in store.find_runs()] == list(FIXTURE_RUN_IDS)
        assert store.get_run(child).parent_id == first and store.get_run(child).numerics == {}
        assert store.params(first)["loss.temperature"] == 0.1
        assert store.summary_stats(first)["online_top1"]["best"] == 31.0
        assert len(store.artifacts(first)) == 2 and len(store.attempts(child)) == 2
        store.log_metrics(first, 100, {"loss": 0.5})  # an old run takes new rows
        assert store.summary(first)["loss"] == 0.5
        new, created = store.upsert_run(run_id="after-upgrade-01", kind="pretrain",
                                        config={"method": "byol", "dim": 8}, command=[], env={})
        assert created
        store.set_status(new.run_id, "running")
        assert store.adopt_numerics(new.run_id, {"threads": 1}) == {"threads": 1}
        store.log_metrics(new.run_id, 0, {"loss": 2.0}, epoch=0)
        store.set_status(new.run_id, "completed")
        record = store.get_run(new.run_id)
        assert record.status == "completed" and record.attempts == 1
        assert record.numerics == {"threads": 1} == record.to_dict()["numerics"]
    with Store.open(str(path)) as again:
        assert again.upgraded_from is None  # once only


def test_migrated_schema_is_the_models_schema(tmp_path):
    """A models change without its migration fails here."""
    path = fixture_copy(1, tmp_path)
    Store.open(str(path)).close()
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        assert migrated_schema_diff(conn) == []
    engine.dispose()


def test_current_fixture_opens_without_upgrade(tmp_path):
    """Fails when SCHEMA_VERSION changes without a new fixture: run make_stores.py."""
    fixture = FIXTURES / f"store_v{SCHEMA_VERSION}.sqlite"
    assert fixture.is_file(), f"no {fixture.name}: run python tests/fixtures/make_stores.py"
    path = fixture_copy(SCHEMA_VERSION, tmp_path)
    with Store.open(str(path), create=False) as store:
        assert store.upgraded_from is None and store.backup_path is None
        runs = store.find_runs()
        assert [r.status for r in runs] == ["completed", "failed", "running"]
        assert runs[0].numerics == {"intra_op_threads": 1, "tf32": False}
    assert _backups(path) == [] and schema_version_of(path) == str(SCHEMA_VERSION)


# -------------------------------------------------------------------- refusals, races


def test_newer_store_is_refused_in_one_line_and_left_untouched(home):
    path = home / "new.sqlite"
    Store.open(str(path)).close()
    with contextlib.closing(sqlite3.connect(path)) as con, con:
        con.execute("UPDATE sslbench_meta SET value = '99' WHERE key = 'schema_version'")
    before = path.read_bytes()
    out = run_cli(["--db", path, "runs", "list"], home, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "schema version 99" in lines[0] and "pip install -U sslbench" in lines[0], lines
    assert path.read_bytes() == before and _backups(path) == []


@pytest.mark.parametrize("url", ["postgresql://u@host:notaport/x",
                                 "postgresql://u:hunter2@host:notaport/x"])
def test_malformed_url_is_one_line(home, url):
    out = run_cli(["--db", url, "runs", "list"], home, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "host:notaport" in lines[0] and "postgresql+psycopg://" in lines[0], lines
    assert "hunter2" not in out.stderr


@pytest.mark.parametrize("url,needle", [("postgresql://u@h:99999/x", "invalid port 99999"),
                                        ("sqlite://somewhere/x.sqlite", "has no host")])
def test_other_malformed_urls(url, needle):
    with pytest.raises(StoreError) as info:
        Store.open(url)
    assert "\n" not in str(info.value) and needle in str(info.value)


def test_read_only_open_of_an_unwritable_old_store(tmp_path, monkeypatch):
    import os

    path = fixture_copy(1, tmp_path)
    before = store_contents(path)
    real_access = os.access
    unwritable = {path, tmp_path}
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: (
        False if mode == os.W_OK and Path(p) in unwritable else real_access(p, mode, **kw)))
    with pytest.raises(StoreError) as info:
        Store.open(str(path), create=False)
    message = str(info.value)
    assert "\n" not in message and "schema version 1" in message, message
    assert "not writable" in message and "copy the store" in message, message
    assert store_contents(path) == before and _backups(path) == []


def test_read_only_open_upgrades_a_writable_old_store(tmp_path):
    path = fixture_copy(2, tmp_path)
    with Store.open(str(path), create=False) as store:
        assert store.upgraded_from == 2
    assert schema_version_of(path) == str(SCHEMA_VERSION)


def _open_store(path: str, index: int, barrier, results) -> None:
    try:
        barrier.wait(timeout=60)
        with Store.open(path) as store:
            results.put((index, store.upgraded_from, None))
    except BaseException:
        results.put((index, None, traceback.format_exc()))


def test_two_processes_open_an_old_store_at_once(tmp_path):
    path = fixture_copy(1, tmp_path)
    outcomes = race(_open_store, 2, str(path))
    errors = [err for _, _, err in outcomes if err]
    assert not errors, errors[0]
    assert sorted(str(upgraded) for _, upgraded, _ in outcomes) == ["1", "None"]
    assert len(_backups(path)) == 1 and schema_version_of(path) == str(SCHEMA_VERSION)


def test_failed_upgrade_is_one_line_and_rolled_back(tmp_path):
    """A store whose meta claims an older version than its tables have (version 2: revision
    0003's ALTER adds a column the table already has, and fails): one line, nothing changed,
    the copy taken first kept."""
    path = tmp_path / "store.sqlite"
    Store.open(str(path)).close()
    with contextlib.closing(sqlite3.connect(path)) as con, con:
        con.execute("UPDATE sslbench_meta SET value = '2' WHERE key = 'schema_version'")
    before = store_contents(path)
    with pytest.raises(StoreError) as info:
        Store.open(str(path))
    message = str(info.value)
    assert "\n" not in message and "left as it was" in message, message
    assert store_contents(path) == before and len(_backups(path)) == 1


@pytest.mark.slow
def test_the_cli_says_when_it_upgraded_a_store(home):
    path = home / "old.sqlite"
    shutil.copyfile(FIXTURES / "store_v1.sqlite", path)
    result = run_cli(["--db", str(path), "runs", "list", "--format", "json"], home)
    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert re.fullmatch(rf"upgraded the store sqlite:///{re.escape(str(path))} from schema "
                        rf"version 1 to {SCHEMA_VERSION}; the old store is backed up at "
                        rf"{re.escape(str(path))}\.bak-v1-\d{{8}}T\d{{6}}Z", line), line
    assert {run["run_id"] for run in json.loads(result.stdout)} >= set(FIXTURE_RUN_IDS)
    again = run_cli(["--db", str(path), "runs", "list", "--format", "json"], home)
    assert again.returncode == 0 and again.stderr == ""  # once only


def _revision(name: str) -> Any:
    """The module of a migration (``0006_recipes``), loaded from its file."""
    import importlib.util

    path = migrations.SCRIPT_LOCATION / "versions" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"revision_{name}", path)
    assert spec is not None and spec.loader is not None
    revision = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(revision)
    return revision


def test_the_upgrade_keys_recipes_as_creating_a_run_does():
    """Version 6's upgrade computes the recipes of the stored runs with a frozen copy of
    sslbench.db.values.recipe, from the config read back from the store: the two agree, or a
    run created after the upgrade would not join its recipe's older runs."""
    from pathlib import PurePath

    revision = _revision("0006_recipes")
    configs = [{}, {"seed": 1}, {"method": "simclr", "lr": 0.3, "seed": 3, "dim": 8192.0},
               {"loss": {"temperature": 0.1, "seed": 2}, "crops": (32, 16), "tags": {"b", "a"},
                "path": PurePath("/data"), "nan": float("nan"), "none": None, "seed": {"x": 1}},
               {"b": 1, "a": [1, 2.5, "x"], "e": {}, "n": 10**30}]
    for config in configs:
        for method, dataset in ((None, None), ("simclr", "cifar10")):
            stored = json.loads(to_json(config))
            assert revision.recipe(stored, method, dataset) == recipe(config, method, dataset)


def test_the_upgrade_keys_tag_sets_as_tagging_a_run_does():
    """Version 8's upgrade computes the tag sets of the stored runs with a frozen copy of
    sslbench.db.values.tagset: the two agree (a Slurm job's tags left out, the rest unique and
    sorted), or a run tagged after the upgrade would not join the older runs of its set."""
    revision = _revision("0008_tagsets")
    for tags in ([], ["sweep:a"], ["b", "a", "b"], ["slurm:12_3", "sweep:x", "slurm:9"],
                 ["slurm:1"], ["é", "slurmish", "Slurm:1", "x y"]):
        assert revision.tagset(json.loads(json.dumps(tags))) == tagset(tags)
    assert tagset(["slurm:1", "b", "a"]) == tagset(["a", "b", "a"]) != tagset(["a"])
