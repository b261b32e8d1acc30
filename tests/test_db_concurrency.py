"""Several processes on one SQLite store: schema created once, no lost rows, no "database is
locked" (the failure MLflow and Optuna users report, and a raced schema creation)."""

from __future__ import annotations

import sqlite3
import traceback
from pathlib import Path

import pytest

from tests.conftest import fork_context, race

N_PROCS = 8
STEPS = 15


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


@pytest.mark.slow
def test_processes_started_together_create_one_schema_and_lose_no_rows(tmp_path: Path):
    path = tmp_path / "fresh" / "store.sqlite"  # neither file nor folder exists yet
    outcomes = race(_open_and_log, N_PROCS, f"sqlite:///{path}")
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
    with fork_context().Pool(n_openers) as pool:
        ids = pool.map(_open_only, [url] * n_openers * 2)
    assert len(set(ids)) == 1


def _open_only(url: str) -> str:
    from sslbench.db import Store

    with Store.open(url) as store:
        return store.url
