"""Sweeps on a real Slurm cluster: one node started from Debian's slurm-wlm and munge by the
``slurm_cluster`` fixture (tests/conftest.py), the runs real tiny trainings started through the
real command line. Tasks sharing the node train at once, a refused submission is one line and
leaves the store as it was, scancel checkpoints and the same sweep resumes, the time-limit
warning (USR2) requeues the task and the run completes once, a failed run fails its task, the
PostgreSQL password is never written, and bad input is refused before anything is submitted."""

from __future__ import annotations

import os
import re
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest

from sslbench.db import Store
from tests.conftest import run_cli
from tests.test_postgres import SECRET_ROLE, postgres_password, postgres_url  # noqa: F401

pytest.importorskip("submitit", reason="the Slurm backend needs submitit "
                    "(pip install 'sslbench[slurm]')")


def tiny_image_folder(data: Path) -> Path:
    """An image folder of two classes, four 32x32 PNGs each, in train and val."""
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("a", "b"):
            (data / split / cls).mkdir(parents=True)
            for k in range(4):
                Image.new("RGB", (32, 32), (k * 60, 0, 0)).save(data / split / cls / f"{k}.png")
    return data


def sweep_file(home: Path, name: str, *, seeds: str = "[0]", epochs: int = 1,
               samples: int = 128, fixed: str = "", slurm: str = "") -> Path:
    """A sweep of the tiny SimCLR run (tests/conftest.TINY_TRAIN's, 1 epoch by default)."""
    path = home / f"{name}.toml"
    path.write_text(f"""
name = "{name}"
[fixed]
method = "simclr"
backbone = "small"
projector = "64-d"
dim = 16
epochs = {epochs}
batch_size = 64
lr = 0.3
{fixed or f'dataset = "shapes"{chr(10)}train_samples = {samples}'}
[grid]
seed = {seeds}
[eval]
protocols = []
[slurm]
cpus_per_task = 1
time = "0:10:00"
{slurm}
""")
    return path


def submitted(result) -> list[str]:
    """The job ids a `sweep --backend slurm` printed."""
    assert result.returncode == 0, result.stderr
    return re.findall(r"\b\d+(?:_\d+)?\b", result.stdout.split("submitted", 1)[1].split("(")[1])


def wait_for_jobs(cluster, timeout: float = 240) -> None:
    """Until the controller has no pending or running job."""
    deadline = time.monotonic() + timeout
    while cluster.run("squeue", "-h", "-o", "%i").stdout.strip():
        assert time.monotonic() < deadline, cluster.run("squeue").stdout
        time.sleep(0.2)


def job(cluster, job_id: str) -> dict[str, str]:
    """``scontrol show job``'s fields of one job (``JobState``, ``ExitCode``, ``Restarts``)."""
    text = cluster.run("scontrol", "show", "job", "-o", job_id).stdout
    return dict(re.findall(r"(\w+)=(\S*)", text))


#: Seconds a requeued job stays pending before a test starts it (see requeued_once).
REQUEUE_SETTLE_S = 3.0


def requeued_once(cluster, home: Path, job_id: str, run_id: str, timeout: float = 120) -> None:
    """Job ``job_id``, requeued, completes, and so does its run, which was interrupted once.
    A requeued job starts 2 minutes later (Slurm's fixed delay): it is started sooner, once
    no job on the node is still completing and a few seconds have passed since it was requeued.
    Started at once, such a launch on CI's loaded cores failed with exit 1 before any of its
    code ran: the node may still be tearing down the job's last run, or the launch may meet
    the credential Slurm revoked at the requeue (revocations have one-second resolution)."""
    deadline, moved, pending_since = time.monotonic() + timeout, False, None
    while True:
        fields = job(cluster, job_id)
        if fields.get("JobState") == "PENDING" and fields.get("Reason") == "BeginTime":
            pending_since = pending_since or time.monotonic()
            settled = (time.monotonic() - pending_since >= REQUEUE_SETTLE_S
                       and not cluster.run("squeue", "-h", "-t", "CG", "-o", "%i").stdout.strip())
            moved = settled and cluster.run("scontrol", "update", f"JobId={job_id}",
                                            "StartTime=now", check=False).returncode == 0
        elif moved:
            break
        assert time.monotonic() < deadline, fields
        time.sleep(0.2)
    wait_for_jobs(cluster)
    fields = job(cluster, job_id)
    assert (fields["JobState"], fields["Restarts"], fields["ExitCode"]) == ("COMPLETED", "1",
                                                                            "0:0")
    with store_of(home) as store:
        assert [a["status"] for a in store.attempt_details(run_id)] == ["interrupted",
                                                                         "completed"]


