"""Crash safety through the real CLI: kill -9 then the same command, or a sweep, resumes to the
uninterrupted result; SIGTERM finishes the step, checkpoints and marks the run interrupted.

Each signal is sent to a run frozen (SIGSTOP) as soon as its first checkpoint appears, with one of
its two epochs still to train, and the test first checks that the run is unfinished (store status
``running``, no ``backbone.pt``): the signal, not the end of training, stops the process, and
neither test can pass without interrupting a run.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
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


@pytest.mark.slow
def test_kill_9_then_resume_by_train_or_by_a_sweep_equals_uninterrupted(tiny_simclr, tmp_path):
    """One run killed under `train`, then resumed in one copy of its home by the same command
    and in another by `sweep --workers 2` (which reaps the dead owner, then resumes the run in a
    worker): both end as the uninterrupted run of the same id, bit for bit."""
    killed, swept = tmp_path / "killed", tmp_path / "swept"
    killed.mkdir()
    proc = _start(killed)
    try:
        run_id = freeze_at_first_checkpoint(killed, proc)
        proc.send_signal(signal.SIGKILL)  # a stopped process dies of SIGKILL without running again
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert _status(killed, run_id) == "running"  # nothing closed the run: it really was killed
    assert not (killed / "runs" / run_id / "backbone.pt").exists()
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
