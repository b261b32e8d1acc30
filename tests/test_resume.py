"""Crash safety through the real CLI: kill -9 then the same command resumes to the same result;
SIGTERM finishes the step, checkpoints and marks the run interrupted.

Each signal is sent to a run frozen (SIGSTOP) as soon as its first checkpoint appears, with two of
its three epochs still to train, and the test first checks that the run is unfinished (store
status ``running``, no ``backbone.pt``): the signal, not the end of training, stops the process,
and neither test can pass without interrupting a run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_TRAIN, run_cli

ARGS = ["train", "--method", "simclr", *TINY_TRAIN, "--epochs", "3", "--train-samples", "512",
        "--format", "json"]


def _start(home: Path) -> subprocess.Popen:
    env = {**os.environ, "SSLBENCH_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env.pop("SSLBENCH_DB", None)
    return subprocess.Popen([sys.executable, "-m", "sslbench", *ARGS], cwd=home, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(home: Path, proc: subprocess.Popen, timeout: float = 240) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = list((home / "runs").glob("*/checkpoint.pt")) if (home / "runs").exists() else []
        if found:
            return found[0]
        if proc.poll() is not None:
            pytest.fail(f"training ended before its first checkpoint: {proc.communicate()[1]}")
        time.sleep(0.01)
    pytest.fail("no checkpoint appeared")


def _status(home: Path, run_id: str) -> str:
    from sslbench.db import Store

    with Store.open(f"sqlite:///{home / 'db' / 'sslbench.sqlite'}", create=False) as store:
        return store.get_run(run_id).status


def _freeze_unfinished(home: Path, proc: subprocess.Popen) -> str:
    """SIGSTOPs the run at its first checkpoint and checks that it has not completed; its id."""
    checkpoint = _wait_for_checkpoint(home, proc)
    proc.send_signal(signal.SIGSTOP)
    run_id = checkpoint.parent.name
    assert proc.poll() is None, "the run exited before it could be interrupted"
    assert not (checkpoint.parent / "backbone.pt").exists(), "the run completed before the signal"
    assert _status(home, run_id) == "running"
    return run_id


def _final(home: Path, run_id: str) -> tuple[dict, dict]:
    from sslbench.db import Store

    store = Store.open(f"sqlite:///{home / 'db' / 'sslbench.sqlite'}")
    frame = store.metrics_frame(run_id)
    assert not frame.duplicated(["key", "step"]).any()
    metrics = {(r.key, r.step): r.value for r in frame.itertuples()}
    weights = torch.load(home / "runs" / run_id / "backbone.pt", weights_only=True)["backbone"]
    store.close()
    return metrics, weights


@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    killed.mkdir()
    clean.mkdir()
    proc = _start(killed)
    run_id = _freeze_unfinished(killed, proc)
    proc.send_signal(signal.SIGKILL)  # a stopped process dies of SIGKILL without running again
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert _status(killed, run_id) == "running"  # nothing closed the run: it really was killed
    assert not (killed / "runs" / run_id / "backbone.pt").exists()
    resumed = run_cli(ARGS, killed)
    assert resumed.returncode == 0, resumed.stderr
    run = json.loads(resumed.stdout)
    assert run["status"] == "completed"
    reference = run_cli(ARGS, clean)
    assert reference.returncode == 0, reference.stderr
    assert json.loads(reference.stdout)["run_id"] == run["run_id"]
    m1, w1 = _final(killed, run["run_id"])
    m2, w2 = _final(clean, run["run_id"])
    assert set(m1) == set(m2)
    for key, value in m2.items():
        if key[0] != "images_per_s":  # wall-clock speed differs, everything else must not
            assert m1[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    for name in w2:
        torch.testing.assert_close(w1[name], w2[name], rtol=0, atol=0)


@pytest.mark.slow
def test_sigterm_checkpoints_and_marks_interrupted(tmp_path):
    proc = _start(tmp_path)
    run_id = _freeze_unfinished(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)  # delivered when the process runs again
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "interrupted" in err and "Traceback" not in err
    run = json.loads(out)
    assert run["status"] == "interrupted" and run["run_id"] == run_id
    assert _status(tmp_path, run_id) == "interrupted"
    assert not (tmp_path / "runs" / run_id / "backbone.pt").exists()
    resumed = run_cli(ARGS, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "completed"
