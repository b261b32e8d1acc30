"""Runs of several processes on Slurm: one task group of one Slurm task per process.

On the real one-node cluster (tests/conftest.py's ``slurm_cluster``, 2 CPUs): a sweep run of
``devices_per_run = 2`` is one array task of 2 Slurm tasks; it completes to the result of
``torchrun --nproc-per-node 2 -m sslbench train`` with the same config, records 2 processes and
one owner (rank 0's scheduler); a sweep of 1- and 2-process runs is one array per task shape;
Slurm's warning (USR2) mid-run checkpoints the group, which is requeued as a whole and completes
once; scancel checkpoints it and the same sweep resumes it; a killed rank fails the group (the
job FAILED) and the next sweep resumes the run; groups that no node holds are refused in one
line before anything is submitted. Without the cluster: the ``#SBATCH`` options of a task
shape, the check against sinfo's nodes, the rank environment each task derives from Slurm, a
follower rank's protocol, and the refusal of submitit-local.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from sslbench.errors import ConfigError
from tests.conftest import TINY_SIMCLR, cli_env, run_cli, tiny_simclr_sweep
from tests.test_slurm_cluster import (
    _refused,
    _wait_for_pending_sigterm,
    job,
    requeued_once,
    store_of,
    submitted,
    wait_for_jobs,
)
from tests.test_sweep_multidev import MIXED, _rank_of, assert_same_result

pytest.importorskip("submitit", reason="the Slurm backend needs submitit "
                    "(pip install 'sslbench[slurm]')")

SLURM = '[slurm]\ncpus_per_task = 1\ntime = "0:10:00"\n'


def _torchrun(home: Path, samples: int = 256) -> subprocess.Popen:
    """The reference: TINY_SIMCLR (of ``samples`` images) in 2 processes under torchrun, in its
    own home."""
    home.mkdir()
    args = [*TINY_SIMCLR, "--train-samples", str(samples)]  # the last flag given wins
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "sslbench", *args, "--format", "json"],
        cwd=home, env=cli_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _owners(home: Path, run_id: str, *job_ids: str) -> list[str]:
    """The schedulers that claimed the run's attempts, in order; checks that each is rank 0's
    of one of the jobs (one per start of a job) and that the store knows no other."""
    with store_of(home) as store:
        owners = [a["scheduler_id"] for a in store.attempt_details(run_id)]
        known = [s.scheduler_id for s in store.schedulers(running_only=False)]
        assert all(s.ended_at is not None for s in store.schedulers(running_only=False))
    assert all(any(f":job{j}." in owner for j in job_ids) for owner in owners), owners
    assert sorted(set(owners)) == sorted(known), (owners, known)
    return owners


@pytest.mark.slow
def test_a_two_process_run_is_one_task_group_and_equals_torchrun_train(slurm_cluster, home,
                                                                        tmp_path):
    reference = _torchrun(tmp_path / "torchrun")
    (home / "same.toml").write_text(tiny_simclr_sweep() + SLURM)
    args = ["sweep", "same.toml", "--backend", "slurm", "--devices-per-run", "2"]
    dry = run_cli([*args, "--dry-run", "--format", "json"], home)
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert [r["processes"] for r in plan["runs"]] == [2]
    assert "#SBATCH --ntasks-per-node=2" in plan["sbatch"]
    assert "#SBATCH --nodes=1" in plan["sbatch"]
    run_id = plan["runs"][0]["run_id"]

    (job_id,) = submitted(run_cli(args, home))
    wait_for_jobs(slurm_cluster)
    fields = job(slurm_cluster, job_id)
    assert (fields["JobState"], fields["ExitCode"], fields["NumTasks"]) == ("COMPLETED", "0:0",
                                                                            "2")
    with store_of(home) as store:
        record = store.get_run(run_id)
        assert record.status == "completed" and record.numerics["processes"] == 2
        assert [a["status"] for a in store.attempt_details(run_id)] == ["completed"]
        assert store.reserved_slots() == {}
    assert len(_owners(home, run_id, job_id)) == 1
    assert (home / "runs" / run_id / "attempt-1.rank1.log").exists()  # rank 1's own worker

    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]
    assert f'"run_id": "{run_id}"' in out
    assert_same_result(home, tmp_path / "torchrun", run_id)


@pytest.mark.slow
def test_runs_of_one_and_of_two_processes_are_one_job_array_each(slurm_cluster, home):
    """One array per task shape, each run tagged with its own array's job."""
    (home / "mixed.toml").write_text(MIXED + SLURM)
    args = ["sweep", "mixed.toml", "--backend", "slurm"]
    dry = run_cli([*args, "--dry-run"], home)
    assert dry.returncode == 0, dry.stderr
    assert "# 1 task(s) of 1 process(es):" in dry.stdout
    assert "# 1 task(s) of 2 process(es):" in dry.stdout
    assert dry.stdout.count("#SBATCH --ntasks-per-node=2") == 1
    jobs = submitted(run_cli(args, home))
    assert len(jobs) == 2
    wait_for_jobs(slurm_cluster)
    with store_of(home) as store:
        runs = {r.config["seed"]: r for r in store.runs_tagged("sweep:same")}
    assert {seed: r.status for seed, r in runs.items()} == {0: "completed", 1: "completed"}
    for seed, tasks in ((0, "2"), (1, "1")):
        (tag,) = [t for t in runs[seed].tags if t.startswith("slurm:")]
        fields = job(slurm_cluster, tag.removeprefix("slurm:"))
        assert (fields["JobState"], fields["NumTasks"]) == ("COMPLETED", tasks), (seed, fields)
    assert runs[0].numerics["processes"] == 2 and runs[1].numerics.get("processes", 1) == 1


