"""Array tasks that pull their siblings' runs (sslbench.runs.pull, issue #15): which runs a task
may pull and when it stops, on a store alone; then on the real Slurm cluster (the
``slurm_cluster`` fixture) a 4-run array on the 2-CPU node, where each run completes exactly once
under the task that claimed it and the tasks left with nothing end at once with exit 0, a
failing array, whose tasks pull nothing and fail each its own run, and a task that pulled a run
stopped mid-run by the time-limit warning (requeued) or by scancel (the sweep resumes it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslbench.db import Store
from sslbench.runs.pull import ArrayTask, Pull
from sslbench.runs.scheduler import ELSEWHERE


@pytest.fixture
def store(tmp_path: Path):
    with Store.open(f"sqlite:///{tmp_path / 's.sqlite'}") as s:
        yield s


def _queued(store: Store, run_id: str, job: str, kind: str = "pretrain",
            parent: str | None = None) -> str:
    store.upsert_run(run_id=run_id, kind=kind, config={"id": run_id}, command=[], env={},
                     parent_id=parent)
    store.add_tags(run_id, ["sweep:s", f"slurm:{job}"])
    return run_id


def test_a_task_knows_its_array_only_under_submitit_on_slurm():
    env = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "2",
           "SLURM_JOB_ID": "43"}
    assert ArrayTask.from_environment(env) == ArrayTask("40", 2)
    assert ArrayTask("40", 2).job == "40_2"
    assert ArrayTask.from_environment({**env, "SUBMITIT_EXECUTOR": "local"}) is None
    assert ArrayTask.from_environment({"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "7"}) is None


def test_a_run_is_elsewhere_when_its_latest_job_is_a_sibling_of_the_same_array(store):
    task = ArrayTask("40", 0)
    run = _queued(store, "elsewhere001", "40_1")
    assert not task.elsewhere(store.get_run(run))  # submitted to 40_1, unclaimed: pullable
    store.claim_run(run, scheduler_id="t1", device="cpu", slots=[0], tag="slurm:40_1")
    assert task.elsewhere(store.get_run(run))  # claimed by 40_1
    store.end_attempt(run, 1, "failed", error="x")
    assert task.elsewhere(store.get_run(run))  # and 40_1 answers for its outcome
    store.add_tags(run, ["slurm:40_0"])
    assert not task.elsewhere(store.get_run(run))  # claimed by this task
    store.add_tags(run, ["slurm:41_0"])
    assert not task.elsewhere(store.get_run(run))  # a later submission: not this array's
    store.upsert_run(run_id="untagged0001", kind="pretrain", config={}, command=[], env={})
    assert not task.elsewhere(store.get_run("untagged0001"))  # run by hand, never submitted


def test_pull_takes_whole_unclaimed_groups_of_the_array_one_at_a_time(store):
    groups = [["own"], ["pre1", "eva1"], ["pre2"], ["pre3"]]
    for i, group in enumerate(groups):
        for run_id in group:
            _queued(store, run_id, f"40_{i}", "eval" if run_id.startswith("eva") else "pretrain",
                    "pre1" if run_id == "eva1" else None)
    store.claim_run("pre2", scheduler_id="t2", device="cpu", slots=[0], tag="slurm:40_2")
    store.claim_run("pre3", scheduler_id="t0", device="cpu", slots=[1], tag="slurm:40_1")
    store.end_attempt("pre3", 1, "failed", error="x")
    store.requeue("pre3")  # queued again, but another task started it: not pullable
    taken = ["own"]
    pull = Pull(store, ArrayTask("40", 0), groups, capacity=1, taken=taken)
    pending = ["own"]
    pull.refill(pending)
    assert pending == ["own"] and not pull.exhausted  # no free slot yet
    pending.clear()
    pull.refill(pending)
    assert pending == ["pre1", "eva1"] and taken == ["own", "pre1", "eva1"]
    pending.clear()
    pull.refill(pending)
    assert pending == [] and pull.exhausted  # pre2 runs under 40_2, pre3 was started by 40_1


def test_pull_stops_after_a_run_that_did_not_complete_or_when_asked(store):
    groups = [["own"], ["other1"], ["other2"]]
    for i, group in enumerate(groups):
        _queued(store, group[0], f"40_{i}")
    pull = Pull(store, ArrayTask("40", 0), groups, capacity=1, taken=[])
    pull.ended("own", "completed")
    pull.ended("x", ELSEWHERE)
    assert not pull.exhausted
    pull.ended("own", "interrupted")  # scancel, USR2 or a failure: start nothing new
    assert pull.exhausted
    pending: list[str] = []
    pull.refill(pending)
    assert pending == []
    stopped = Pull(store, ArrayTask("40", 0), groups, capacity=1, taken=[])
    stopped.stop()
    stopped.refill(pending)
    assert pending == [] and Pull(store, ArrayTask("40", 0), [["own"]], 1, []).exhausted


# ------------------------------------------------------------------------------ the node

def _cluster_helpers():
    pytest.importorskip("submitit", reason="the Slurm backend needs submitit")
    from tests import test_slurm_cluster as helpers

    return helpers


@pytest.mark.slow
def test_four_runs_on_two_cpus_each_complete_once_under_the_task_that_claimed_it(
        slurm_cluster, home):
    """Tasks 0 and 1 fill the node; as each ends its run it pulls the next unclaimed one, so
    tasks 2 and 3, started after, find theirs taken and end at once, COMPLETED."""
    from tests.conftest import run_cli

    h = _cluster_helpers()
    sweep = h.sweep_file(home, "pull", seeds="[0, 1, 2, 3]")
    jobs = h.submitted(run_cli(["sweep", sweep, "--backend", "slurm"], home))
    assert len(jobs) == 4
    h.wait_for_jobs(slurm_cluster)
    for j in jobs:
        assert (h.job(slurm_cluster, j)["JobState"], h.job(slurm_cluster, j)["ExitCode"]) == \
            ("COMPLETED", "0:0"), j
    cluster_name = slurm_cluster.conf.read_text().split("ClusterName=")[1].split()[0]
    raw = {j: h.job(slurm_cluster, j)["JobId"] for j in jobs}  # 40_2 -> the task's own id
    with h.store_of(home) as store:
        runs = store.runs_tagged("sweep:pull")
        assert [r.status for r in runs] == ["completed"] * 4
        ran_by: dict[str, list[str]] = {}
        for r in runs:
            (attempt,) = store.attempt_details(r.run_id)  # exactly once: one attempt
            latest = [t for t in r.tags if t.startswith("slurm:")][-1][len("slurm:"):]
            assert attempt["device"] == f"slurm:{cluster_name}:{raw[latest]}/cpu", (r.tags,
                                                                                    attempt)
            ran_by.setdefault(latest, []).append(r.run_id)
        assert store.live_attempts() == [] and store.reserved_slots() == {}
    assert max(len(v) for v in ran_by.values()) >= 2, ran_by  # someone pulled
    watch = run_cli(["runs", "watch", "--once", "--sweep", "pull"], home)
    assert all(f"{j} COMPLETED" in watch.stdout for j in ran_by), watch.stdout


@pytest.mark.slow
def test_tasks_whose_runs_fail_pull_nothing_and_each_fails(slurm_cluster, home, tmp_path):
    """Every run fails (its data is gone when the task starts): a failed task pulls nothing,
    so each run is its own task's, and each task is FAILED."""
    from tests.conftest import run_cli

    h = _cluster_helpers()
    data = h.tiny_image_folder(tmp_path / "data")
    sweep = h.sweep_file(home, "pullfail", seeds="[0, 1, 2]",
                         fixed=f'dataset = "imagefolder"\ndata_root = "{data}"\nimage_size = 32',
                         slurm=f'setup = ["rm -rf {data}"]')
    sweep.write_text(sweep.read_text().replace("batch_size = 64", "batch_size = 4"))
    jobs = h.submitted(run_cli(["sweep", sweep, "--backend", "slurm"], home))
    h.wait_for_jobs(slurm_cluster)
    for j in jobs:
        assert (h.job(slurm_cluster, j)["JobState"], h.job(slurm_cluster, j)["ExitCode"]) == \
            ("FAILED", "1:0"), j
    with h.store_of(home) as store:
        runs = store.runs_tagged("sweep:pullfail")
        assert [r.status for r in runs] == ["failed"] * 3
        assert sorted([t for t in r.tags if t.startswith("slurm:")][-1] for r in runs) == \
            sorted(f"slurm:{j}" for j in jobs)


