"""The Slurm backend through submitit's LocalExecutor: a sweep as a job array whose tasks are
requeued after a timeout warning (SIGUSR2) and resume; grouping of runs into tasks."""

from __future__ import annotations

import re
import sys

import pytest

from sslbench.db import Store
from tests.conftest import assert_imports_none_of

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
    executor = make_executor("submitit-local", tmp_path / "slurm", {"time": 5},
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


# ------------------------------------------------------------------------------ allocations

def test_a_cpu_task_owns_its_cpus_under_its_allocations_name():
    from sslbench.runs.devices import allocation_pool

    assert allocation_pool({}) is None  # not under Slurm: the machine's own pool
    pool = allocation_pool({"SLURM_JOB_ID": "17", "SLURM_CPUS_PER_TASK": "3",
                            "SLURM_CLUSTER_NAME": "c"})
    assert pool.is_cpu and pool.total_slots == 1
    assert pool.ledger_key("cpu") == "slurm:c:17/cpu"
    assert pool.worker_env("cpu") == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3",
                                      "CUDA_VISIBLE_DEVICES": ""}


def test_a_task_starts_without_torch_or_pandas():
    """What a Slurm task imports before its worker starts (the scheduler, the store) is the
    task's start-up on every wave of an array: neither torch nor pandas is among it."""
    assert_imports_none_of("import sslbench.runs.slurm, sslbench.runs.scheduler, "
                           "sslbench.runs.control\nfrom sslbench.db import Store",
                           "torch", "pandas")


def test_a_task_starts_its_own_and_its_pulled_run_without_torch(tmp_path):
    """Not just its imports: the task's whole path to its workers -- store, reaper, allocation,
    scheduler, claim, spawn, and the pull of a sibling's run -- runs without torch (whose
    import would delay every task's first run by over a second; the workers import it)."""
    from tests.test_scheduler_local import FAKE_WORKER

    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    with Store.open(url) as store:
        for run_id, job in (("ownrun000001", "40_0"), ("sibling00001", "40_1")):
            store.upsert_run(run_id=run_id, kind="pretrain", command=[], env={}, config={})
            store.add_tags(run_id, [f"slurm:{job}"])
    assert_imports_none_of(
        "import os\n"
        "os.environ.update(SUBMITIT_EXECUTOR='slurm', SLURM_ARRAY_JOB_ID='40', "
        "SLURM_ARRAY_TASK_ID='0', SLURM_JOB_ID='41', SLURM_CPUS_PER_TASK='1', "
        "SLURM_CLUSTER_NAME='c')\n"
        "from sslbench.runs.slurm import SweepTask\n"
        f"task = SweepTask(['ownrun000001'], {url!r}, {str(tmp_path)!r}, "
        f"worker=[sys.executable, {str(script)!r}], "
        "array=[['ownrun000001'], ['sibling00001']])\n"
        "assert task() == {'ownrun000001': 'completed', 'sibling00001': 'completed'}\n",
        "torch", "pandas")
    with Store.open(url) as store:
        assert store.get_run("sibling00001").tags[-1] == "slurm:40_0"  # pulled by task 0


def test_a_cpu_tasks_cpus_become_its_runs_threads_unless_the_sweep_sets_them():
    from sslbench.runs.sbatch import run_defaults

    assert run_defaults({"cpus_per_task": 4}) == {"threads": 4}
    assert run_defaults({"cpus_per_task": 1}) == run_defaults({}) == {}
    assert run_defaults({"cpus_per_task": 8, "gpus_per_node": 1}) == {}  # loaders' CPUs


