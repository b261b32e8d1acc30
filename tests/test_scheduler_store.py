"""The store's scheduling operations: atomic claims, the device ledger, attempt adoption, the
compare-and-set end of an attempt, process liveness, and 8 processes claiming at once."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from sslbench.db import Store
from sslbench.db.liveness import process_alive, process_start_time
from sslbench.db.ownership import RunBusyError
from tests.conftest import race

N_PROCS = 8


def _run(store: Store, run_id: str, **config) -> str:
    store.upsert_run(run_id=run_id, kind="pretrain", config=config or {"x": 1}, command=[],
                     env={})
    return run_id


@pytest.fixture
def store(tmp_path: Path):
    with Store.open(f"sqlite:///{tmp_path / 's.sqlite'}") as s:
        yield s


def test_claim_is_a_compare_and_set_and_reserves_slots(store):
    a, b = _run(store, "runaaaa0001"), _run(store, "runbbbb0002")
    attempt = store.claim_run(a, scheduler_id="s1", device="0", slots=[0], log_path="/l")
    assert attempt == 1
    record = store.get_run(a)
    assert record.status == "running" and record.attempts == 1 and record.pid is None
    assert store.claim_run(a, scheduler_id="s2", device="1", slots=[0]) is None  # taken
    # The slot is taken too: b cannot have (device 0, slot 0), and that claim leaves b queued.
    assert store.claim_run(b, scheduler_id="s2", device="0", slots=[0]) is None
    assert store.get_run(b).status == "queued" and store.get_run(b).attempts == 0
    assert store.reserved_slots() == {"0": {0: a}}
    store.release(a)
    assert store.claim_run(b, scheduler_id="s2", device="0", slots=[0, 1]) == 1
    assert store.reserved_slots() == {"0": {0: b, 1: b}}
    details = store.attempt_details(a)
    assert details[0]["device"] == "0" and details[0]["scheduler_id"] == "s1"
    assert details[0]["log_path"] == "/l"


def test_a_claim_makes_its_tag_the_runs_last_in_the_same_transaction(store):
    run = _run(store, "tagged000001")
    store.add_tags(run, ["sweep:s", "slurm:7_1", "slurm:7_0"])
    assert store.claim_run(run, scheduler_id="s1", device="cpu", slots=[0], tag="slurm:7_1") == 1
    assert store.get_run(run).tags == ["sweep:s", "slurm:7_0", "slurm:7_1"]  # moved, not doubled
    other = _run(store, "tagged000002")
    store.claim_run(run, scheduler_id="s2", device="cpu", slots=[1], tag="slurm:7_0")  # taken
    assert store.claim_run(other, scheduler_id="s2", device="cpu", slots=[0],
                           tag="slurm:7_0") is None  # its slot is taken: nothing written
    assert store.get_run(run).tags[-1] == "slurm:7_1" and store.get_run(other).tags == []


def test_claim_respects_the_attempt_budget(store):
    run = _run(store, "budget000001")
    store.set_attempt_limit(run, 1)
    assert store.claim_run(run, scheduler_id="s", device="cpu", slots=[0]) == 1
    assert store.end_attempt(run, 1, "failed", error="boom", failure_class="error")
    assert store.requeue(run)
    assert store.claim_run(run, scheduler_id="s", device="cpu", slots=[1]) is None  # 1 of 1
    assert store.requeue(run, statuses=("queued",), attempt_limit=3)
    assert store.claim_run(run, scheduler_id="s", device="cpu", slots=[1]) == 2


def test_worker_adopts_the_claimed_attempt(store):
    run = _run(store, "adopt0000001")
    attempt = store.claim_run(run, scheduler_id="s", device="cpu", slots=[0])
    store.attach_process(run, attempt, os.getpid(), log_path="/log")
    store.set_status(run, "running")  # what pretrain does in the worker: same pid
    record = store.get_run(run)
    assert record.attempts == 1 and record.pid == os.getpid()
    (only,) = store.attempt_details(run)
    assert only["pid"] == os.getpid() and only["proc_start"] == process_start_time(os.getpid())
    assert only["log_path"] == "/log"
    store.set_status(run, "completed")
    assert store.attempt_details(run)[0]["status"] == "completed"


def test_running_owned_by_a_live_process_is_refused(store):
    run = _run(store, "twopids00001")
    store.set_status(run, "running", pid=os.getpid())
    with pytest.raises(RunBusyError, match=rf"owned by pid {os.getpid()} on .* since .*runs stop"):
        store.set_status(run, "running", pid=1)
    (only,) = store.attempt_details(run)
    assert only["pid"] == os.getpid() and only["ended_at"] is None


def test_running_owned_by_a_dead_process_is_taken_over(store):
    run = _run(store, "twopids00002")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.set_status(run, "running", pid=dead.pid)
    store.set_status(run, "running")
    first, second = store.attempt_details(run)
    assert first["status"] == "killed" and first["failure_class"] == "lost"
    assert first["ended_at"] is not None and "taken over" in first["error"]
    assert second["pid"] == os.getpid() and second["ended_at"] is None
    store.set_status(run, "completed")
    assert all(a["ended_at"] is not None for a in store.attempt_details(run))


def test_a_claimed_attempt_is_adopted_only_by_its_worker(store):
    run = _run(store, "claimed00001")
    attempt = store.claim_run(run, scheduler_id="sched-live", device="cpu", slots=[0])
    store.register_scheduler("sched-live", backend="local", slots=["cpu:0"])
    with pytest.raises(RunBusyError, match="owned by scheduler sched-live"):
        store.set_status(run, "running", pid=os.getpid())  # a user's `train`, not the worker
    store.set_status(run, "running", pid=os.getpid(), claim=attempt)  # the worker
    (only,) = store.attempt_details(run)
    assert only["pid"] == os.getpid() and only["scheduler_id"] == "sched-live"


def test_a_late_terminal_status_does_not_overwrite_the_new_owner(store):
    run = _run(store, "fenced000001")
    store.set_status(run, "running", pid=os.getpid())
    store.set_status(run, "failed", pid=1, error="a process that lost the run")  # pid 1 lives
    assert store.get_run(run).status == "running"


def test_end_attempt_only_ends_the_attempt_it_names(store):
    run = _run(store, "endcas000001")
    store.claim_run(run, scheduler_id="s", device="cpu", slots=[0])
    store.set_status(run, "completed")  # the worker finished first
    assert not store.end_attempt(run, 1, "killed", failure_class="lost", exit_code=-9)
    record = store.get_run(run)
    assert record.status == "completed"
    assert store.attempt_details(run)[0]["exit_code"] == -9  # the exit code is still recorded
    assert store.attempt_details(run)[0]["status"] == "completed"
    with pytest.raises(ValueError, match="terminal"):
        store.end_attempt(run, 1, "queued")


def test_schedulers_heartbeat_stop_flag_and_end(store):
    store.register_scheduler("sched-1", backend="local", slots=["cpu:0"])
    assert store.scheduler_beat("sched-1") is False
    run = _run(store, "sched0000001")
    store.claim_run(run, scheduler_id="sched-1", device="cpu", slots=[0])
    store.request_stop(["sched-1"])
    assert store.scheduler_beat("sched-1") is True
    (info,) = store.schedulers()
    assert info.pid == os.getpid() and info.slots == ["cpu:0"] and info.stop_requested
    store.end_scheduler("sched-1")
    assert store.schedulers() == [] and store.reserved_slots() == {}
    assert len(store.schedulers(running_only=False)) == 1


def test_tags_added_and_queried(store):
    run = _run(store, "tags00000001")
    store.add_tags(run, ["sweep:a_b"])
    store.add_tags(run, ["sweep:a_b", "x"])
    _run(store, "tags00000002")
    store.add_tags("tags00000002", ["sweep:aXb"])  # '_' must not act as a LIKE wildcard
    assert [r.run_id for r in store.runs_tagged("sweep:a_b")] == [run]
    assert store.get_run(run).tags == ["sweep:a_b", "x"]
    assert set(store.runs_by_id([run, "nope"])) == {run}


def test_liveness_uses_pid_and_start_time():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        start = process_start_time(proc.pid)
        assert process_alive(proc.pid, start)
        if start is not None:  # Linux: a reused pid (other start time) is not our process
            assert not process_alive(proc.pid, start + 1)
    finally:
        proc.kill()
        proc.wait()
    assert not process_alive(proc.pid, start)
    assert not process_alive(None) and not process_alive(-1)


def test_a_zombie_counts_as_dead():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    for _ in range(200):  # exited but not waited for: a zombie
        if not process_alive(proc.pid):
            break
        import time

        time.sleep(0.02)
    assert not process_alive(proc.pid)
    proc.wait()


def _claim_all(url: str, run_ids: list[str], index: int, barrier, results) -> None:
    """Child: claim every run it can, in a different order than its siblings, log into them."""
    try:
        with Store.open(url) as store:
            barrier.wait(timeout=60)
            mine = []
            order = run_ids[index:] + run_ids[:index]
            for slot, run_id in enumerate(order):
                attempt = store.claim_run(run_id, scheduler_id=f"p{index}", device=f"p{index}",
                                          slots=[slot])
                if attempt is not None:
                    mine.append(run_id)
                    for step in range(5):
                        store.log_metrics(run_id, step, {"loss": float(step), f"p{index}": 1.0})
                    store.set_status(run_id, "completed")
        results.put((index, mine, None))
    except BaseException:
        results.put((index, [], traceback.format_exc()))


@pytest.mark.slow
def test_eight_processes_claiming_at_once_never_share_a_run(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    run_ids = [f"race{i:08d}" for i in range(24)]
    with Store.open(url) as store:
        for run_id in run_ids:
            _run(store, run_id)
    outcomes = race(_claim_all, N_PROCS, url, run_ids)
    errors = [err for _, _, err in outcomes if err]
    assert not errors, errors[0]  # in particular, never "database is locked"
    claimed = [r for _, mine, _ in outcomes for r in mine]
    assert sorted(claimed) == run_ids  # each run claimed exactly once, none lost
    con = sqlite3.connect(tmp_path / "store.sqlite")
    try:
        assert con.execute("SELECT count(*) FROM attempts").fetchone()[0] == len(run_ids)
        assert con.execute("SELECT count(*) FROM metrics").fetchone()[0] == len(run_ids) * 10
        assert {r[0] for r in con.execute("SELECT status FROM runs")} == {"completed"}
    finally:
        con.close()