@pytest.mark.slow
def test_the_time_limit_warning_requeues_a_task_that_pulled_and_its_pulled_run_completes_once(
        slurm_cluster, home):
    """The task that pulled the third run is warned (USR2) mid-run: the run checkpoints, the
    task is requeued and resumes it; the third run's own task, started meanwhile, leaves it to
    the requeued one and ends COMPLETED."""
    import os
    import signal

    from tests.conftest import run_cli

    h = _cluster_helpers()
    sweep = h.sweep_file(home, "pullusr2", seeds="[0, 1, 2]", epochs=3, samples=256)
    jobs = h.submitted(run_cli(["sweep", sweep, "--backend", "slurm"], home))
    third = h.run_ids(home, "pullusr2")[2]
    pid = h.stop_worker_at_first_checkpoint(home, third)
    with h.store_of(home) as store:
        puller = [t for t in store.get_run(third).tags if t.startswith("slurm:")][-1][6:]
    assert puller in jobs[:2], (puller, jobs)  # the node was full: a first-wave task took it
    slurm_cluster.run("scancel", "--signal=USR2", puller)
    h._wait_for_pending_sigterm(pid)
    os.kill(pid, signal.SIGCONT)
    h.requeued_once(slurm_cluster, home, puller, third)  # [interrupted, completed], Restarts 1
    assert (h.job(slurm_cluster, jobs[2])["JobState"],
            h.job(slurm_cluster, jobs[2])["ExitCode"]) == ("COMPLETED", "0:0")
    with h.store_of(home) as store:
        runs = store.runs_tagged("sweep:pullusr2")
        assert [r.status for r in runs] == ["completed"] * 3
        assert [t for t in store.get_run(third).tags if t.startswith("slurm:")][-1] == \
            f"slurm:{puller}"
        assert sorted(store.metrics_frame(third, "epoch")["value"]) == [1.0, 2.0, 3.0]