def test_a_gpu_task_uses_exactly_the_gpus_slurm_gave_it():
    from sslbench.runs.devices import allocation_pool

    # Slurm confines the devices and renumbers them from 0 (cgroup ConstrainDevices)...
    confined = allocation_pool({"SLURM_JOB_ID": "5", "SLURM_STEP_GPUS": "2,3",
                                "CUDA_VISIBLE_DEVICES": "0,1", "SLURM_CPUS_PER_TASK": "8"})
    assert confined.devices == ("0", "1")
    assert [confined.worker_env(d)["CUDA_VISIBLE_DEVICES"] for d in confined.devices] == \
        ["0", "1"]
    assert [confined.ledger_key(d) for d in confined.devices] == ["2", "3"]  # node's indices
    assert confined.ledger_key("0,1") == "2,3"  # a run of two processes books both
    assert confined.worker_env("0")["OMP_NUM_THREADS"] == "4"  # 8 CPUs, 2 slots
    # ... or only names them: the worker is pointed at GPU 6, never at a GPU 0 it was not given
    plain = allocation_pool({"SLURM_JOB_ID": "6", "SLURM_JOB_GPUS": "6",
                             "CUDA_VISIBLE_DEVICES": "6"})
    assert plain.worker_env("0")["CUDA_VISIBLE_DEVICES"] == "6" and plain.ledger_key("0") == "6"


def test_the_ledger_lets_tasks_of_one_node_run_together_and_never_shares_a_gpu():
    from sslbench.runs.devices import allocation_pool, build_pool, pick_slots

    first = allocation_pool({"SLURM_JOB_ID": "1", "SLURM_CLUSTER_NAME": "c"})
    second = allocation_pool({"SLURM_JOB_ID": "2", "SLURM_CLUSTER_NAME": "c"})
    local = build_pool(None, workers=1, cores=2)
    booked = {first.ledger_key("cpu"): {0: "run-a"}}
    assert pick_slots(second, booked, exclusive=False) == ("cpu", [0])  # not queued behind
    assert pick_slots(local, booked, exclusive=False) == ("cpu", [0])
    assert pick_slots(first, booked, exclusive=False) is None  # its own slot is taken
    assert pick_slots(second, {"cpu": {0: "local-run"}}, exclusive=False) == ("cpu", [0])
    # A GPU is one GPU for everyone on the host: a local scheduler that sees GPU 2 as its
    # device 0 and a Slurm task given GPU 2 book the same ledger entry.
    gpu_task = allocation_pool({"SLURM_JOB_ID": "3", "SLURM_STEP_GPUS": "2",
                                "CUDA_VISIBLE_DEVICES": "0"})
    workstation = build_pool("0", cuda_count=1, environ={"CUDA_VISIBLE_DEVICES": "2"})
    taken = {workstation.ledger_key("0"): {0: "local-run"}}
    assert pick_slots(gpu_task, taken, exclusive=False) is None


# ------------------------------------------------------------------------------ sbatch options