@pytest.mark.slow
def test_usr2_checkpoints_the_group_which_is_requeued_whole_and_completes_once(slurm_cluster,
                                                                                home, tmp_path):
    """Slurm's time-limit warning mid-run: rank 0 asks the group to stop, every rank checkpoints
    the same step, submitit requeues the job (rank 0 alone), the requeued group resumes the run
    to the uninterrupted result. 20 steps an epoch: the group asks rank 0 whether to stop at its
    sync points (every log_every = 10 steps), so the warning after the first epoch stops it at
    step 30 of 40."""
    reference = _torchrun(tmp_path / "torchrun", samples=1280)
    (home / "same.toml").write_text(tiny_simclr_sweep(samples=1280) + SLURM)
    (job_id,) = submitted(run_cli(["sweep", "same.toml", "--backend", "slurm",
                                   "--devices-per-run", "2"], home))
    with store_of(home) as store:
        (run,) = store.runs_tagged("sweep:same")
    run_id = run.run_id
    _wait_for_checkpoint(slurm_cluster, home, run_id)
    pids = _worker_pids(home, run_id)
    for pid in pids.values():  # frozen so that the warning, not the end of training, stops them
        os.kill(pid, signal.SIGSTOP)
    assert not (home / "runs" / run_id / "backbone.pt").exists(), "the run ended too soon"
    slurm_cluster.run("scancel", "--signal=USR2", job_id)
    _wait_for_pending_sigterm(pids[0])  # rank 0's task stopped its scheduler, which told rank 0
    for pid in pids.values():
        os.kill(pid, signal.SIGCONT)
    requeued_once(slurm_cluster, home, job_id, run_id)
    with store_of(home) as store:
        assert store.get_run(run_id).numerics["processes"] == 2
    owners = _owners(home, run_id, job_id)
    assert [o.rsplit(".", 1)[1] for o in owners] == ["0", "1"]  # one owner per start of the job
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]
    assert_same_result(home, tmp_path / "torchrun", run_id)


