"""Runs of several processes from a sweep (``devices_per_run``), on CPU with gloo: the local
scheduler reserves every slot and starts torchrun; a kill -9 of one process ends the attempt as
'killed' and the next sweep resumes it to the result of a plain ``torchrun ... sslbench train``;
a waiting 2-slot run is not starved by 1-slot runs; bad input is refused before anything is
queued.
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

from sslbench.cli.sweep import _check_processes
from sslbench.db import Store
from sslbench.errors import ConfigError
from sslbench.runs import worker
from sslbench.runs.devices import build_pool, pick_places
from sslbench.runs.plan import launch_processes
from sslbench.runs.scheduler import LocalScheduler
from tests.conftest import TINY_SIMCLR, cli_env, invoke_in, run_cli, tiny_simclr_sweep
from tests.test_resume import _final

# seed 0: TINY_SIMCLR's run in 2 processes; seed 1: a 1-process run beside it (one step).
MIXED = tiny_simclr_sweep(seeds="[0, 1]") + """
[[override]]
where = { seed = 0 }
set = { devices_per_run = 2 }

[[override]]
where = { seed = 1 }
set = { epochs = 1, train_samples = 64 }
"""


def _rank_of(pid: int) -> int:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return int(next(e for e in environ if e.startswith(b"RANK=")).split(b"=")[1])


def _ranks(sweep: subprocess.Popen) -> dict[int, int]:
    """{rank: pid} of the torchrun group the sweep's scheduler started (its only worker)."""
    agents = worker.child_pids(sweep.pid)
    assert len(agents) == 1, agents  # the 2-process run holds both slots: nothing else runs
    return {_rank_of(pid): pid for pid in worker.child_pids(agents[0])}


def assert_same_result(home: Path, reference: Path, run_id: str) -> None:
    """``run_id`` in ``home`` has exactly ``reference``'s metrics (wall-clock speed aside) and
    weights."""
    (m1, w1), (m2, w2) = _final(home, run_id), _final(reference, run_id)
    assert set(m1) == set(m2)
    for key, value in m2.items():
        if key[0] != "images_per_s":  # wall-clock speed differs, everything else must not
            assert m1[key] == value, key
    assert w1.keys() == w2.keys()
    for name in w2:
        assert w1[name].equal(w2[name]), name


@pytest.mark.slow
def test_a_two_process_run_killed_then_resumed_by_a_sweep_equals_torchrun_train(tmp_path):
    ref, home = tmp_path / "torchrun", tmp_path / "sweep"
    ref.mkdir(), home.mkdir()
    reference = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "sslbench", *TINY_SIMCLR, "--format", "json"],
        cwd=ref, env=cli_env(ref), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    (home / "mixed.toml").write_text(MIXED)
    dry = invoke_in(home, "sweep", "mixed.toml", "--dry-run", "--format", "json")
    rows = json.loads(dry.output)["runs"]
    assert [r["processes"] for r in rows] == [2, 1]
    run_id, single = rows[0]["run_id"], rows[1]["run_id"]

    sweep = subprocess.Popen([sys.executable, "-m", "sslbench", "sweep", "mixed.toml",
                              "--workers", "2", "--max-attempts", "1"], cwd=home,
                             env=cli_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    checkpoint = home / "runs" / run_id / "checkpoint.pt"
    deadline = time.time() + 240
    while not checkpoint.exists():
        assert sweep.poll() is None and time.time() < deadline, sweep.communicate()
        time.sleep(0.01)
    ranks = _ranks(sweep)
    for pid in ranks.values():  # frozen with one of its two epochs left
        os.kill(pid, signal.SIGSTOP)
    with Store.open(f"sqlite:///{home / 'db' / 'sslbench.sqlite'}") as store:
        assert store.reserved_slots() == {"cpu": {0: run_id, 1: run_id}}
        assert store.get_run(run_id).status == "running"
        assert store.get_run(run_id).numerics["processes"] == 2
    assert not (home / "runs" / run_id / "backbone.pt").exists()
    os.kill(ranks[1], signal.SIGKILL)
    os.kill(ranks[0], signal.SIGCONT)
    out, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 1, out + err  # one run killed, out of attempts
    with Store.open(f"sqlite:///{home / 'db' / 'sslbench.sqlite'}") as store:
        assert store.get_run(run_id).status == "killed"
        assert store.attempt_details(run_id)[0]["failure_class"] == "killed"
        assert store.get_run(single).status == "completed"

    # By hand in one process: refused in one line, the run untouched.
    by_hand = run_cli(TINY_SIMCLR, home)
    assert by_hand.returncode == 1
    assert by_hand.stderr.strip().splitlines() == [
        f"error: run {run_id} was started in 2 process(es), not 1: resume it the same way "
        "(torchrun --nproc-per-node 2 -m sslbench train ...; one run id, one result)"]

    again = run_cli(["sweep", "mixed.toml", "--workers", "2"], home)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"start  {run_id} attempt 2 on cpu (2 processes)" in again.stdout
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]
    assert f'"run_id": "{run_id}"' in out

    assert_same_result(home, ref, run_id)
    with Store.open(f"sqlite:///{home / 'db' / 'sslbench.sqlite'}") as store:
        attempts = store.attempt_details(run_id)
        assert [a["status"] for a in attempts] == ["killed", "completed"]
        assert store.get_run(run_id).numerics["processes"] == 2
        assert store.reserved_slots() == {}


