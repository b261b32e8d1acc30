"""Crash safety through the real CLI: kill -9 then the same command, or a sweep, resumes to the
uninterrupted result; SIGTERM finishes the step, checkpoints and marks the run interrupted.

Each signal is sent to a run frozen (SIGSTOP) as soon as its first checkpoint appears, with one of
its two epochs still to train, and the test first checks that the run is unfinished (store status
``running``, no ``backbone.pt``): the signal, not the end of training, stops the process, and
neither test can pass without interrupting a run. The kill -9 comes later: the run trains its
second epoch while the test holds the store's write lock, so the epoch is logged into the run's
buffer and never written, and the process waits at its next checkpoint (which flushes first)
when it is killed.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import (
    TINY_SIMCLR,
    cli_env,
    copy_home,
    freeze_at_first_checkpoint,
    invoke_in,
    run_cli,
    tiny_simclr_sweep,
)

# The run of the session's `tiny_simclr` home, which is the uninterrupted reference.
ARGS = [*TINY_SIMCLR, "--format", "json"]


def _start(home: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sslbench", *ARGS], cwd=home,
                            env=cli_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _store(home: Path):
    from sslbench.db import Store

    return Store.open(f"sqlite:///{home / 'db' / 'sslbench.sqlite'}", create=False)


def _status(home: Path, run_id: str) -> str:
    with _store(home) as store:
        return store.get_run(run_id).status


def _final(home: Path, run_id: str) -> tuple[dict, dict]:
    with _store(home) as store:
        frame = store.metrics_frame(run_id)
    assert not frame.duplicated(["key", "step"]).any()
    metrics = {(r.key, r.step): r.value for r in frame.itertuples()}
    weights = torch.load(home / "runs" / run_id / "backbone.pt", weights_only=True)["backbone"]
    return metrics, weights


def _assert_same_run(home: Path, reference: Path, run_id: str) -> None:
    """The same metrics (wall-clock speed aside) and bit-identical weights as ``reference``'s,
    and every attempt closed: the dead owner's as killed, the last as completed."""
    m1, w1 = _final(home, run_id)
    m2, w2 = _final(reference, run_id)
    assert set(m1) == set(m2)
    for key, value in m2.items():
        if key[0] != "images_per_s":  # wall-clock speed differs, everything else must not
            assert m1[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert w1.keys() == w2.keys()
    for name in w2:
        torch.testing.assert_close(w1[name], w2[name], rtol=0, atol=0)
    with _store(home) as store:
        attempts = store.attempt_details(run_id)
    assert attempts[0]["status"] == "killed" and attempts[-1]["status"] == "completed"
    assert all(a["ended_at"] is not None for a in attempts)


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, over all threads


def _wait_until_idle(proc: subprocess.Popen, quiet_s: float = 1.0, timeout: float = 120) -> None:
    """Until ``proc`` has used (almost) no CPU for ``quiet_s``: it is blocked, here on the
    store's lock at its next checkpoint's flush."""
    deadline = time.monotonic() + timeout
    last = _cpu_ticks(proc.pid)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        assert proc.poll() is None, proc.communicate()[1]
        now = _cpu_ticks(proc.pid)
        if now - last <= 2:  # clock ticks (10 ms): a retry of the writer thread, nothing more
            return
        last = now
    pytest.fail("the training never blocked on the locked store")


def _lock_store(home: Path, proc: subprocess.Popen) -> sqlite3.Connection:
    """The store's write lock, held by the test (``proc`` frozen, and thawed a moment when it
    was frozen holding the lock itself)."""
    con = sqlite3.connect(home / "db" / "sslbench.sqlite", timeout=0.5, isolation_level=None)
    for _ in range(100):
        try:
            con.execute("BEGIN IMMEDIATE")
            return con
        except sqlite3.OperationalError:
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.02)
            proc.send_signal(signal.SIGSTOP)
    pytest.fail("the training never let go of the store's lock")


@pytest.mark.slow
def test_kill_9_then_resume_by_train_or_by_a_sweep_equals_uninterrupted(tiny_simclr, tmp_path):
    """One run killed under `train` after it logged its second epoch into its buffer and before
    its next checkpoint (which waits on the store, locked by the test meanwhile: the epoch's
    points are logged and unwritten), then resumed in one copy of its home by the same command
    and in another by `sweep --workers 2` (which reaps the dead owner, then resumes the run in a
    worker): both end as the uninterrupted run of the same id, bit for bit, no metric row
    missing or duplicated."""
    killed, swept = tmp_path / "killed", tmp_path / "swept"
    killed.mkdir()
    proc = _start(killed)
    try:
        run_id = freeze_at_first_checkpoint(killed, proc)
        first = torch.load(killed / "runs" / run_id / "checkpoint.pt", weights_only=True)["step"]
        lock = _lock_store(killed, proc)
        proc.send_signal(signal.SIGCONT)
        _wait_until_idle(proc)  # trained the epoch, logged it, waiting to write it
        proc.send_signal(signal.SIGKILL)
        lock.rollback()
        lock.close()
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert _status(killed, run_id) == "running"  # nothing closed the run: it really was killed
    assert not (killed / "runs" / run_id / "backbone.pt").exists()
    checkpoint = torch.load(killed / "runs" / run_id / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == first  # the second checkpoint never came
    with _store(killed) as store:
        stored = store.metrics_frame(run_id)
    assert len(stored) and stored["step"].max() <= first  # the epoch's points were not written
    copy_home(killed, swept)

    resumed = run_cli(ARGS, killed)
    assert resumed.returncode == 0, resumed.stderr
    run = json.loads(resumed.stdout)
    assert run["status"] == "completed" and run["run_id"] == run_id

    (swept / "same.toml").write_text(tiny_simclr_sweep())
    by_sweep = invoke_in(swept, "sweep", "same.toml", "--workers", "2")  # its workers are real
    assert by_sweep.exit_code == 0, by_sweep.output

    reference = copy_home(tiny_simclr, tmp_path / "clean")  # `train`, never interrupted
    for home in (killed, swept):
        _assert_same_run(home, reference, run_id)


@pytest.mark.slow
def test_sigterm_checkpoints_and_marks_interrupted(home, cli):
    proc = _start(home)
    run_id = freeze_at_first_checkpoint(home, proc)
    proc.send_signal(signal.SIGTERM)  # delivered when the process runs again
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "interrupted" in err and "Traceback" not in err
    run = json.loads(out)
    assert run["status"] == "interrupted" and run["run_id"] == run_id
    assert _status(home, run_id) == "interrupted"
    assert not (home / "runs" / run_id / "backbone.pt").exists()
    resumed = cli(*ARGS)  # the same command, in-process (kill -9 above resumes as typed)
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["status"] == "completed"