def store_of(home: Path) -> Store:
    return Store.open(f"sqlite:///{home / 'db' / 'sslbench.sqlite'}", create=False)


def stop_worker_at_first_checkpoint(home: Path, run_id: str, timeout: float = 120) -> int:
    """SIGSTOPs the run's worker as soon as its first checkpoint is written, so that what the
    test sends next -- not the end of training -- is what stops it; returns the pid."""
    deadline = time.monotonic() + timeout
    checkpoint = home / "runs" / run_id / "checkpoint.pt"
    with store_of(home) as store:
        while not checkpoint.exists():
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        pid = store.get_run(run_id).pid
    os.kill(pid, signal.SIGSTOP)
    assert not (checkpoint.parent / "backbone.pt").exists(), "the run ended before the stop"
    return pid


def run_ids(home: Path, name: str) -> list[str]:
    with store_of(home) as store:
        return [r.run_id for r in store.runs_tagged(f"sweep:{name}")]


# ------------------------------------------------------------------------------ the node

@pytest.mark.slow
def test_tasks_that_share_a_node_train_at_once(slurm_cluster, home):
    """Two one-CPU tasks on the 2-CPU node: their runs' attempts overlap in time, each booked in
    the ledger under its own allocation; the tasks end COMPLETED; `runs watch` shows each run's
    job; the sweep folder is private."""
    sweep = sweep_file(home, "pair", seeds="[0, 1]")
    jobs = submitted(run_cli(["sweep", sweep, "--backend", "slurm"], home))
    assert len(jobs) == 2
    wait_for_jobs(slurm_cluster)
    with store_of(home) as store:
        runs = store.runs_tagged("sweep:pair")
        assert [r.status for r in runs] == ["completed", "completed"]
        attempts = [store.attempt_details(r.run_id)[-1] for r in runs]
        tags = [[t for t in r.tags if t.startswith("slurm:")] for r in runs]
    spans = [(datetime.fromisoformat(a["started_at"]), datetime.fromisoformat(a["ended_at"]))
             for a in attempts]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], spans  # they overlap
    cluster_name = slurm_cluster.conf.read_text().split("ClusterName=")[1].split()[0]
    devices = sorted(a["device"] for a in attempts)
    ids = sorted(job(slurm_cluster, j)["JobId"] for j in jobs)
    assert devices == [f"slurm:{cluster_name}:{i}/cpu" for i in ids]
    assert sorted(t for ts in tags for t in ts) == sorted(f"slurm:{j}" for j in jobs)
    for j in jobs:
        assert (job(slurm_cluster, j)["JobState"], job(slurm_cluster, j)["ExitCode"]) == \
            ("COMPLETED", "0:0")
    watch = run_cli(["runs", "watch", "--once", "--sweep", "pair"], home)
    assert all(f"{j} COMPLETED" in watch.stdout for j in jobs), watch.stdout
    for path in (home / "slurm").rglob("*"):
        if not path.is_symlink():
            assert path.stat().st_mode & 0o777 == (0o700 if path.is_dir() else 0o600), path


@pytest.mark.slow
def test_a_refused_submission_is_one_line_and_leaves_the_store_as_it_was(slurm_cluster, home,
                                                                         cli):
    sweep_file(home, "refused")
    assert cli("sweep", home / "refused.toml", "--queue-only").exit_code == 0  # seed 0 queued
    with store_of(home) as store:
        before = {r.run_id: (r.status, r.attempts, r.attempt_limit, r.tags)
                  for r in store.find_runs()}
    sweep = sweep_file(home, "refused", seeds="[0, 1]")
    result = run_cli(["sweep", sweep, "--backend", "slurm", "--slurm", "partition=gpu"], home)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: sbatch refused the job: invalid partition "
                                    "specified: gpu"), result.stderr
    assert "change partition" in result.stderr
    with store_of(home) as store:
        after = {r.run_id: (r.status, r.attempts, r.attempt_limit, r.tags)
                 for r in store.find_runs()}
    assert after == before and len(before) == 1  # seed 1 was never written
    assert not (home / "slurm").exists() or list((home / "slurm").rglob("*")) == []
    assert slurm_cluster.run("squeue", "-h").stdout == ""