# ------------------------------------------------------------------------------ scheduling

FAKE = r'''
import json, os, signal, sys, time
from sslbench.db import Store

run_id = sys.argv[1]
if os.environ.get("RANK", "0") != "0":  # the other processes of a group: work, write nothing
    time.sleep(0.3)
    sys.exit(0)
store = Store.open(os.environ["SSLBENCH_DB"])
store.set_status(run_id, "running", claim=int(os.environ["SSLBENCH_ATTEMPT"]))
if store.get_run(run_id).config.get("die") and os.environ["SSLBENCH_ATTEMPT"] == "1":
    os.kill(os.getpid(), signal.SIGKILL)  # rank 0 dies without recording an end
start = time.time()
slots = {d: sorted(s.values()) for d, s in store.reserved_slots().items()}
time.sleep(store.get_run(run_id).config["sleep"])
with open(os.environ["OUT_FILE"], "a") as fh:
    fh.write(json.dumps({"run": run_id, "start": start, "end": time.time(),
                         "world": os.environ.get("WORLD_SIZE", "1"), "slots": slots}) + "\n")
store.set_status(run_id, "completed")
'''


@pytest.mark.slow
def test_a_waiting_two_slot_run_is_not_starved_by_one_slot_runs(tmp_path, monkeypatch):
    """On 2 slots: a 1-slot run is running when the 2-slot run's turn comes, and three more
    1-slot runs wait behind it. They do not start on the free slot: the 2-slot run goes next,
    holding both slots, then they run."""
    monkeypatch.setenv("SSLBENCH_HOME", str(tmp_path))
    monkeypatch.setenv("OUT_FILE", str(tmp_path / "out.jsonl"))
    script = tmp_path / "fake.py"
    script.write_text(FAKE)
    store = Store.open(f"sqlite:///{tmp_path / 'store.sqlite'}")
    ids = []
    for i, sleep in enumerate([1.5, 0.3, 0.3, 0.3, 0.3]):
        ids.append(f"run{i:08d}")
        store.upsert_run(run_id=ids[-1], kind="pretrain", config={"sleep": sleep}, command=[],
                         env={})
    big = ids[1]
    report = LocalScheduler(store, build_pool(None, workers=2, cores=2),
                            command=lambda r: [sys.executable, str(script), r], poll_s=0.02,
                            beat_s=0.2, install_signals=False, processes={big: 2}).run(ids)
    assert set(report.outcomes.values()) == {"completed"}, report.reasons
    lines = {d["run"]: d for d in map(json.loads, (tmp_path / "out.jsonl").read_text()
                                       .splitlines())}
    assert lines[big]["world"] == "2" and lines[big]["slots"] == {"cpu": [big, big]}
    assert all(lines[r]["start"] > lines[big]["end"] for r in ids[2:]), lines
    assert store.attempt_details(big)[0]["device"] == "cpu"
    store.close()


