"""The local scheduler with scripted workers (no training): devices and CUDA_VISIBLE_DEVICES,
retries by failure class, SIGKILL detection, the attempt limit, two schedulers on one store,
graceful stop, the reaper. The real worker (`runs exec` -> pretrain) is in test_sweep_e2e.py.

The scripted worker behaves like ``runs exec``: it adopts the claimed attempt with
``set_status(run, 'running')``, logs metrics keyed by step, and ends as its run's config says.
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

import pytest

from sslbench.db import Store
from sslbench.runs.devices import build_pool
from sslbench.runs.policy import RetryPolicy
from sslbench.runs.scheduler import LocalScheduler

FAKE_WORKER = r'''
import json, os, signal, sys, time
from sslbench.db import Store

run_id = sys.argv[1]
store = Store.open(os.environ["SSLBENCH_DB"])
record = store.get_run(run_id)
cfg = record.config
attempt = record.attempts
store.set_status(run_id, "running")
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
out = cfg.get("env_file")
if out:
    with open(out, "a") as fh:
        slots = store.reserved_slots()
        fh.write(json.dumps({"run": run_id, "attempt": attempt,
                             "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
                             "omp": os.environ.get("OMP_NUM_THREADS"),
                             "slots": {d: sorted(s.values()) for d, s in slots.items()}}) + "\n")
steps = cfg.get("steps", 3)
first = 0
if cfg.get("resume"):  # like a checkpoint: continue after the last logged step
    done = store.metrics_frame(run_id, "loss")
    first = int(done["step"].max()) + 1 if len(done) else 0
for step in range(first, steps):
    store.log_metrics(run_id, step, {"loss": 1.0 / (step + 1)})
    time.sleep(cfg.get("sleep", 0.05))
    if stop:
        store.set_status(run_id, "interrupted", error="stopped")
        sys.exit(3)
    if cfg.get("behavior") == "die-once" and attempt == 1 and step == 2:
        os.kill(os.getpid(), signal.SIGKILL)
behavior = cfg.get("behavior", "ok")
if behavior in ("ok", "die-once"):
    store.set_status(run_id, "completed")
elif behavior == "fail":
    store.set_status(run_id, "failed", failure_class="error",
                     error=f"Traceback (most recent call last):\nValueError: boom {attempt}")
    sys.exit(1)
elif behavior == "flaky":
    if attempt < 2:
        store.set_status(run_id, "failed", failure_class="error",
                         error="RuntimeError: NCCL timeout in all_reduce")
        sys.exit(1)
    store.set_status(run_id, "completed")
elif behavior == "oom-once":
    if attempt < 2:
        store.set_status(run_id, "failed", failure_class="oom",
                         error="torch.OutOfMemoryError: CUDA out of memory")
        sys.exit(1)
    store.set_status(run_id, "completed")
elif behavior == "nonfinite":
    store.set_status(run_id, "failed", failure_class="nonfinite", error="loss became NaN")
    sys.exit(1)
elif behavior == "crash-unrecorded":
    raise SystemExit(7)
'''


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """(store, command factory) with SSLBENCH_HOME in tmp_path."""
    monkeypatch.setenv("SSLBENCH_HOME", str(tmp_path))
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    store = Store.open(f"sqlite:///{tmp_path / 'store.sqlite'}")
    yield store, (lambda run_id: [sys.executable, str(script), run_id])
    store.close()


def add_runs(store: Store, *configs: dict, prefix: str = "run") -> list[str]:
    ids = []
    for i, cfg in enumerate(configs):
        run_id = f"{prefix}{i:08d}"
        store.upsert_run(run_id=run_id, kind="pretrain", config=cfg, command=[], env={})
        ids.append(run_id)
    return ids


def scheduler(store, command, pool=None, **kwargs) -> LocalScheduler:
    pool = pool or build_pool(None, workers=2, cores=2)
    kwargs.setdefault("install_signals", False)
    return LocalScheduler(store, pool, command=command, poll_s=0.02, beat_s=0.2, **kwargs)


def _env_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_devices_get_their_own_runs_and_cuda_visible_devices(fake, tmp_path):
    store, command = fake
    env_file = tmp_path / "env.jsonl"
    ids = add_runs(store, *[{"env_file": str(env_file), "sleep": 0.3} for _ in range(4)])
    # Four devices are pretended (no GPU here): the scheduler only sets the environment.
    pool = build_pool("0,1,2,3", per_device=1, cuda_count=4, cores=8,
                      environ={"CUDA_VISIBLE_DEVICES": "4,5,6,7"})
    report = scheduler(store, command, pool).run(ids)
    assert set(report.outcomes.values()) == {"completed"}
    lines = _env_lines(env_file)
    assert sorted(line["cuda"] for line in lines) == ["4", "5", "6", "7"]  # not all on GPU 0
    assert {line["omp"] for line in lines} == {"2"}  # 8 cores / 4 slots
    # The ledger (and each attempt) names a GPU by its index on the machine, so that schedulers
    # seeing the GPUs through different CUDA_VISIBLE_DEVICES never book one twice.
    devices = sorted(store.attempt_details(r)[0]["device"] for r in ids)
    assert devices == ["4", "5", "6", "7"]
    assert store.reserved_slots() == {}  # every slot freed


@pytest.mark.slow
def test_per_device_k_spreads_before_doubling_up(fake, tmp_path):
    store, command = fake
    env_file = tmp_path / "env.jsonl"
    ids = add_runs(store, *[{"env_file": str(env_file), "sleep": 0.4} for _ in range(4)])
    pool = build_pool("0,1", per_device=2, cuda_count=2, cores=2, environ={})
    report = scheduler(store, command, pool).run(ids)
    assert set(report.outcomes.values()) == {"completed"}
    lines = _env_lines(env_file)
    assert sorted(line["cuda"] for line in lines) == ["0", "0", "1", "1"]
    assert max(len(runs) for line in lines for runs in line["slots"].values()) == 2


@pytest.mark.slow
def test_retries_by_failure_class(fake):
    store, command = fake
    ok, fail, oom, flaky, nan = add_runs(
        store, {"behavior": "ok"}, {"behavior": "fail"}, {"behavior": "oom-once"},
        {"behavior": "flaky"}, {"behavior": "nonfinite"})
    policy = RetryPolicy(max_attempts=3, transient=(r"NCCL timeout",))
    report = scheduler(store, command, policy=policy).run([ok, fail, oom, flaky, nan])
    assert report.outcomes == {ok: "completed", fail: "failed", oom: "completed",
                               flaky: "completed", nan: "failed"}
    assert store.get_run(fail).attempts == 1  # an error is not retried unless transient
    assert store.get_run(nan).attempts == 1
    assert [a["failure_class"] for a in store.attempt_details(oom)] == ["oom", None]
    assert [a["status"] for a in store.attempt_details(flaky)] == ["failed", "completed"]
    assert "boom 1" in store.get_run(fail).error
    assert [a["exit_code"] for a in store.attempt_details(fail)] == [1]


@pytest.mark.slow
def test_out_of_memory_retry_runs_alone_on_its_device(fake, tmp_path):
    store, command = fake
    env_file = tmp_path / "env.jsonl"
    configs = [{"behavior": "oom-once", "env_file": str(env_file)}] + \
        [{"env_file": str(env_file), "sleep": 0.2} for _ in range(3)]
    ids = add_runs(store, *configs)
    pool = build_pool("0", per_device=3, cuda_count=1, cores=3, environ={})
    report = scheduler(store, command, pool).run(ids)
    assert set(report.outcomes.values()) == {"completed"}
    retry = [line for line in _env_lines(env_file)
             if line["run"] == ids[0] and line["attempt"] == 2]
    assert retry and retry[0]["slots"] == {"0": [ids[0]] * 3}  # every slot, nobody else


@pytest.mark.slow
def test_always_failing_run_stops_after_max_attempts_with_its_traceback(fake):
    store, command = fake
    (run,) = add_runs(store, {"behavior": "fail"})
    policy = RetryPolicy(max_attempts=3, transient=("boom",))  # marked transient: retried
    report = scheduler(store, command, policy=policy).run([run])
    record = store.get_run(run)
    assert report.outcomes == {run: "failed"} and record.attempts == 3
    assert "out of attempts" in report.reasons[run]
    assert "Traceback" in record.error and "boom 3" in record.error
    assert [a["error"].splitlines()[-1] for a in store.attempt_details(run)] == \
        ["ValueError: boom 1", "ValueError: boom 2", "ValueError: boom 3"]


@pytest.mark.slow
def test_sigkilled_worker_is_detected_requeued_and_completed_without_duplicates(fake):
    store, command = fake
    (run,) = add_runs(store, {"behavior": "die-once", "steps": 5})
    report = scheduler(store, command).run([run])
    assert report.outcomes == {run: "completed"}
    first, second = store.attempt_details(run)
    assert (first["status"], first["failure_class"], first["exit_code"]) == \
        ("killed", "killed", -signal.SIGKILL)
    assert "SIGKILL" in first["error"]
    assert second["status"] == "completed"
    history = store.metrics_frame(run, "loss")
    assert list(history["step"]) == [0, 1, 2, 3, 4]  # replayed steps overwrote, no duplicates


@pytest.mark.slow
def test_worker_that_exits_without_recording_is_failed_with_its_log(fake):
    store, command = fake
    (run,) = add_runs(store, {"behavior": "crash-unrecorded"})
    report = scheduler(store, command).run([run])
    assert report.outcomes == {run: "failed"}
    (att,) = store.attempt_details(run)
    assert att["exit_code"] == 7 and att["failure_class"] == "error"
    assert "exit code 7" in store.get_run(run).error
    assert Path(att["log_path"]).name == "attempt-1.log"


@pytest.mark.slow
def test_two_schedulers_on_one_store_never_run_a_run_twice(fake):
    store, command = fake
    ids = add_runs(store, *[{"sleep": 0.1} for _ in range(5)])
    reports = {}

    def go(name: str) -> None:
        with Store.open(store.url) as own:
            reports[name] = scheduler(own, command).run(ids)

    threads = [threading.Thread(target=go, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(store.get_run(r).status == "completed" for r in ids)
    assert all(store.get_run(r).attempts == 1 for r in ids)  # exactly one attempt each
    launched = reports["a"].launched + reports["b"].launched
    assert launched == len(ids)
    assert set(reports["a"].outcomes.values()) == {"completed"}  # each saw every run end


@pytest.mark.slow
def test_evaluations_wait_for_their_pretraining_and_are_blocked_when_it_fails(fake):
    store, command = fake
    good, bad = add_runs(store, {"sleep": 0.2}, {"behavior": "fail"})
    ev_good, ev_bad = "evalgood0001", "evalbad00001"
    for ev, parent in ((ev_good, good), (ev_bad, bad)):
        store.upsert_run(run_id=ev, kind="eval", config={}, command=[], env={},
                         parent_id=parent)
    report = scheduler(store, command).run([good, bad, ev_good, ev_bad])
    assert report.outcomes[ev_good] == "completed"
    assert report.outcomes[ev_bad] == "blocked" and store.get_run(ev_bad).status == "queued"
    assert store.get_run(ev_good).started_at >= store.get_run(good).ended_at


def _stop_when_running(store: Store, action, run_ids: list[str]) -> threading.Thread:
    """Run ``action`` once every run of ``run_ids`` has logged a metric (its worker is up)."""
    def go() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(len(store.metrics_frame(r)) for r in run_ids):
                break
            time.sleep(0.05)
        action()

    thread = threading.Thread(target=go)
    thread.start()
    return thread


@pytest.mark.slow
@pytest.mark.parametrize("how", ["store-flag", "runs-stop"])
def test_stop_interrupts_workers_which_are_not_retried(fake, how):
    store, command = fake
    ids = add_runs(store, *[{"steps": 400, "sleep": 0.05} for _ in range(3)])
    # runs-stop signals this process (the scheduler's), so the scheduler takes the signals.
    sched = scheduler(store, command, install_signals=how == "runs-stop")
    if how == "store-flag":  # as seen from another host: only the flag in the store
        thread = _stop_when_running(store, lambda: store.request_stop([sched.scheduler_id]),
                                    ids[:2])
    else:
        from sslbench.runs.control import stop

        thread = _stop_when_running(store, lambda: stop(store), ids[:2])
    report = sched.run(ids)
    thread.join()
    assert report.stopped
    statuses = sorted(store.get_run(r).status for r in ids)
    assert statuses == ["interrupted", "interrupted", "queued"]  # the third never started
    assert report.outcomes[ids[2]] == "pending"
    assert all(store.get_run(r).attempts <= 1 for r in ids)
    assert store.reserved_slots() == {} and store.schedulers() == []


@pytest.mark.slow
def test_stopping_one_run_leaves_the_others_running(fake):
    store, command = fake
    ids = add_runs(store, {"steps": 400, "sleep": 0.05}, {"steps": 40, "sleep": 0.05})
    from sslbench.runs.control import stop

    thread = _stop_when_running(store, lambda: stop(store, run_ids=[ids[0]], wait_s=10),
                                ids[:1])
    report = scheduler(store, command).run(ids)
    thread.join()
    assert report.outcomes == {ids[0]: "interrupted", ids[1]: "completed"}
    assert not report.stopped


def test_reaper_requeues_a_run_whose_process_died(fake):
    store, _ = fake
    (run,) = add_runs(store, {})
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    store.set_status(run, "running", pid=proc.pid)  # a run whose process is gone
    (alive,) = add_runs(store, {}, prefix="live")
    store.set_status(alive, "running")  # this very process: alive
    from sslbench.runs.control import reap

    reaped = reap(store)
    assert [(r.run_id, r.requeued) for r in reaped] == [(run, True)]
    assert store.get_run(run).status == "queued"
    (att,) = store.attempt_details(run)
    assert att["status"] == "killed" and att["failure_class"] == "lost"
    assert store.get_run(alive).status == "running"
    store.set_attempt_limit(run, 1)
    store.set_status(run, "running", pid=proc.pid)
    assert [(r.run_id, r.requeued) for r in reap(store)] == [(run, False)]
    assert store.get_run(run).status == "killed"


def test_reaper_frees_slots_of_a_dead_scheduler_but_not_a_live_ones(fake):
    store, _ = fake
    a, b = add_runs(store, {}, {})
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    store.register_scheduler("dead", backend="local", slots=["cpu:0"], pid=proc.pid)
    store.register_scheduler("live", backend="local", slots=["cpu:1"])
    store.claim_run(a, scheduler_id="dead", device="cpu", slots=[0])  # never got a worker
    store.claim_run(b, scheduler_id="live", device="cpu", slots=[1])
    from sslbench.runs.control import reap

    reaped = reap(store)
    assert [r.run_id for r in reaped] == [a]
    assert store.get_run(a).status == "queued" and store.get_run(b).status == "running"
    assert store.reserved_slots() == {"cpu": {1: b}}
    assert [s.scheduler_id for s in store.schedulers()] == ["live"]


def test_a_worker_ends_without_the_teardown_and_loses_nothing(tmp_path):
    """end_process: the exit code, the atexit handlers and the unflushed output all survive;
    outside a scheduler's worker (no SSLBENCH_ATTEMPT) it is an ordinary exit."""
    marker = tmp_path / "atexit.txt"
    code = (f"import atexit, sys\nfrom sslbench.runs.worker import end_process\n"
            f"atexit.register(lambda: open({str(marker)!r}, 'w').write('ran'))\n"
            "sys.stdout.write('last words')\nend_process(3)\n")
    for attempt in ("1", None):
        env = {k: v for k, v in os.environ.items() if k != "SSLBENCH_ATTEMPT"}
        env.update({"SSLBENCH_ATTEMPT": attempt} if attempt else {})
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=60)
        assert (done.returncode, done.stdout) == (3, "last words"), done.stderr
        assert marker.read_text() == "ran"
        marker.unlink()