@pytest.mark.slow
def test_scancel_checkpoints_and_the_same_sweep_resumes(slurm_cluster, home):
    """The first task has 2 CPUs, so the run trains with 2 threads; the run resumes in a
    1-CPU task with the 2 threads it recorded (one numeric however it is executed)."""
    sweep = sweep_file(home, "cancel", epochs=3, samples=256)
    (first,) = submitted(run_cli(["sweep", sweep, "--backend", "slurm", "--slurm",
                                  "cpus_per_task=2"], home))
    (run_id,) = run_ids(home, "cancel")
    stop_worker_at_first_checkpoint(home, run_id)
    slurm_cluster.run("scancel", first)  # Slurm sends SIGCONT, then SIGTERM, to the step
    wait_for_jobs(slurm_cluster)
    assert job(slurm_cluster, first)["JobState"] == "CANCELLED"
    with store_of(home) as store:
        assert store.get_run(run_id).status == "interrupted"
    (second,) = submitted(run_cli(["sweep", sweep, "--backend", "slurm"], home))
    wait_for_jobs(slurm_cluster)
    with store_of(home) as store:
        record = store.get_run(run_id)
        assert record.status == "completed"
        assert [a["status"] for a in store.attempt_details(run_id)] == ["interrupted",
                                                                         "completed"]
        assert sorted(store.metrics_frame(run_id, "epoch")["value"]) == [1.0, 2.0, 3.0]
        assert record.config["threads"] == record.numerics["cpu_threads"] == 2
        assert [t for t in record.tags if t.startswith("slurm:")] == [f"slurm:{first}",
                                                                       f"slurm:{second}"]
    assert job(slurm_cluster, second)["JobState"] == "COMPLETED"


@pytest.mark.slow
def test_the_time_limit_warning_requeues_the_task_and_the_run_completes_once(slurm_cluster,
                                                                              home):
    """USR2 (Slurm's warning before the time limit, submitit's --signal) mid-run: the worker
    checkpoints, submitit requeues the same job, the requeued task resumes the run."""
    sweep = sweep_file(home, "usr2", epochs=3, samples=256)
    (job_id,) = submitted(run_cli(["sweep", sweep, "--backend", "slurm"], home))
    (run_id,) = run_ids(home, "usr2")
    pid = stop_worker_at_first_checkpoint(home, run_id)
    slurm_cluster.run("scancel", "--signal=USR2", job_id)
    _wait_for_pending_sigterm(pid)  # the task forwarded its stop to the (stopped) worker
    os.kill(pid, signal.SIGCONT)
    requeued_once(slurm_cluster, home, job_id, run_id)
    with store_of(home) as store:
        assert sorted(store.metrics_frame(run_id, "epoch")["value"]) == [1.0, 2.0, 3.0]


def _wait_for_pending_sigterm(pid: int, timeout: float = 30) -> None:
    """Until SIGTERM is pending for the stopped process ``pid`` (/proc/PID/status)."""
    deadline = time.monotonic() + timeout
    while True:
        status = Path(f"/proc/{pid}/status").read_text()
        pending = [int(v, 16) for v in re.findall(r"^(?:SigPnd|ShdPnd):\s*(\w+)", status, re.M)]
        if any(p & (1 << (signal.SIGTERM - 1)) for p in pending):
            return
        assert time.monotonic() < deadline, f"no SIGTERM reached worker {pid}: {status}"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_task_whose_run_failed_exits_non_zero(slurm_cluster, home, tmp_path):
    """The dataset is there when the sweep is checked and gone when the task starts (a setup
    line removes it): the run fails, and so does its task, in Slurm's eyes too."""
    data = tiny_image_folder(tmp_path / "data")
    sweep = sweep_file(home, "failing", fixed=f'dataset = "imagefolder"\ndata_root = "{data}"\n'
                       "image_size = 32", slurm=f'setup = ["rm -rf {data}"]')
    sweep.write_text(sweep.read_text().replace("batch_size = 64", "batch_size = 4"))
    (job_id,) = submitted(run_cli(["sweep", sweep, "--backend", "slurm"], home))
    wait_for_jobs(slurm_cluster)
    fields = job(slurm_cluster, job_id)
    assert (fields["JobState"], fields["ExitCode"]) == ("FAILED", "1:0")
    with store_of(home) as store:
        (run,) = store.runs_tagged("sweep:failing")
        assert run.status == "failed" and "does not exist" in run.error
    watch = run_cli(["runs", "watch", "--once", "--sweep", "failing"], home)
    assert f"{job_id} FAILED" in watch.stdout, watch.stdout