@pytest.mark.slow
def test_scancel_of_a_task_that_pulled_checkpoints_the_pulled_run_and_the_sweep_resumes_it_once(
        slurm_cluster, home):
    """The task that pulled the third run is cancelled mid-run: the run checkpoints and ends
    interrupted, as a task's own run does; the third run's own task, started on the freed CPU,
    leaves it to the cancelled one and ends COMPLETED; the same sweep, run again, resumes it in
    a new job to completion, once, with each epoch's metrics stored once."""
    from tests.conftest import run_cli

    h = _cluster_helpers()
    sweep = h.sweep_file(home, "pullcancel", seeds="[0, 1, 2]", epochs=3, samples=256)
    jobs = h.submitted(run_cli(["sweep", sweep, "--backend", "slurm"], home))
    first, second, third = h.run_ids(home, "pullcancel")
    h.stop_worker_at_first_checkpoint(home, third)
    with h.store_of(home) as store:
        puller = [t for t in store.get_run(third).tags if t.startswith("slurm:")][-1][6:]
    assert puller in jobs[:2], (puller, jobs)  # the node was full: a first-wave task took it
    slurm_cluster.run("scancel", puller)  # Slurm sends SIGCONT, then SIGTERM, to the step
    h.wait_for_jobs(slurm_cluster)
    assert h.job(slurm_cluster, puller)["JobState"] == "CANCELLED"
    assert (h.job(slurm_cluster, jobs[2])["JobState"],
            h.job(slurm_cluster, jobs[2])["ExitCode"]) == ("COMPLETED", "0:0")
    with h.store_of(home) as store:
        assert [store.get_run(r).status for r in (first, second, third)] == \
            ["completed", "completed", "interrupted"]
        assert [a["status"] for a in store.attempt_details(third)] == ["interrupted"]
        assert store.live_attempts() == [] and store.reserved_slots() == {}
    (again,) = h.submitted(run_cli(["sweep", sweep, "--backend", "slurm"], home))
    h.wait_for_jobs(slurm_cluster)
    assert (h.job(slurm_cluster, again)["JobState"],
            h.job(slurm_cluster, again)["ExitCode"]) == ("COMPLETED", "0:0")
    with h.store_of(home) as store:
        assert [store.get_run(r).status for r in (first, second, third)] == ["completed"] * 3
        assert [len(store.attempt_details(r)) for r in (first, second)] == [1, 1]
        assert [a["status"] for a in store.attempt_details(third)] == ["interrupted",
                                                                        "completed"]
        assert [t for t in store.get_run(third).tags if t.startswith("slurm:")][-1] == \
            f"slurm:{again}"
        metrics = store.metrics_frame(third)
        assert not metrics.duplicated(["key", "step"]).any()
        assert sorted(store.metrics_frame(third, "epoch")["value"]) == [1.0, 2.0, 3.0]