def _worker_pids(home: Path, run_id: str) -> dict[int, int]:
    """{rank: pid} of the run's workers (``runs exec RUN_ID`` on this host, RANK from Slurm)."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            if b"exec" in args and run_id.encode() in args:
                found[_rank_of(int(proc.name))] = int(proc.name)
        except OSError:
            continue
    assert sorted(found) == [0, 1], found
    return found


@pytest.mark.slow
def test_scancel_checkpoints_the_group_and_the_same_sweep_resumes_it(slurm_cluster, home,
                                                                      tmp_path):
    """scancel: Slurm sends SIGCONT, then SIGTERM, to every process of the group; rank 0's
    process stops the group at its next sync point (step 30 of 40) and saves the checkpoint;
    the same sweep resumes the run in a new job to the uninterrupted result."""
    reference = _torchrun(tmp_path / "torchrun", samples=1280)
    (home / "same.toml").write_text(tiny_simclr_sweep(samples=1280) + SLURM)
    args = ["sweep", "same.toml", "--backend", "slurm", "--devices-per-run", "2"]
    (first,) = submitted(run_cli(args, home))
    with store_of(home) as store:
        (run,) = store.runs_tagged("sweep:same")
    run_id = run.run_id
    _wait_for_checkpoint(slurm_cluster, home, run_id)
    for pid in _worker_pids(home, run_id).values():
        os.kill(pid, signal.SIGSTOP)
    assert not (home / "runs" / run_id / "backbone.pt").exists(), "the run ended too soon"
    slurm_cluster.run("scancel", first)
    wait_for_jobs(slurm_cluster)
    assert job(slurm_cluster, first)["JobState"] == "CANCELLED"
    with store_of(home) as store:
        assert store.get_run(run_id).status == "interrupted"
    (second,) = submitted(run_cli(args, home))
    wait_for_jobs(slurm_cluster)
    with store_of(home) as store:
        assert [a["status"] for a in store.attempt_details(run_id)] == ["interrupted",
                                                                         "completed"]
    _owners(home, run_id, first, second)
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]
    assert_same_result(home, tmp_path / "torchrun", run_id)


@pytest.mark.slow
def test_a_killed_rank_fails_the_group_and_the_next_sweep_resumes_the_run(slurm_cluster, home,
                                                                          tmp_path):
    """kill -9 of rank 1's process after the first epoch: rank 0's process sees its peer gone
    and ends the attempt as 'killed' (with --max-attempts 1, the last), the task exits non-zero
    and Slurm records the job FAILED; the same sweep again resumes the run in a new job, to the
    result of torchrun."""
    reference = _torchrun(tmp_path / "torchrun")
    (home / "same.toml").write_text(tiny_simclr_sweep() + SLURM)
    args = ["sweep", "same.toml", "--backend", "slurm", "--devices-per-run", "2"]
    (first,) = submitted(run_cli([*args, "--max-attempts", "1"], home))
    with store_of(home) as store:
        (run,) = store.runs_tagged("sweep:same")
    run_id = run.run_id
    _wait_for_checkpoint(slurm_cluster, home, run_id)
    pids = _worker_pids(home, run_id)
    for pid in pids.values():
        os.kill(pid, signal.SIGSTOP)
    assert not (home / "runs" / run_id / "backbone.pt").exists(), "the run ended before the kill"
    os.kill(pids[1], signal.SIGKILL)
    os.kill(pids[0], signal.SIGCONT)
    wait_for_jobs(slurm_cluster)
    fields = job(slurm_cluster, first)
    # Rank 0's task exits 1; srun's --kill-on-bad-exit then sends SIGTERM to the tasks still
    # up, and srun exits with the highest of its tasks' codes: 1 when rank 1's follower had
    # already seen rank 0's scheduler end and returned, 143 (128 + SIGTERM) when it had not yet
    # (a race that a loaded machine tips). Either way the job is FAILED and the run 'killed'.
    assert fields["JobState"] == "FAILED" and fields["ExitCode"] in ("1:0", "143:0"), fields
    with store_of(home) as store:
        assert store.get_run(run_id).status == "killed"
        assert store.attempt_details(run_id)[0]["failure_class"] == "killed"
        assert store.reserved_slots() == {}

    (second,) = submitted(run_cli(args, home))
    wait_for_jobs(slurm_cluster)
    assert job(slurm_cluster, second)["JobState"] == "COMPLETED"
    with store_of(home) as store:
        assert [a["status"] for a in store.attempt_details(run_id)] == ["killed", "completed"]
    owners = _owners(home, run_id, first, second)
    assert f":job{first}." in owners[0] and f":job{second}." in owners[1]
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]
    assert_same_result(home, tmp_path / "torchrun", run_id)


def _wait_for_checkpoint(cluster, home: Path, run_id: str, timeout: float = 240) -> None:
    """Until the run's first checkpoint is written (after its first epoch, with one left)."""
    checkpoint = home / "runs" / run_id / "checkpoint.pt"
    deadline = time.monotonic() + timeout
    while not checkpoint.exists():
        assert time.monotonic() < deadline, cluster.run("squeue").stdout
        time.sleep(0.01)


