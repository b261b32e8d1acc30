"""``sslbench sweep`` end to end with real workers (``runs exec`` -> pretrain / evaluate):
dry run, bad input, re-running skips, --retry-failed, a SIGKILLed worker resumed from its
checkpoint, graceful stop, watch and reap. Runs through ``sslbench.cli.app`` (whose ``sweep`` and
``runs`` modules hold these commands) and, for the worker, ``python -m sslbench runs exec``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

TINY = """
name = "tiny"
[fixed]
dataset = "shapes"
backbone = "small"
projector = "64-d"
dim = 16
epochs = 1
batch_size = 64
train_samples = 128
method = "simclr"
[grid]
seed = [0, 1]
[eval]
protocols = ["fast-linear"]
linear_epochs = 5
"""


def _sweep_file(home: Path, text: str = TINY, name: str = "tiny.toml") -> Path:
    path = home / name
    path.write_text(text)
    return path


def _store(home: Path):
    from sslbench.db import Store

    return Store.open(f"sqlite:///{home / 'db' / 'sslbench.sqlite'}", create=False)


def _assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_every_sweep_command_has_help(cli):
    for args in (["sweep"], ["runs", "stop"], ["runs", "reap"], ["runs", "watch"],
                 ["bench", "sweep"]):
        result = cli(*args, "--help")
        assert result.exit_code == 0 and "Usage" in result.output, args
    result = cli("runs", "--help")
    assert "stop" in result.output and "exec" not in result.output.split("Commands")[-1]


def test_dry_run_prints_the_plan_and_writes_nothing(cli, home):
    path = _sweep_file(home)
    result = cli("sweep", str(path), "--dry-run", "--format", "json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    kinds = [r["kind"] for r in plan["runs"]]
    assert kinds == ["pretrain", "pretrain", "eval", "eval"]
    assert {r["action"] for r in plan["runs"]} == {"queue"}
    evals = [r for r in plan["runs"] if r["kind"] == "eval"]
    assert [e["parent"] for e in evals] == [r["run_id"] for r in plan["runs"][:2]]
    assert not (home / "db").exists() and not (home / "runs").exists()


def test_the_demo_sweep_finds_the_demo_commands_runs():
    """`sslbench sweep demo` and `sslbench demo` name the same runs (so either reuses the other)."""
    from sslbench.runs import demo
    from sslbench.runs.plan import build_plan, plan_sweep
    from sslbench.runs.sweepfile import load_sweep

    plan = plan_sweep(load_sweep("demo"), None)
    spec = demo.demo_spec(epochs=None, dims=None, device="cpu")  # `sslbench demo --device cpu`
    configs = demo.demo_configs(spec)
    assert [r.run_id for r in plan.runs if r.kind == "pretrain"] == [c.run_id for c in configs]
    assert [r.run_id for r in build_plan(spec).runs] == [r.run_id for r in plan.runs]
    assert sum(r.kind == "eval" and r.parent_id is None for r in plan.runs) == 2  # baselines
    assert [(c.method, c.dim) for c in configs] == [
        (m, d) for m in ("simclr", "vicreg") for d in (16, 64, 256)]


BAD_INPUT = [
    ("unknown key", TINY.replace("epochs = 1", "epoch = 1"), [], "unknown key 'epoch'"),
    ("empty grid", TINY.replace("seed = [0, 1]", "seed = []"), [], "empty grid axis"),
    ("type error", TINY.replace("dim = 16", 'dim = "16"'), [], "must be an integer"),
    ("duplicate cell", TINY.replace("seed = [0, 1]", "num_workers = [0, 1]"), [],
     "duplicate cell"),
    ("bad value", TINY.replace('method = "simclr"', 'method = "simclear"'), [],
     "unknown method 'simclear'"),
    ("missing devices", TINY, ["--devices", "0,1"], "no CUDA device"),
    ("bad backend", TINY, ["--backend", "lsf"], "unknown --backend"),
    ("missing data_root", TINY.replace('dataset = "shapes"', 'dataset = "shapes"\n'
                                       'data_root = "${NO_SUCH_VAR_SSLB}"'), [],
     "NO_SUCH_VAR_SSLB"),
    ("data_root not a folder", TINY, ["--set", "data_root=/no/such/folder"], "is not a folder"),
    ("bad --set", TINY, ["--set", "epochs"], "KEY=VALUE"),
    ("bad attempts", TINY, ["--max-attempts", "0"], "--max-attempts must be >= 1"),
]


@pytest.mark.parametrize("text, flags, needle", [b[1:] for b in BAD_INPUT],
                         ids=[b[0] for b in BAD_INPUT])
def test_bad_input_is_one_line_exit_1_nothing_queued(cli, home, text, flags, needle):
    if "cuda" in needle.lower():
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA devices")
    result = cli("sweep", str(_sweep_file(home, text)), *flags)
    _assert_one_line_error(result, needle)
    assert not (home / "db").exists() and not (home / "runs").exists()


@pytest.mark.slow
def test_sweep_runs_everything_then_skips_it_and_retries_failed_only_on_request(cli, home):
    # The second cell's model fits in no machine's memory. Planning leaves memory to each run's
    # own check (it depends on the device the run gets), so the cell is queued and always fails
    # at its start. (A batch larger than the data is refused at planning now.)
    text = TINY.replace("seed = [0, 1]", "seed = [0]\ndim = [16, 1099511627776]")
    text = text.replace("dim = 16\n", "")
    # The evaluation stage through a worker, with the cheapest protocol to compute (every protocol
    # runs through the one evaluation lifecycle; fast-linear's own run is in test_train_e2e.py).
    text = text.replace('protocols = ["fast-linear"]', 'protocols = ["analysis"]\nsamples = 128')
    path = _sweep_file(home, text)
    result = cli("sweep", str(path), "--workers", "2")
    assert result.exit_code == 1, result.output  # two cells failed
    store = _store(home)
    runs = store.runs_tagged("sweep:tiny")
    by_status: dict[tuple[str, str], list[Any]] = {}
    for r in runs:
        by_status.setdefault((r.kind, r.status), []).append(r)
    assert len(by_status[("pretrain", "completed")]) == 1
    assert len(by_status[("pretrain", "failed")]) == 1
    assert len(by_status[("eval", "completed")]) == 1
    assert len(by_status[("eval", "queued")]) == 1  # blocked: its pretraining failed
    assert result.output.count(" blocked: its pretraining run ") == 1
    failed = by_status[("pretrain", "failed")][0]
    assert "not enough memory" in failed.error
    assert store.attempt_details(failed.run_id)[0]["failure_class"] == "input"
    done = by_status[("pretrain", "completed")][0]
    assert store.summary(done.run_id)["epoch"] == 1.0
    assert Path(store.attempt_details(done.run_id)[0]["log_path"]).is_file()
    ev = by_status[("eval", "completed")][0]
    assert "rankme_repr" in store.summary(ev.run_id) and ev.config["samples"] == 128

    again = cli("sweep", str(path), "--workers", "2", "--format", "json")
    assert again.exit_code == 0, again.output  # nothing to run: only skips
    assert {r.run_id: r.attempts for r in _store(home).runs_tagged("sweep:tiny")} == \
        {r.run_id: r.attempts for r in runs}
    dry = json.loads(cli("sweep", str(path), "--dry-run", "--format", "json").output)
    assert sorted(dry["counts"].items()) == [("blocked", 1), ("skip", 2), ("skip-failed", 1)]

    retry = cli("sweep", str(path), "--workers", "2", "--retry-failed")
    assert retry.exit_code == 1, retry.output
    assert _store(home).get_run(failed.run_id).attempts == 2  # re-run, failed again
    assert _store(home).get_run(done.run_id).attempts == 1  # completed: untouched


def _wait_for(predicate, timeout: float = 120.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def _env(home: Path) -> dict:
    env = {**os.environ, "SSLBENCH_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env.pop("SSLBENCH_DB", None)
    return env


def _sweep_past_first_epoch(home: Path, *, epochs: int, seed: int):
    """Start a one-worker sweep of one run in the background and wait until its first epoch is
    checkpointed. Returns (the sweep process, its store, the run id, the sweep file)."""
    text = TINY.replace("epochs = 1", f"epochs = {epochs}").replace("seed = [0, 1]",
                                                                   f"seed = [{seed}]")
    text = text.replace('protocols = ["fast-linear"]', "protocols = []")
    path = _sweep_file(home, text)
    sweep = subprocess.Popen([sys.executable, "-m", "sslbench", "sweep", str(path),
                              "--workers", "1"], cwd=home, env=_env(home),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: (home / "db" / "sslbench.sqlite").exists())
        store = _store(home)
        run_id = _wait_for(lambda: [r.run_id for r in store.runs_tagged("sweep:tiny")])[0]
        _wait_for(lambda: store.summary(run_id).get("epoch", 0) >= 1)
        # The epoch's metrics are logged just before its checkpoint is written: wait for both.
        _wait_for(lambda: any(a["kind"] == "checkpoint" for a in store.artifacts(run_id)))
    except BaseException:
        sweep.kill()
        raise
    return sweep, store, run_id, path


@pytest.mark.slow
def test_sigkilled_worker_is_resumed_from_its_checkpoint_without_duplicates(home):
    """kill -9 of a real worker mid-run: detected, re-queued, resumed, completed."""
    # After the first epoch's checkpoint, kill the worker outright.
    sweep, store, run_id, _ = _sweep_past_first_epoch(home, epochs=3, seed=7)
    try:
        pid = store.get_run(run_id).pid
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        output, _ = sweep.communicate(timeout=240)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, output
    record = store.get_run(run_id)
    assert record.status == "completed" and record.attempts == 2
    first, second = store.attempt_details(run_id)
    assert (first["status"], first["failure_class"], first["exit_code"]) == \
        ("killed", "killed", -signal.SIGKILL)
    assert second["status"] == "completed"
    epochs = store.metrics_frame(run_id, "epoch")
    assert list(epochs["value"]) == [1.0, 2.0, 3.0]  # once each, no duplicates
    assert epochs["step"].is_unique
    # Resumed, not restarted: the first epoch was not recomputed after the kill.
    import sqlite3

    con = sqlite3.connect(home / "db" / "sslbench.sqlite")
    try:
        rows = con.execute("SELECT value, logged_at FROM metrics WHERE run_id = ? AND key = "
                           "'epoch' ORDER BY step", (run_id,)).fetchall()
    finally:
        con.close()
    from datetime import datetime, timezone

    logged = [datetime.fromisoformat(t).replace(tzinfo=timezone.utc).timestamp()
              for _, t in rows]
    assert logged[0] < killed_at and logged[-1] > killed_at


@pytest.mark.slow
def test_runs_stop_checkpoints_and_the_next_sweep_resumes(cli, home):
    sweep, store, run_id, path = _sweep_past_first_epoch(home, epochs=6, seed=3)
    try:
        watch = cli("runs", "watch", "--sweep", "tiny", "--once")
        assert watch.exit_code == 0 and run_id in watch.output and "running" in watch.output
        stop = cli("runs", "stop", "--wait", "120")
        assert stop.exit_code == 0, stop.output
        assert "asked 1 scheduler(s) to stop" in stop.output
        output, _ = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 1 and "re-run the same sweep to resume" in output, output
    record = store.get_run(run_id)
    assert record.status == "interrupted" and store.summary(run_id)["epoch"] < 6
    assert (home / "runs" / run_id / "checkpoint.pt").is_file()
    again = cli("sweep", str(path), "--workers", "1")  # in-process; its worker is real
    assert again.exit_code == 0, again.output
    record = store.get_run(run_id)
    assert record.status == "completed" and record.attempts == 2
    assert list(store.metrics_frame(run_id, "epoch")["value"]) == [float(e) for e in
                                                                   range(1, 7)]


def test_runs_reap_and_watch_on_a_store(cli, home):
    from sslbench.db import Store

    with Store.open(f"sqlite:///{home / 'db' / 'sslbench.sqlite'}") as store:
        store.upsert_run(run_id="deadrun00001", kind="pretrain", config={"epochs": 2},
                         command=[], env={}, tags=["sweep:w"])
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        proc.wait()
        store.set_status("deadrun00001", "running", pid=proc.pid)
    result = cli("runs", "reap")
    assert result.exit_code == 0 and "deadrun00001" in result.output
    assert "re-queued" in result.output
    assert cli("runs", "reap").output.strip() == "no dead runs"
    shown = cli("runs", "watch", "--sweep", "w", "--once")
    assert shown.exit_code == 0 and "deadrun00001" in shown.output and "queued" in shown.output
