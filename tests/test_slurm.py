"""The Slurm backend through submitit's LocalExecutor: a sweep as a job array whose tasks are
requeued after a timeout warning (SIGUSR2) and resume; grouping of runs into tasks."""

from __future__ import annotations

import sys

import pytest

from sslbench.db import Store

submitit = pytest.importorskip("submitit", reason="the Slurm backend needs submitit "
                               "(pip install 'sslbench[slurm]')")


def test_runs_are_grouped_one_pretraining_run_and_its_evaluations_per_task():
    from types import SimpleNamespace

    from sslbench.runs.slurm import task_groups

    def run(run_id, kind, parent=None, action="queue"):
        return SimpleNamespace(run_id=run_id, kind=kind, parent_id=parent, action=action)

    runs = [run("p1", "pretrain"), run("p2", "pretrain", action="skip"), run("e1", "eval", "p1"),
            run("e2", "eval", "p2"), run("e3", "eval", "p2"), run("b1", "eval")]
    plan = SimpleNamespace(runs=runs, queue=["p1", "e1", "e2", "e3", "b1"])
    assert task_groups(plan) == [["p1", "e1"], ["e2", "e3"], ["b1"]]


def test_unknown_backend_and_missing_sbatch_are_one_line_errors(tmp_path, monkeypatch):
    from sslbench.errors import ConfigError
    from sslbench.runs.slurm import make_executor

    with pytest.raises(ConfigError, match="unknown --backend"):
        make_executor("pbs", tmp_path, {})
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(ConfigError, match="sbatch is not on PATH"):
        make_executor("slurm", tmp_path, {})


@pytest.mark.slow
def test_task_is_requeued_after_a_preemption_warning_and_completes(tmp_path, monkeypatch):
    """SIGUSR2 (what Slurm sends through submitit before a timeout or a preemption) reaches the
    task mid-run: its worker checkpoints, submitit requeues the task, the task resumes."""
    import os
    import signal
    import threading
    import time

    from sslbench.runs.slurm import SweepTask, _importable, make_executor
    from tests.test_scheduler_local import FAKE_WORKER

    monkeypatch.setenv("SSLBENCH_HOME", str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    with Store.open(url) as store:
        store.upsert_run(run_id="slurmpre0001", kind="pretrain", command=[], env={},
                         config={"steps": 30, "sleep": 0.1, "resume": True})
        store.upsert_run(run_id="slurmeval001", kind="eval", command=[], env={}, config={},
                         parent_id="slurmpre0001")
    executor = make_executor("submitit-local", tmp_path / "slurm", {"timeout_min": 5},
                             max_num_timeout=3)
    task = SweepTask(["slurmpre0001", "slurmeval001"], url, str(tmp_path),
                     worker=[sys.executable, str(script)])
    with _importable():
        (job,) = executor.submit_array([task])

    def warn_once() -> None:  # the warning, once the run is well under way
        with Store.open(url) as store:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                tasks = [s for s in store.schedulers() if s.backend == "slurm"]
                if tasks and len(store.metrics_frame("slurmpre0001")) >= 5:
                    os.kill(tasks[0].pid, signal.SIGUSR2)
                    return
                time.sleep(0.05)

    warner = threading.Thread(target=warn_once)
    warner.start()
    outcomes = job.result()
    warner.join()
    assert outcomes == {"slurmpre0001": "completed", "slurmeval001": "completed"}
    with Store.open(url) as store:
        attempts = store.attempt_details("slurmpre0001")
        assert [a["status"] for a in attempts] == ["interrupted", "completed"]
        steps = list(store.metrics_frame("slurmpre0001", "loss")["step"])
        assert steps == list(range(30))  # resumed after the requeue, nothing logged twice
        tasks = store.schedulers(running_only=False)
        assert len(tasks) == 2 and {s.backend for s in tasks} == {"slurm"}  # two starts
        assert store.schedulers() == [] and store.reserved_slots() == {}
