"""Several processes on one SQLite store: schema created once, no lost rows, no "database is
locked" (ANCHORS.md §2, items 1 and 2)."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import traceback
from pathlib import Path

import pytest

N_PROCS = 8
STEPS = 15


def _context() -> mp.context.BaseContext:
    # fork: ~2 s instead of ~15 s with spawn/forkserver (8 fresh interpreters importing
    # SQLAlchemy and pandas on 2 cores). Safe here: the children open their own Store after the
    # fork and touch nothing else the parent owns (no torch, no inherited connections).
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


def _open_and_log(url: str, index: int, barrier, results) -> None:
    """Child: wait for all, open (creating the schema), then log into its own and a shared run."""
    try:
        from sslbench.db import Store

        barrier.wait(timeout=60)
        with Store.open(url) as store:
            own = f"proc{index:08d}"
            store.upsert_run(run_id=own, kind="pretrain", config={"seed": index, "dim": 64},
                             command=["test"], env={})
            store.upsert_run(run_id="shared000000", kind="pretrain", config={"shared": True},
                             command=["test"], env={})
            store.set_status(own, "running")
            for step in range(STEPS):
                store.log_metrics(own, step, {"loss": 1.0 / (step + 1), "online_top1": step})
                store.log_metrics("shared000000", step, {f"p{index}": float(index * step)})
                store.heartbeat(own)
            store.set_status(own, "completed")
        results.put((index, None))
    except BaseException:  # report everything to the parent, which fails the test
        results.put((index, traceback.format_exc()))


def _run_children(url: str) -> list[tuple[int, str | None]]:
    ctx = _context()
    barrier, results = ctx.Barrier(N_PROCS), ctx.Queue()
    procs = [ctx.Process(target=_open_and_log, args=(url, i, barrier, results))
             for i in range(N_PROCS)]
    for proc in procs:
        proc.start()
    out = [results.get(timeout=240) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    return out


def test_processes_started_together_create_one_schema_and_lose_no_rows(tmp_path: Path):
    path = tmp_path / "fresh" / "store.sqlite"  # neither file nor folder exists yet
    outcomes = _run_children(f"sqlite:///{path}")
    errors = [err for _, err in outcomes if err]
    assert not errors, errors[0]
    con = sqlite3.connect(path)
    try:
        meta = con.execute("SELECT key, value FROM sslbench_meta").fetchall()
        assert sorted(k for k, _ in meta) == ["app", "created_at", "schema_version"]  # once
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == N_PROCS + 1
        per_run = dict(con.execute("SELECT run_id, count(*) FROM metrics GROUP BY run_id"))
        assert per_run["shared000000"] == N_PROCS * STEPS
        assert all(per_run[f"proc{i:08d}"] == 2 * STEPS for i in range(N_PROCS))
        finals = dict(con.execute(
            "SELECT key, final FROM summaries WHERE run_id = 'shared000000'"))
        assert finals == {f"p{i}": float(i * (STEPS - 1)) for i in range(N_PROCS)}
        statuses = {r[0] for r in con.execute(
            "SELECT status FROM runs WHERE run_id LIKE 'proc%'")}
        assert statuses == {"completed"}
    finally:
        con.close()


@pytest.mark.parametrize("n_openers", [6])
def test_concurrent_opening_of_an_existing_store(tmp_path: Path, n_openers: int):
    """Re-opening an existing store from many processes at once is also safe."""
    from sslbench.db import Store

    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    Store.open(url).close()
    ctx = _context()
    with ctx.Pool(n_openers) as pool:
        ids = pool.map(_open_only, [url] * n_openers * 2)
    assert len(set(ids)) == 1


def _open_only(url: str) -> str:
    from sslbench.db import Store

    with Store.open(url) as store:
        return store.url
