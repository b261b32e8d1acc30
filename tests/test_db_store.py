"""The results store: every param and metric reads back, replays overwrite, summaries match an
independent pandas reference, the status lifecycle keeps its timestamps."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sslbench.db import RUN_STATUSES, SCHEMA_VERSION, Store, metric_goal, resolve_url
from sslbench.db.models import RUN_KINDS, TERMINAL_STATUSES, RunKind, RunStatus
from sslbench.errors import ConfigError, UnknownRunError

CONFIG = {
    "method": "vicreg", "dataset": "shapes", "backbone": "small", "projector": "2048-d",
    "dim": 128, "epochs": 10, "batch_size": 256, "lr": 0.3, "weight_decay": 1e-6, "seed": 3,
    "cifar_stem": True, "data_root": "", "widths": [512, 512], "source_run": None,
    "loss": {"sim_coeff": 25.0, "std_coeff": 25, "cov_coeff": 1.0, "nested": {"eps": 1e-4}},
    "empty": {},
}
ENV = {"python": "3.11.7", "torch": "2.4.0", "cuda": None, "git_commit": "abc", "git_dirty": True,
       "host": "node1", "devices": ["cpu"]}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'db' / 's.sqlite'}") as opened:
        yield opened


def _new_run(store: Store, run_id: str = "a1b2c3d4e5f6", **kw) -> str:
    args = {"kind": "pretrain", "config": CONFIG, "command": ["sslbench", "train"], "env": ENV}
    store.upsert_run(run_id=run_id, **{**args, **kw})
    return run_id


def test_every_param_reads_back_with_its_type(store):
    record, created = store.upsert_run(run_id="a1b2c3d4e5f6", kind="pretrain", config=CONFIG,
                                       command=["sslbench", "train", "--dim", "128"], env=ENV,
                                       tags=["paper"])
    assert created and record.status == "queued"
    assert record.config == CONFIG and record.env == ENV and record.tags == ["paper"]
    assert record.command == ["sslbench", "train", "--dim", "128"]
    assert (record.method, record.dataset) == ("vicreg", "shapes")  # taken from the config
    params = store.params("a1b2c3d4e5f6")
    expected = {
        "method": "vicreg", "dataset": "shapes", "backbone": "small", "projector": "2048-d",
        "dim": 128, "epochs": 10, "batch_size": 256, "lr": 0.3, "weight_decay": 1e-6, "seed": 3,
        "cifar_stem": True, "data_root": "", "widths": [512, 512], "source_run": None,
        "loss.sim_coeff": 25.0, "loss.std_coeff": 25, "loss.cov_coeff": 1.0,
        "loss.nested.eps": 1e-4, "empty": {},
    }
    assert params == expected
    for key, value in expected.items():  # types survive, not just equality (True == 1)
        assert type(params[key]) is type(value), key


def test_numeric_params_are_queryable_as_numbers_in_sql(store, tmp_path):
    for i, (lr, dim, flag) in enumerate([(0.03, 64, False), (0.3, 128, True), (3.0, 2048, True)]):
        _new_run(store, f"run{i:09d}", config={**CONFIG, "lr": lr, "dim": dim, "cifar_stem": flag})
    con = sqlite3.connect(tmp_path / "db" / "s.sqlite")
    big_lr = {r[0] for r in con.execute(
        "SELECT run_id FROM params WHERE key = 'lr' AND value_num > 0.1")}
    assert big_lr == {"run000000001", "run000000002"}
    # a numeric comparison, not a text one: '2048' < '256' as text, 2048 > 256 as numbers
    wide = {r[0] for r in con.execute(
        "SELECT run_id FROM params WHERE key = 'dim' AND value_num >= 256")}
    assert wide == {"run000000002"}
    flagged = {r[0] for r in con.execute(
        "SELECT run_id FROM params WHERE key = 'cifar_stem' AND value_num = 1")}
    assert flagged == {"run000000001", "run000000002"}
    nested = con.execute("SELECT value_num FROM params WHERE key = 'loss.nested.eps'").fetchone()
    assert nested[0] == pytest.approx(1e-4)
    con.close()


def test_upsert_returns_the_existing_run_unchanged(store):
    _new_run(store)
    store.set_status("a1b2c3d4e5f6", "running")
    again, created = store.upsert_run(run_id="a1b2c3d4e5f6", kind="pretrain",
                                      config={**CONFIG, "data_root": "/elsewhere"},
                                      command=["other"], env={})
    assert not created
    assert again.status == "running" and again.config == CONFIG and again.command[0] == "sslbench"
    assert store.params("a1b2c3d4e5f6")["data_root"] == ""


def test_every_logged_metric_reads_back(store):
    run = _new_run(store)
    logged = {}
    for step in range(6):
        values = {"loss": 10.0 / (step + 1), "online_top1": 5.0 * step, "lr": 0.1 * step}
        store.log_metrics(run, step, values, epoch=step // 2)
        logged.update({(k, step): (v, step // 2) for k, v in values.items()})
    frame = store.metrics_frame(run)
    assert list(frame.columns) == ["run_id", "key", "step", "epoch", "value"]
    assert len(frame) == len(logged)
    for row in frame.itertuples():
        assert (row.value, row.epoch) == pytest.approx(logged[(row.key, row.step)])
    only = store.metrics_frame(run, "loss")
    assert set(only["key"]) == {"loss"} and list(only["step"]) == list(range(6))


def test_replay_overwrites_instead_of_duplicating(store, tmp_path):
    run = _new_run(store)
    for step in range(5):
        store.log_metrics(run, step, {"loss": float(10 - step)}, epoch=step)
    before = store.summary_stats(run)["loss"]
    assert before["final"] == 6.0 and before["best"] == 6.0 and before["count"] == 5
    # resume from a checkpoint of step 2 and replay steps 3 and 4 with other values
    store.log_metrics(run, 3, {"loss": 1.0})
    store.log_metrics(run, 4, {"loss": 2.5}, epoch=44)
    frame = store.metrics_frame(run, "loss")
    assert len(frame) == 5
    assert frame.set_index("step")["value"].to_dict() == {0: 10, 1: 9, 2: 8, 3: 1.0, 4: 2.5}
    assert frame.set_index("step")["epoch"].to_dict()[3] == 3  # a replay without epoch keeps it
    assert frame.set_index("step")["epoch"].to_dict()[4] == 44
    after = store.summary_stats(run)["loss"]
    assert after == {"final": 2.5, "final_step": 4, "best": 1.0, "best_step": 3, "min": 1.0,
                     "max": 10.0, "count": 5, "goal": "min"}
    con = sqlite3.connect(tmp_path / "db" / "s.sqlite")
    assert con.execute("SELECT count(*) FROM metrics").fetchone()[0] == 5
    assert con.execute("SELECT count(*) FROM summaries").fetchone()[0] == 1
    con.close()


def _reference_summary(writes: list[tuple[int, float]], goal: str) -> dict:
    """Independent reference: the last write of each step wins; pandas does the rest."""
    frame = pd.DataFrame(writes, columns=["step", "value"]).drop_duplicates("step", keep="last")
    frame = frame.sort_values("step")
    values = frame.dropna(subset=["value"])
    best_value = values["value"].max() if goal == "max" else values["value"].min()
    best_step = values.loc[values["value"] == best_value, "step"].min() if len(values) else None
    return {"final": frame["value"].iloc[-1], "final_step": int(frame["step"].iloc[-1]),
            "best": best_value, "best_step": None if best_step is None else int(best_step),
            "min": values["value"].min(), "max": values["value"].max(), "count": len(frame),
            "goal": goal}


_VALUES = st.one_of(st.floats(-1e6, 1e6, allow_nan=False).map(lambda v: round(v, 3)),
                   st.sampled_from([0.0, 1.0, 1.0, float("nan")]))  # ties and NaN


@settings(max_examples=40, deadline=None)
@given(key=st.sampled_from(["loss", "online_top1", "knn_top1/k=20", "rank"]),
       writes=st.lists(st.tuples(st.integers(0, 12), _VALUES), min_size=1, max_size=30))
def test_summaries_match_a_pandas_reference(key, writes):
    """Appends (incremental path) and replays of existing steps (recompute path) alike."""
    with Store.open("sqlite://") as store:
        _new_run(store)
        for step, value in writes:
            store.log_metrics("a1b2c3d4e5f6", step, {key: value, "other": 1.0})
        got = store.summary_stats("a1b2c3d4e5f6")[key]
    ref = _reference_summary(writes, metric_goal(key))
    assert got == pytest.approx(ref, nan_ok=True)


def test_nan_is_stored_and_ignored_by_best(store):
    run = _new_run(store)
    store.log_metrics(run, 0, {"loss": 3.0})
    store.log_metrics(run, 1, {"loss": float("nan")})
    stats = store.summary_stats(run)["loss"]
    assert math.isnan(stats["final"]) and stats["final_step"] == 1
    assert stats["best"] == 3.0 and stats["count"] == 2
    assert math.isnan(store.metrics_frame(run)["value"].iloc[1])
    json.dumps(store.get_run(run).to_dict(store.summary(run)), allow_nan=False)  # NaN -> null


def test_metric_goal():
    for key in ("online_top1", "linear_top5", "knn_top1/k=20", "val_acc", "effective_rank"):
        assert metric_goal(key) == "max", key
    for key in ("loss", "lr", "inv_loss", "step_time"):
        assert metric_goal(key) == "min", key


def test_status_lifecycle_timestamps(store):
    run = _new_run(store)
    record = store.get_run(run)
    assert record.status == "queued" and record.started_at is None and record.ended_at is None
    assert record.created_at.utcoffset() is not None
    assert record.created_at.utcoffset().total_seconds() == 0  # aware UTC
    store.set_status(run, "running")
    first = store.get_run(run)
    assert first.status == "running" and first.started_at is not None and first.ended_at is None
    assert first.attempts == 1 and first.pid is not None and first.heartbeat_at is not None
    store.heartbeat(run)
    assert store.get_run(run).heartbeat_at >= first.heartbeat_at
    store.set_status(run, "failed", error="Traceback ...\nRuntimeError: boom")
    failed = store.get_run(run)
    assert failed.ended_at >= failed.started_at and "boom" in failed.error
    store.set_status(run, "queued")  # re-queued by a scheduler
    assert store.get_run(run).ended_at is None
    store.set_status(run, "running")
    store.set_status(run, "completed")
    done = store.get_run(run)
    assert done.started_at == first.started_at  # set the first time only
    assert done.ended_at > first.started_at and done.error is None and done.attempts == 2
    assert done.duration_s is not None and done.duration_s >= 0
    attempts = store.attempts(run)
    assert [(a["attempt"], a["status"]) for a in attempts] == [(1, "failed"), (2, "completed")]
    assert "boom" in attempts[0]["error"]
    now = datetime.now(timezone.utc)
    assert abs((now - done.ended_at).total_seconds()) < 60
    with pytest.raises(ValueError, match="unknown run status 'done'"):
        store.set_status(run, "done")
    assert set(RUN_STATUSES) >= {"queued", "running", "completed", "failed", "killed",
                                 "interrupted"}


def test_an_unknown_kind_is_a_programming_error(store):
    # A caller's bug, not a user's: a ValueError (a traceback), never a one-line ConfigError.
    with pytest.raises(ValueError, match="unknown run kind 'train'"):
        _new_run(store, "kind00000001", kind="train")
    assert store.find_runs() == []
    # A kind typed by the user (a `runs list` filter) is still the user's error.
    with pytest.raises(ConfigError, match="unknown run kind 'train'"):
        store.find_runs(kind="train")


def test_statuses_and_kinds_are_enums_equal_to_their_stored_text(store):
    assert RUN_STATUSES == tuple(status.value for status in RunStatus)
    assert TERMINAL_STATUSES == ("completed", "failed", "killed", "interrupted", "pruned")
    assert RUN_KINDS == ("pretrain", "eval") == tuple(kind.value for kind in RunKind)
    assert [s.terminal for s in RunStatus] == [s in TERMINAL_STATUSES for s in RUN_STATUSES]
    # A member is its text wherever a string goes: formatting, JSON, hashing, comparison.
    failed = RunStatus.FAILED
    assert (failed == "failed", str(failed), f"{failed:>7}") == (True, "failed", " failed")
    assert json.dumps({"s": failed}) == '{"s": "failed"}' and {"failed": 1}[failed] == 1
    run = _new_run(store, kind=RunKind.PRETRAIN)
    store.set_status(run, RunStatus.RUNNING)
    assert store.get_run(run).status == RunStatus.RUNNING
    store.set_status(run, "completed")  # plain strings keep working
    record = store.get_run(run)
    assert (record.status, record.kind) == (RunStatus.COMPLETED, RunKind.PRETRAIN)
    assert type(record.status) is str  # stored and read back as plain text
    assert [r.run_id for r in store.find_runs(status=RunStatus.COMPLETED,
                                              kind=RunKind.PRETRAIN)] == [run]
    assert [a["status"] for a in store.attempts(run)] == ["completed"]


def test_unknown_run_ids_and_prefixes(store):
    _new_run(store, "abcd00000001")
    _new_run(store, "abcd00000002")
    _new_run(store, "ffee00000003")
    assert store.get_run("ffee").run_id == "ffee00000003"
    assert store.get_run("abcd00000002").run_id == "abcd00000002"
    with pytest.raises(UnknownRunError, match="matches several runs"):
        store.get_run("abcd")
    with pytest.raises(UnknownRunError, match="no run 'ffe'"):
        store.get_run("ffe")  # too short for a prefix
    for call in (lambda: store.get_run("feedbeefcafe"), lambda: store.params("feedbeefcafe"),
                 lambda: store.summary("feedbeefcafe"), lambda: store.artifacts("feedbeefcafe"),
                 lambda: store.set_status("feedbeefcafe", "running"),
                 lambda: store.heartbeat("feedbeefcafe"),
                 lambda: store.log_metrics("feedbeefcafe", 0, {"loss": 1.0}),
                 lambda: store.log_artifact("feedbeefcafe", "checkpoint", "/x.pt"),
                 lambda: _new_run(store, "new000000000", parent_id="feedbeefcafe")):
        with pytest.raises(UnknownRunError, match="feedbeefcafe") as info:
            call()
        assert "\n" not in str(info.value)
    assert len(store.find_runs()) == 3  # the run with the unknown parent was not created


def test_nothing_half_written_on_a_bad_metric(store):
    run = _new_run(store)
    with pytest.raises(ValueError, match="'acc' must be a number"):
        store.log_metrics(run, 0, {"loss": 1.0, "acc": "high"})
    assert store.metrics_frame(run).empty and store.summary(run) == {}


def test_artifacts_unique_per_path(store, tmp_path):
    run = _new_run(store)
    ckpt = tmp_path / "last.pt"
    ckpt.write_bytes(b"x" * 123)
    store.log_artifact(run, "checkpoint", str(ckpt))
    store.log_artifact(run, "checkpoint", str(ckpt), size=456, sha256="f" * 64)
    store.log_artifact(run, "backbone", str(tmp_path / "backbone.pt"), size=7)
    arts = store.artifacts(run)
    assert [(a["kind"], a["size"]) for a in arts] == [("checkpoint", 456), ("backbone", 7)]
    assert arts[0]["sha256"] == "f" * 64
    store.log_artifact(run, "checkpoint", str(tmp_path / "other.pt"))
    assert store.artifacts(run)[-1]["size"] is None  # missing file, no size given


def test_find_runs_frames_and_json(store):
    pre = _new_run(store, "pre000000001")
    store.upsert_run(run_id="ev0000000001", kind="eval", config={"protocol": "linear+knn",
                     "random_init": False, "source_run": pre, "method": "vicreg"},
                     command=[], env={}, parent_id=pre)
    store.set_status("ev0000000001", "completed")
    store.log_metrics("ev0000000001", 0, {"linear_top1": 61.5, "knn_top1": 58.0})
    store.log_metrics(pre, 0, {"online_top1": 40.0})
    store.log_metrics(pre, 1, {"online_top1": 45.0})
    assert [r.run_id for r in store.find_runs(kind="eval")] == ["ev0000000001"]
    assert [r.run_id for r in store.find_runs(parent_id=pre)] == ["ev0000000001"]
    assert [r.run_id for r in store.find_runs(status=["queued", "running"])] == [pre]
    with pytest.raises(ConfigError, match="unknown run kind 'train'"):
        store.find_runs(kind="train")
    frame = store.runs_frame(params=["dim", "lr"], summaries=["online_top1"])
    assert list(frame["run_id"]) == [pre, "ev0000000001"]
    assert frame.loc[0, "param.dim"] == 128 and frame.loc[0, "final.online_top1"] == 45.0
    assert frame.loc[0, "best.online_top1"] == 45.0 and math.isnan(frame.loc[1, "param.dim"])
    full = store.runs_frame(kind="eval")
    assert full.loc[0, "final.linear_top1"] == 61.5 and not full.loc[0, "param.random_init"]
    data = store.get_run("ev0000000001").to_dict(store.summary("ev0000000001"))
    for key in ("run_id", "status", "method", "dataset", "config", "summary"):
        assert key in data
    assert data["summary"] == {"linear_top1": 61.5, "knn_top1": 58.0}
    json.dumps(data)
    assert store.final_summaries([pre, "nope"]) == {pre: {"online_top1": 45.0}, "nope": {}}


def test_delete_run(store):
    pre = _new_run(store, "pre000000001")
    store.upsert_run(run_id="ev0000000001", kind="eval", config={}, command=[], env={},
                     parent_id=pre)
    store.log_metrics(pre, 0, {"loss": 1.0})
    store.log_artifact(pre, "checkpoint", "/nowhere.pt")
    store.delete_run(pre)
    with pytest.raises(UnknownRunError):
        store.get_run(pre)
    assert store.get_run("ev0000000001").parent_id is None
    assert store.final_summaries([pre]) == {pre: {}}


def test_resolve_url_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("SSLBENCH_HOME", str(tmp_path))
    monkeypatch.delenv("SSLBENCH_DB", raising=False)
    assert resolve_url() == f"sqlite:///{tmp_path / 'db' / 'sslbench.sqlite'}"
    monkeypatch.setenv("SSLBENCH_DB", "sqlite:////from/env.sqlite")
    assert resolve_url() == "sqlite:////from/env.sqlite"
    assert resolve_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert resolve_url(str(tmp_path / "plain.sqlite")) == f"sqlite:///{tmp_path / 'plain.sqlite'}"


def test_default_store_lands_in_sslbench_home(monkeypatch, tmp_path):
    monkeypatch.setenv("SSLBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SSLBENCH_DB", raising=False)
    with Store.open() as store:
        _new_run(store)
    db = tmp_path / "home" / "db" / "sslbench.sqlite"
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    meta = dict(con.execute("SELECT key, value FROM sslbench_meta"))
    assert meta["app"] == "sslbench" and int(meta["schema_version"]) == SCHEMA_VERSION
    con.close()


def test_connection_pragmas(store):
    from sqlalchemy import text

    with store._session() as session:
        pragmas = {name: session.execute(text(f"PRAGMA {name}")).scalar()
                   for name in ("busy_timeout", "journal_mode", "synchronous", "foreign_keys")}
    assert pragmas == {"busy_timeout": 30000, "journal_mode": "wal", "synchronous": 1,
                       "foreign_keys": 1}


def test_schema_and_upserts_compile_for_postgresql():
    """No PostgreSQL server here: at least the DDL and the ON CONFLICT upserts must compile
    for its dialect (the branch `Store._upsert` takes there)."""
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateIndex, CreateTable

    from sslbench.db.models import Base, Metric

    dialect = postgresql.dialect()
    ddl = [str(CreateTable(t).compile(dialect=dialect)) for t in Base.metadata.sorted_tables]
    ddl += [str(CreateIndex(i).compile(dialect=dialect))
            for t in Base.metadata.sorted_tables for i in t.indexes]
    text = "\n".join(ddl)
    assert "TIMESTAMP WITH TIME ZONE" in text and "step BIGINT" in text
    stmt = postgresql.insert(Metric)
    upsert = stmt.on_conflict_do_update(index_elements=["run_id", "key", "step"],
                                        set_={"value": stmt.excluded.value})
    assert "ON CONFLICT (run_id, key, step) DO UPDATE SET value = excluded.value" in str(
        upsert.compile(dialect=dialect))


def test_adopt_numerics_first_writer_wins(store):
    run_id = _new_run(store)
    assert store.get_run(run_id).numerics == {}  # not started yet
    first = {"intra_op_threads": 2, "cuda": {"tf32": False, "deterministic": True}}
    assert store.adopt_numerics(run_id, first) == first
    assert store.adopt_numerics(run_id, {"intra_op_threads": 8}) == first  # a resume: unchanged
    record = store.get_run(run_id)
    assert record.numerics == first and record.to_dict()["numerics"] == first
    with pytest.raises(UnknownRunError):
        store.adopt_numerics("nosuchrun000", first)