def test_slurm_options_are_checked_and_become_sbatch_options(tmp_path):
    from sslbench.errors import ConfigError
    from sslbench.runs.sbatch import check_table, parse_time, refusal, sbatch_lines, with_flags

    assert [parse_time("t", v) for v in (90, "90", "1:30", "2:00:00", "1-0", "1-02:03",
                                         "1-02:03:04")] == [90, 90, 2, 120, 1440, 1563, 1564]
    for bad in ("abc", "1:2:3:4", "", "0", "1h"):
        with pytest.raises(ConfigError, match="Slurm time limit|zero"):
            parse_time("t", bad)
    table = check_table("f.toml [slurm]", {"partition": "p", "timeout_min": 30, "mem_gb": 4,
                                           "sbatch_args": ["--reservation=r"]})
    assert table == {"partition": "p", "time": 30, "mem": "4G",
                     "sbatch_args": ["--reservation=r"]}
    options = with_flags(table, ["time=1:00:00", "sbatch_args=--nice=5", "cpus_per_task=2"])
    assert options["time"] == 60 and options["cpus_per_task"] == 2
    assert options["sbatch_args"] == ["--reservation=r", "--nice=5"]
    lines = sbatch_lines(options, tmp_path, 3)
    for line in ("--array=0-2%3", "--partition=p", "--time=60", "--mem=4G", "--cpus-per-task=2",
                 "--reservation=r", "--nice=5", "--hold", "--signal=USR2@90"):
        assert f"#SBATCH {line}" in lines
    for bad, message in (({"partiton": "p"}, "unknown Slurm option 'partiton'"),
                         ({"time": True}, "time must be str or int"),
                         ({"mem": "4 GB"}, "not a Slurm memory size"),
                         ({"cpus_per_task": 0}, "must be >= 1"),
                         ({"sbatch_args": ["reservation=r"]}, "not an sbatch option"),
                         ({"sbatch_args": ["--partition=p"]}, "set it as partition"),
                         ({"sbatch_args": ["--array=1-3"]}, "sslbench sets --array itself"),
                         ({"time": 5, "timeout_min": 5}, "time is given twice")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            check_table("f.toml [slurm]", bad)
    with pytest.raises(ConfigError, match="use --slurm KEY=VALUE"):
        with_flags({}, ["partition"])
    text = refusal("sbatch: error: Batch job submission failed: Invalid account or "
                   "account/partition combination specified")
    assert text.count("\n") == 0 and "Invalid account" in text and "change account" in text


def test_slurm_flags_and_bad_options_through_the_command_line(cli, home):
    """Refused in one line before anything is written (no store, no sweep folder); a dry run
    shows the exact sbatch options."""
    from tests.conftest import tiny_simclr_sweep

    sweep = home / "s.toml"
    sweep.write_text(tiny_simclr_sweep(seeds="[0, 1]") + '[slurm]\npartition = "cpu"\n')
    cases = [(["--slurm", "partition=x"], "--slurm applies to --backend slurm"),
             (["--backend", "slurm", "--slurm", "time=soon"], "is not a Slurm time limit"),
             (["--backend", "slurm", "--slurm", "partiton=x"], "unknown Slurm option")]
    for args, message in cases:
        result = cli("sweep", sweep, *args)
        assert result.exit_code == 1 and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
    bad = home / "bad.toml"
    bad.write_text(tiny_simclr_sweep() + '[slurm]\nqos = "q"\ntime = "1:2:3:4"\n')
    result = cli("sweep", bad, "--backend", "slurm")
    assert result.exit_code == 1 and "bad.toml [slurm] time" in result.stderr
    dry = cli("sweep", sweep, "--backend", "slurm", "--dry-run", "--slurm", "time=2:00:00",
              "--slurm", "sbatch_args=--exclusive")
    assert dry.exit_code == 0, dry.stderr
    for line in ("--array=0-1%2", "--partition=cpu", "--time=120", "--exclusive", "--hold"):
        assert f"#SBATCH {line}" in dry.stdout, dry.stdout
    assert not (home / "db").exists() and not (home / "slurm").exists()


def test_the_recorded_command_line_masks_a_store_password(monkeypatch):
    from sslbench.cli.common import command_line

    monkeypatch.setattr(sys, "argv", ["sslbench", "--db", "postgresql+psycopg://u:s3cret@h/db",
                                      "--db=postgresql://v:other@h/db", "sweep", "x.toml"])
    recorded = " ".join(command_line())
    assert "s3cret" not in recorded and "other" not in recorded
    assert "postgresql+psycopg://u:***@h/db" in recorded and "--db=postgresql://v:***@h/db" in \
        recorded


def test_a_store_url_is_split_from_its_password():
    from sslbench.db.engine import split_password

    assert split_password("postgresql+psycopg://u:s%40cret@h:5/db?sslmode=require") == (
        "postgresql+psycopg://u@h:5/db?sslmode=require", "s@cret")
    assert split_password("sqlite:////x/s.sqlite") == ("sqlite:////x/s.sqlite", None)


def test_runs_watch_says_what_slurm_knows_and_no_more(monkeypatch, tmp_path):
    """A job the controller has forgotten has ended; where Slurm cannot be asked (no squeue
    here) the job id is shown without a state, never a guessed one."""
    from sslbench.runs.slurm import job_states
    from sslbench.runs.watch import _job_state

    assert _job_state({"5_0": "RUNNING"}, "5_0") == "RUNNING"
    assert _job_state({}, "5_0") == "ended"
    assert _job_state(None, "5_0") is None and _job_state({}, None) is None
    monkeypatch.setenv("PATH", str(tmp_path))  # no squeue
    assert job_states(["5_0"]) is None and job_states([]) == {}