@pytest.mark.slow
def test_the_store_password_is_never_written(slurm_cluster, postgres_password, home):  # noqa: F811
    """A PostgreSQL store whose role must give its password (scram): the task reaches it (the
    run completes) while neither the sweep folder, nor anything else under SSLBENCH_HOME, nor
    the job's command line, nor the command recorded with the run holds the password."""
    url, password = postgres_password
    full = url.replace(f"{SECRET_ROLE}@", f"{SECRET_ROLE}:{password}@")
    sweep = sweep_file(home, "secret")
    (job_id,) = submitted(run_cli(["--db", full, "sweep", sweep, "--backend", "slurm"], home))
    wait_for_jobs(slurm_cluster)
    assert job(slurm_cluster, job_id)["JobState"] == "COMPLETED"
    with Store.open(full) as store:
        (run,) = store.runs_tagged("sweep:secret")
        assert run.status == "completed"
        assert password not in " ".join(run.command) and "***" in " ".join(run.command)
    secret = password.encode()
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.parent.name == "secret" for p in files)  # the task files are there...
    assert [p for p in files if secret in p.read_bytes()] == []  # ...and hold no password
    assert password not in slurm_cluster.run("scontrol", "show", "job", job_id).stdout


@pytest.mark.slow
def test_a_refused_tuning_submission_leaves_no_run_queued(slurm_cluster, home):
    """A study's trial is planned and queued before its array is submitted: when sbatch refuses
    it, the trial's runs go again (the study keeps the trial for the next `tune` to adopt)."""
    from tests.test_tune import GRID, write_spec

    spec = write_spec(home, "refusedtune", GRID + '[objective]\nmetric = "online_top1"\n')
    result = run_cli(["tune", spec, "--backend", "slurm", "--slurm", "partition=gpu"], home)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "sbatch refused the job: invalid partition specified: gpu" in result.stderr
    with store_of(home) as store:
        assert store.find_runs() == []
    assert slurm_cluster.run("squeue", "-h").stdout == ""


# ------------------------------------------------------------------------------ bad input

def _refused(result, home: Path, *words: str) -> None:
    assert result.returncode == 1, result.stdout
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert all(w in result.stderr for w in words), result.stderr
    assert not (home / "slurm").exists() and not (home / "db").exists()  # nothing written


@pytest.mark.slow
def test_bad_submissions_are_refused_before_anything_is_submitted(slurm_cluster, home,
                                                                   tmp_path):
    sweep = sweep_file(home, "bad")
    _refused(run_cli(["sweep", sweep, "--backend", "slurm", "--slurm", "gpus_per_node=1"],
                     home), home, "no GPUs", "gpus_per_node")
    _refused(run_cli(["sweep", sweep, "--backend", "slurm", "--slurm",
                      "sbatch_args=--reservaton=maint"], home), home,
             "unknown sbatch option --reservaton")
    password = tmp_path / "password"
    password.write_text("hunter2\n")
    password.chmod(0o644)
    env_file = {"SSLBENCH_DB_PASSWORD_FILE": str(password)}
    result = run_cli(["--db", "postgresql+psycopg://someone@127.0.0.1:1/db", "sweep", sweep,
                      "--backend", "slurm"], home, env=env_file)
    _refused(result, home, "readable by others (mode 0644)", f"chmod 600 {password}")
    assert slurm_cluster.run("squeue", "-h").stdout == ""