@pytest.mark.slow
def test_task_groups_that_cannot_be_started_are_refused_before_anything_is_submitted(
        slurm_cluster, home):
    (home / "same.toml").write_text(tiny_simclr_sweep() + SLURM)
    sweep = ["sweep", "same.toml", "--backend", "slurm"]
    _refused(run_cli([*sweep, "--devices-per-run", "4"], home), home,
             "devices_per_run 4: 4 tasks x 1 CPU(s) do not fit on one node of the cluster, "
             "whose nodes have at most 2 CPUs (sinfo)", "--devices-per-run N")
    _refused(run_cli([*sweep, "--devices-per-run", "2", "--slurm", "cpus_per_task=2"], home),
             home, "2 tasks x 2 CPU(s) do not fit", "cpus_per_task")
    assert slurm_cluster.run("squeue", "-h").stdout == ""


# ------------------------------------------------------------------------------ no cluster

def test_a_task_shape_becomes_sbatch_options(tmp_path):
    from sslbench.runs.sbatch import sbatch_lines, task_shape

    cpu = {"cpus_per_task": 3, "time": 10}
    assert task_shape(cpu, 1).parameters(cpu) == {"nodes": 1, "ntasks_per_node": 1,
                                                  "srun_args": []}
    assert task_shape(cpu, 4).parameters(cpu) == {
        "nodes": 1, "ntasks_per_node": 4, "srun_args": ["--kill-on-bad-exit=1"]}
    lines = sbatch_lines(cpu, tmp_path, 2, shape=task_shape(cpu, 4))
    assert {"#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=4", "#SBATCH --cpus-per-task=3",
            "#SBATCH --array=0-1%2"} <= set(lines), lines
    gpu = {"gpus_per_node": 4}
    assert task_shape(gpu, 1).parameters(gpu)["gpus_per_node"] == 4  # the user's, per task
    assert task_shape(gpu, 2).parameters(gpu) == {  # one node, one GPU a task
        "nodes": 1, "ntasks_per_node": 2, "gpus_per_node": 2,
        "srun_args": ["--kill-on-bad-exit=1"]}
    assert task_shape(gpu, 8).parameters(gpu) == {  # whole nodes: 2 x 4
        "nodes": 2, "ntasks_per_node": 4, "gpus_per_node": 4,
        "srun_args": ["--kill-on-bad-exit=1"]}
    assert {"#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4"} \
        <= set(sbatch_lines(gpu, tmp_path, 1, shape=task_shape(gpu, 8)))
    with pytest.raises(ConfigError, match="devices_per_run 6 does not fill whole nodes of "
                       "gpus_per_node = 4: use a multiple of 4"):
        task_shape(gpu, 6)


