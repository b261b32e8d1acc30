"""Logging that never stalls a step (``sslbench.db.buffered``), against real SQLite stores.

A store outage here is the real thing for SQLite: another connection holding the store's write
lock, so every write of the run fails with "database is locked" until it lets go. Summaries are
checked against a reference written here from the stored history, on random metric streams
(hypothesis): appends, replays, back-filled steps, NaN, truncations, any batch split.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sslbench.db import Store
from sslbench.db.buffered import BufferedWriter, Limits, StoreUnavailableError
from sslbench.db.ingest import Point
from sslbench.db.models import utcnow
from tests.conftest import TINY_SIMCLR, copy_home


@pytest.fixture
def store(tmp_path: Path):
    with Store.open(f"sqlite:///{tmp_path / 'store.sqlite'}") as opened:
        yield opened


def _run(store: Store, run_id: str | None = None) -> str:
    run_id = run_id or uuid.uuid4().hex[:12]
    store.upsert_run(run_id=run_id, kind="pretrain", config={"method": "simclr"}, command=[],
                     env={})
    return run_id


@contextlib.contextmanager
def _locked(path: Path):
    """Hold the SQLite store's write lock for the block: an outage for every other writer."""
    con = sqlite3.connect(path, timeout=10, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        con.rollback()
        con.close()


def _store_path(store: Store) -> Path:
    return Path(store.url.removeprefix("sqlite:///"))


# ------------------------------------------------------------------------ the writer itself


def test_points_are_written_by_count_and_by_time_off_the_callers_thread(store):
    run_id = _run(store)
    with BufferedWriter(store, Limits(batch_points=50, interval_s=0.3)) as writer:
        writer.log_metrics(run_id, 0, {"loss": 2.0, "lr": 0.1}, epoch=1)
        assert store.metrics_frame(run_id).empty  # buffered: the call did not write
        deadline = time.monotonic() + 10
        while len(store.metrics_frame(run_id)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the interval passes: written without a flush
        assert len(store.metrics_frame(run_id)) == 2
        with _locked(_store_path(store)):  # nothing can be written until 50 points wait
            for step in range(1, 26):
                writer.log_metrics(run_id, step, {"loss": 1.0 / step, "lr": 0.1})
        writer.flush()
        assert len(store.metrics_frame(run_id)) == 52
    stats = store.summary_stats(run_id)["loss"]
    assert (stats["final"], stats["final_step"], stats["count"]) == (1.0 / 25, 25, 26)


def test_a_metric_that_is_not_a_number_fails_at_the_call(store):
    run_id = _run(store)
    with BufferedWriter(store) as writer:
        with pytest.raises(ValueError, match="'loss' must be a number"):
            writer.log_metrics(run_id, 0, {"loss": "high"})
        assert writer.pending_points == 0


def test_an_outage_shorter_than_the_bound_loses_nothing(store):
    run_id = _run(store)
    limits = Limits(batch_points=10, interval_s=0.05, outage_s=60, lock_wait_s=0.2)
    with BufferedWriter(store, limits) as writer:
        with _locked(_store_path(store)):
            for step in range(100):
                writer.log_metrics(run_id, step, {"loss": float(100 - step)})
            time.sleep(0.6)  # the writer's first attempts fail (0.2 s lock wait) and back off
            assert writer.pending_points == 100 and store.metrics_frame(run_id).empty
        writer.log_artifact(run_id, "checkpoint", "/runs/x/checkpoint.pt", size=3)
        writer.flush()
    assert list(store.metrics_frame(run_id)["step"]) == list(range(100))
    assert store.summary_stats(run_id)["loss"]["best"] == 1.0
    assert store.artifacts(run_id)[0]["size"] == 3


def test_an_outage_past_the_bound_is_one_line_and_nothing_is_written(store):
    run_id = _run(store)
    limits = Limits(batch_points=10, interval_s=0.05, outage_s=0.5, max_points=40,
                    lock_wait_s=0.2)
    with _locked(_store_path(store)), BufferedWriter(store, limits) as writer:
        for step in range(30):
            writer.log_metrics(run_id, step, {"loss": 1.0})
        with pytest.raises(StoreUnavailableError) as info:
            writer.flush()
        message = str(info.value)
        assert "\n" not in message and "could not be written" in message, message
        assert "database is locked" in message and "30 metric points" in message, message
        assert "last checkpoint intact" in message, message
        with pytest.raises(StoreUnavailableError):  # the buffer's bound: 40 points
            writer.log_metrics(run_id, 30, {"loss": 1.0, "lr": 1.0, **{f"k{i}": 1 for i in
                                                                       range(9)}})
        writer.close(flush=False)
    assert store.metrics_frame(run_id).empty


# ----------------------------------------------------------- summaries kept incrementally

# One random stream: batches of (step, value) for a few keys; None is NaN; a batch may first
# truncate the history past some step (a resume).
_VALUE = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False, width=32),
                   st.sampled_from([0.0, 1.0, -1.0]))
_POINT = st.tuples(st.sampled_from(["loss", "online_top1", "lr"]), st.integers(0, 40), _VALUE)
_BATCH = st.tuples(st.one_of(st.none(), st.integers(-1, 40)), st.lists(_POINT, max_size=12))