@pytest.mark.slow
def test_a_group_whose_rank_0_died_is_killed_and_retried(tmp_path, monkeypatch):
    """torchrun's agent exits 1 whatever ended its group: the scheduler reads the cause (rank 0
    killed by signal 9) from the agent's report, so the attempt is 'killed' and retried."""
    monkeypatch.setenv("SSLBENCH_HOME", str(tmp_path))
    monkeypatch.setenv("OUT_FILE", str(tmp_path / "out.jsonl"))
    script = tmp_path / "fake.py"
    script.write_text(FAKE)
    store = Store.open(f"sqlite:///{tmp_path / 'store.sqlite'}")
    store.upsert_run(run_id="die00000", kind="pretrain", config={"sleep": 0.1, "die": True},
                     command=[], env={})
    report = LocalScheduler(store, build_pool(None, workers=2, cores=2),
                            command=lambda r: [sys.executable, str(script), r], poll_s=0.02,
                            beat_s=0.2, install_signals=False,
                            processes={"die00000": 2}).run(["die00000"])
    assert report.outcomes == {"die00000": "completed"} and report.retried == 1
    first, second = store.attempt_details("die00000")
    assert (first["status"], first["failure_class"], first["exit_code"]) == ("killed", "killed", 1)
    assert "the first of its processes to fail, with signal 9 (SIGKILL)" in first["error"]
    assert second["status"] == "completed"
    store.close()


def test_runs_of_several_devices_take_cpu_slots_or_whole_gpus():
    cpu = build_pool(None, workers=3, cores=3)
    assert pick_places(cpu, {"cpu": {1: "x"}}, 2) == [("cpu", 0), ("cpu", 2)]
    assert pick_places(cpu, {"cpu": {1: "x", 2: "y"}}, 2) is None
    gpus = build_pool("0,1,2", per_device=2, cuda_count=3, cores=4, environ={})
    assert pick_places(gpus, {"0": {1: "x"}}, 2) == [("1", 0), ("1", 1), ("2", 0), ("2", 1)]
    assert pick_places(gpus, {"0": {1: "x"}, "2": {0: "y"}}, 2) is None
    renamed = build_pool("1,2", cuda_count=3, cores=4, environ={"CUDA_VISIBLE_DEVICES": "4,5,7"})
    assert renamed.worker_env("1,2")["CUDA_VISIBLE_DEVICES"] == "5,7"
    assert (cpu.max_devices_per_run, gpus.max_devices_per_run) == (3, 3)


def test_devices_per_run_is_an_execution_setting_that_leaves_the_run_id_alone(tmp_path):
    from sslbench.runs.plan import build_plan
    from sslbench.runs.sweepfile import load_sweep

    path = tmp_path / "same.toml"
    path.write_text(tiny_simclr_sweep())
    one, two = (build_plan(load_sweep(path, sets)) for sets in ([], ["devices_per_run=2"]))
    assert [r.run_id for r in one.runs] == [r.run_id for r in two.runs]
    assert "devices_per_run" not in two.runs[0].config.to_dict()
    assert [r.processes for r in one.runs] == [1] and two.processes == {two.runs[0].run_id: 2}
    with pytest.raises(ConfigError, match="devices_per_run = '2' must be an integer"):
        load_sweep(path, ['devices_per_run="2"'])