def test_task_groups_are_checked_against_the_partition_s_nodes(monkeypatch):
    """sinfo's nodes (CPUs, gres) against each task shape: a CPU group fits on one node, a GPU
    group on enough nodes with that many GPUs; where sinfo cannot tell, sbatch will."""
    from sslbench.runs import sbatch

    nodes: list | None = [(64, "gpu:a100:4(S:0-1)"), (8, "(null)")]
    monkeypatch.setattr(sbatch, "_sinfo", lambda options: nodes)
    assert sbatch._gpus("gpu:a100:4(S:0-1),gpu:t4:2") == 6
    gpu = {"gpus_per_node": 4, "partition": "big"}
    sbatch.check_cluster(gpu, [1, 2, 4])
    with pytest.raises(ConfigError, match=r"^devices_per_run 8: 2 node\(s\) x 4 GPU\(s\) do not "
                       r"fit in partition big: 1 of its nodes have 4 GPUs \(sinfo\): lower "
                       r"devices_per_run \(--devices-per-run N\)"):
        sbatch.check_cluster(gpu, [1, 8])
    nodes = [(64, "gpu:4"), (64, "gpu:4")]
    sbatch.check_cluster(gpu, [8])
    sbatch.check_cluster({"cpus_per_task": 16}, [4])
    with pytest.raises(ConfigError, match=r"^devices_per_run 4: 4 tasks x 17 CPU\(s\) do not "
                       r"fit on one node of the cluster, whose nodes have at most 64 CPUs"):
        sbatch.check_cluster({"cpus_per_task": 17}, [4])
    nodes = None
    sbatch.check_cluster({"cpus_per_task": 17}, [4])


def test_each_task_derives_its_rank_environment_from_slurm(monkeypatch):
    """What SLURM_* says (as srun sets it for the second task of a 2-node x 2-task group),
    through submitit's JobEnvironment, in torch.distributed's env:// variables."""
    from sslbench.runs.taskgroup import RankGroup, master_port

    slurm = {"SLURM_JOB_ID": "4242", "SLURM_PROCID": "3", "SLURM_NTASKS": "4",
             "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_JOB_NUM_NODES": "2",
             "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_RESTART_COUNT": "1",
             "SUBMITIT_EXECUTOR": "slurm"}
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    group = RankGroup.from_environment()
    assert (group.rank, group.size, group.local_rank, group.nodes, group.per_node,
            group.master) == (3, 4, 1, 2, 2, "gpu07")
    assert group.scheduler_id() == "slurm:gpu07:job4242.1"
    port = master_port("4242", 2)
    assert group.env(2) == {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
                            "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "gpu07",
                            "MASTER_PORT": str(port)}
    assert group.env(2, rank=0, local_rank=0)["RANK"] == "0"
    # Every rank computes the same port; another attempt (or job) another one; all below
    # Linux's ephemeral ports.
    assert port == master_port("4242", 2) != master_port("4242", 3) != master_port("4243", 3)
    assert all(10000 <= master_port(str(j), a) < 30000 for j in (0, 1999, 10**9) for a in
               range(12))
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert RankGroup.from_environment().rank == 0


def test_submitit_local_refuses_runs_of_several_processes(cli, home):
    (home / "same.toml").write_text(tiny_simclr_sweep())
    result = cli("sweep", "same.toml", "--devices-per-run", "2", "--backend", "submitit-local")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: devices_per_run 2: --backend submitit-local starts one process per task: use "
        "--backend slurm (one task per process) or local (torchrun)"]
    assert not (home / "db").exists() and not (home / "slurm").exists()