def _reference(history: dict[tuple[str, int], float | None]) -> dict[str, dict]:
    """Summaries recomputed from the whole history, written independently of the store's."""
    from sslbench.db.values import metric_goal

    out = {}
    for key in sorted({k for k, _ in history}):
        steps = sorted(s for k, s in history if k == key)
        values = [(s, history[(key, s)]) for s in steps]
        present = [(s, v) for s, v in values if v is not None]
        goal = metric_goal(key)
        best = None
        for s, v in present:  # ties: the earliest step
            if best is None or (v > best[1] if goal == "max" else v < best[1]):
                best = (s, v)
        nan = math.nan
        out[key] = {"final": nan if values[-1][1] is None else values[-1][1],
                    "final_step": steps[-1], "count": len(values), "goal": goal,
                    "best": nan if best is None else best[1],
                    "best_step": None if best is None else best[0],
                    "min": min((v for _, v in present), default=nan),
                    "max": max((v for _, v in present), default=nan)}
    return out


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
        or x == y for x, y in ((a[k], b[k]) for k in a))


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("summaries") / "store.sqlite"
    with Store.open(f"sqlite:///{path}") as opened:
        yield opened


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(_BATCH, min_size=1, max_size=8))
def test_summaries_equal_summaries_recomputed_from_the_history(shared_store, batches):
    store = shared_store
    run_id = _run(store)
    history: dict[tuple[str, int], float | None] = {}
    for truncate, points in batches:
        if truncate is not None:
            store.truncate_metrics(run_id, truncate)
            history = {k: v for k, v in history.items() if k[1] <= truncate}
        now = utcnow()
        store.write_batch([Point(run_id, key, step, value, None, now)
                           for key, step, value in points])
        history.update({(key, step): value for key, step, value in points})
        stored = store.summary_stats(run_id)
        expected = _reference(history)
        assert stored.keys() == expected.keys()
        for key in expected:
            assert _same(stored[key], expected[key]), (key, stored[key], expected[key])
    frame = store.metrics_frame(run_id)
    assert len(frame) == len(history) and not frame.duplicated(["key", "step"]).any()


# --------------------------------------------------- a training run through a store outage


def _lock_after_first_checkpoint(monkeypatch, home: Path, release_after: float | None):
    """From the moment the run's first checkpoint is on disk, hold the store's write lock (for
    ``release_after`` seconds, or until the returned event is set)."""
    from sslbench import checkpoint

    real_save, done = checkpoint.save, threading.Event()
    locked = threading.Event()

    def hold() -> None:
        with _locked(home / "db" / "sslbench.sqlite"):
            locked.set()
            done.wait(release_after)

    def save(payload, path, **kwargs):
        size = real_save(payload, path, **kwargs)
        if Path(path).name == checkpoint.CHECKPOINT and not locked.is_set():
            threading.Thread(target=hold, daemon=True).start()
            locked.wait(10)
        return size

    monkeypatch.setattr(checkpoint, "save", save)
    return done


def _metrics(home: Path, run_id: str) -> dict:
    with Store.open(f"sqlite:///{home / 'db' / 'sslbench.sqlite'}", create=False) as store:
        frame = store.metrics_frame(run_id)
    assert not frame.duplicated(["key", "step"]).any()
    return {(r.key, r.step): r.value for r in frame.itertuples() if r.key != "images_per_s"}


def _assert_as_uninterrupted(home: Path, reference: Path, run_id: str, scratch: Path) -> None:
    """The run's metrics are the uninterrupted run's (``reference``, a shared home: read from a
    copy in ``scratch``), wall-clock speed aside."""
    ours, theirs = _metrics(home, run_id), _metrics(copy_home(reference, scratch), run_id)
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


@pytest.mark.slow
def test_a_run_through_a_short_outage_completes_with_every_point(tiny_simclr, home, cli,
                                                                  monkeypatch, tmp_path_factory):
    _lock_after_first_checkpoint(monkeypatch, home, release_after=3.0)
    result = cli(*TINY_SIMCLR, "--format", "json")
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)
    assert run["status"] == "completed"
    _assert_as_uninterrupted(home, tiny_simclr, run["run_id"], tmp_path_factory.mktemp("ref"))


@pytest.mark.slow
def test_an_outage_past_the_bound_stops_the_run_in_one_line_checkpoint_intact(
        tiny_simclr, home, cli, monkeypatch, tmp_path_factory):
    monkeypatch.setenv("SSLBENCH_STORE_OUTAGE_S", "1")
    release = _lock_after_first_checkpoint(monkeypatch, home, release_after=None)
    result = cli(*TINY_SIMCLR, "--format", "json")
    release.set()
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "could not be written" in lines[0] and "checkpoint intact" in lines[0], lines
    (run_dir,) = (home / "runs").iterdir()
    assert not (run_dir / "backbone.pt").exists()
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1  # the first epoch's, never overwritten by a later one
    monkeypatch.delenv("SSLBENCH_STORE_OUTAGE_S")
    resumed = cli(*TINY_SIMCLR, "--format", "json")  # the store is back: the same command
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["status"] == "completed"
    _assert_as_uninterrupted(home, tiny_simclr, run_dir.name, tmp_path_factory.mktemp("ref"))