def test_a_resume_keeps_the_recorded_process_count():
    assert launch_processes({}, 2) == 2  # never started: the sweep's devices_per_run
    assert launch_processes({"cpu_threads": 1, "processes": 2}, 1) == 2
    assert launch_processes({"cpu_threads": 1}, 2) == 1  # started before counts were recorded


def test_the_cause_of_a_torchrun_group_failure_is_read_from_its_log(tmp_path):
    log = tmp_path / "attempt-1.log"
    log.write_text("Failures:\n[1]:\n  rank      : 1 (local_rank: 1)\n  exitcode  : -15 (pid: 4)"
                   "\n-----\nRoot Cause (first observed failure):\n[0]:\n  rank      : 0\n"
                   "  exitcode  : -9 (pid: 3)  (SIGKILL)\n=====\n")
    assert worker.root_cause_exit(log, 1) == -9
    log.write_text("Traceback ...\nImportError: no module\n")
    assert worker.root_cause_exit(log, 1) == 1


# ------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("args, needle", [
    (["--devices-per-run", "4", "--workers", "2"],
     "devices_per_run 4 is more than the 2 CPU slot(s) (--workers N) this scheduler owns"),
    (["--devices-per-run", "3", "--workers", "4"],
     "--batch-size 64 does not split across 3 processes: use a multiple of 3"),
    (["--devices-per-run", "0"], "devices_per_run must be >= 1, got 0"),
    (["--devices-per-run", "2", "--backend", "submitit-local"],
     "devices_per_run 2: --backend submitit-local starts one process per task"),
    (["--devices-per-run", "6", "--set", "batch_size=48", "--backend", "slurm", "--slurm",
      "gpus_per_node=4"], "devices_per_run 6 does not fill whole nodes of gpus_per_node = 4"),
])
def test_runs_that_cannot_be_started_are_refused_before_anything_is_queued(cli, home, args,
                                                                             needle):
    (home / "same.toml").write_text(tiny_simclr_sweep())
    result = cli("sweep", "same.toml", *args)
    assert result.exit_code == 1
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert not (home / "db").exists() and not (home / "runs").exists()


def test_more_gpus_per_run_than_the_scheduler_owns_is_refused():
    pool = build_pool("0", cuda_count=2, cores=2, environ={})
    with pytest.raises(ConfigError, match=r"devices_per_run 2 is more than the 1 GPU\(s\)"):
        _check_processes({"run": 2}, "local", pool)
    _check_processes({"run": 1}, "local", pool)


def test_the_paper_sweep_trains_each_run_in_8_processes_and_a_small_host_is_told_how(
        cli, home, tmp_path):
    """table-s5 says 8 processes a run (the paper's 8 GPUs): its dry runs show them (on Slurm,
    one node of 8 tasks with a GPU each); a sweep on a host with fewer slots is refused in one
    line naming the flag that fits it, before anything is queued."""
    from PIL import Image

    image = Image.new("RGB", (8, 8))
    for split, count in (("train", 1024), ("val", 1)):  # 2048: the largest global batch
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for k in range(count):
                image.save(tmp_path / split / cls / f"{k}.png")
    sweep = ["sweep", "table-s5", "--set", f"data_root={tmp_path}"]
    dry = cli(*sweep, "--dry-run", "--format", "json")
    assert dry.exit_code == 0, dry.output
    rows = json.loads(dry.output)["runs"]
    assert {r["processes"] for r in rows if r["kind"] == "pretrain"} == {8}
    slurm = json.loads(cli(*sweep, "--dry-run", "--format", "json", "--backend", "slurm").output)
    assert {"#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8"} \
        <= set(slurm["sbatch"])
    result = cli(*sweep, "--workers", "2")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: devices_per_run 8 is more than the 2 CPU slot(s) (--workers N) this scheduler "
        "owns: run in fewer processes (--devices-per-run N) or give it more"]
    assert not (home / "db").exists() and not (home / "runs").exists()