class _FileStore:
    """The store as a follower reads it, from a JSON file that the test and the workers write:
    ``{"status", "attempt", "owner", "ended"}``."""

    url = "sqlite:///unused.sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    def _state(self) -> dict:
        return json.loads(self.path.read_text())

    def get_run(self, run_id: str):
        state = self._state()
        return SimpleNamespace(run_id=run_id, status=state["status"], attempts=state["attempt"])

    def attempt_details(self, run_id: str) -> list[dict]:
        state = self._state()
        return [{"attempt": state["attempt"], "scheduler_id": state["owner"]}]

    def schedulers(self, *, running_only: bool = True) -> list:
        state = self._state()
        return [SimpleNamespace(scheduler_id=state["owner"],
                                ended_at="now" if state["ended"] else None)]


def test_a_follower_takes_the_attempt_number_from_the_row_its_leader_claimed():
    """The run's attempt count, read just before rank 0 claims attempt 2, still says 1: the
    follower must join attempt 2 (the latest row is its leader's), never attempt 1 (another
    scheduler's)."""
    from sslbench.runs.taskgroup import _claimed

    class Racing:
        def get_run(self, run_id):
            return SimpleNamespace(status="running", attempts=1)

        def attempt_details(self, run_id):
            return [{"attempt": 1, "scheduler_id": "other"}, {"attempt": 2, "scheduler_id": "me"}]

    assert _claimed(Racing(), "run", "me") == 2
    assert _claimed(Racing(), "run", "other") is None


def test_a_follower_joins_the_attempts_of_its_rank_0_only_and_ends_with_it(home, monkeypatch):
    """Rank 1 ignores an attempt another scheduler claimed, starts its process of each attempt
    its rank 0 claims (with the group's environment), kills one that outlives its attempt, and
    returns when rank 0's scheduler has ended."""
    from sslbench.runs import taskgroup
    from sslbench.runs.taskgroup import RankGroup, follow, master_port

    monkeypatch.setattr(taskgroup, "GRACE_S", 0.3)
    group = RankGroup(rank=1, size=2, local_rank=1, nodes=1, master="n1", job_id="77")
    leader = group.scheduler_id()
    state = home / "state.json"

    def write(**values) -> None:  # whole, as a store's transaction is seen
        draft = state.with_suffix(".draft")
        draft.write_text(json.dumps({"status": "running", "attempt": 1, "owner": "other",
                                     "ended": False, **values}))
        os.replace(draft, state)

    write()  # attempt 1: another scheduler's (a plain `sslbench train`, say): not followed
    worker = f"""
import json, os, sys, time
print(os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["MASTER_ADDR"],
      os.environ["MASTER_PORT"], os.environ["OMP_NUM_THREADS"], flush=True)
if os.environ["SSLBENCH_ATTEMPT"] == "2":  # ends by itself; rank 0 claims attempt 3
    open({str(state)!r} + ".w", "w").write(json.dumps(
        {{"status": "running", "attempt": 3, "owner": {leader!r}, "ended": False}}))
    os.replace({str(state)!r} + ".w", {str(state)!r})
    os._exit(3)
time.sleep(60)  # attempt 3: stuck, as in a collective whose peer died
"""
    logs = {n: home / f"attempt-{n}.log" for n in (1, 2, 3)}
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.extend(follow(
        _FileStore(state), "run", group, [sys.executable, "-c", worker], logs.__getitem__,
        env={"OMP_NUM_THREADS": "3"}, poll_s=0.05)))
    thread.start()
    time.sleep(0.5)
    assert not any(log.exists() for log in logs.values())
    write(attempt=2, owner=leader)
    deadline = time.monotonic() + 60
    while "\n" not in (logs[3].read_text() if logs[3].exists() else ""):
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)
    write(attempt=3, owner=leader, status="interrupted")  # rank 0's attempt 3 is over
    time.sleep(1.5)
    write(attempt=3, owner=leader, status="interrupted", ended=True)
    thread.join(30)
    assert not thread.is_alive() and codes == [3, -signal.SIGKILL]
    for attempt in (2, 3):
        assert logs[attempt].read_text().split() == ["1", "2", "n1",
                                                     str(master_port("77", attempt)), "3"]
    assert not logs[1].exists()
