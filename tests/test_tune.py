"""``sslbench tune``: Optuna studies whose trials are ordinary runs, through the real CLI.

The end-to-end tests train tiny runs (2 epochs of 256 shapes images on the tiny backbone) in a
subprocess, as a user types the command; the study is read back with Optuna from the same
SQLite file, which is the point: one database holds runs and studies.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sslbench.db import Store
from tests.conftest import run_cli

BASE = """
[base]
method = "{method}"
dataset = "shapes"
backbone = "tiny"
epochs = {epochs}
{batch}train_samples = 256
optimizer = "adamw"
"""


def base(method: str = "simclr", epochs: int = 2, batch: int | None = 64) -> str:
    return BASE.format(method=method, epochs=epochs,
                       batch="" if batch is None else f"batch_size = {batch}\n")


def write_spec(home: Path, name: str, body: str, *, method: str = "simclr", epochs: int = 2,
               batch: int | None = 64) -> Path:
    path = home / f"{name}.toml"
    path.write_text(f'name = "{name}"\n' + base(method, epochs, batch) + body)
    return path


def load_study(home: Path, name: str):
    import optuna

    storage = f"sqlite:///{home / 'db' / 'sslbench.sqlite'}"
    return optuna.load_study(study_name=name, storage=storage)


def finished(study) -> list:
    return [t for t in study.get_trials() if t.state.is_finished()]


def store_of(home: Path) -> Store:
    return Store.open(str(home / "db" / "sslbench.sqlite"))


# ------------------------------------------------------------------------ bad input

GRID = """
[space]
lr = [0.001, 0.004]
[sampler]
name = "grid"
"""
BAD_SPECS = {
    "unknown option": ("[space]\nlearning_rate = { low = 0.1, high = 1.0 }\n",
                       "unknown option 'learning_rate'"),
    "empty range": ("[space]\nlr = { low = 0.1, high = 0.1 }\n", "is empty: low must be below"),
    "inverted range": ("[space]\nlr = { low = 0.5, high = 0.1 }\n", "is inverted"),
    "log range touching 0": ("[space]\nlr = { low = 0.0, high = 0.1, log = true }\n",
                             "a log range must start above 0"),
    "metric no run logs": (GRID + '[objective]\nmetric = "knn_top5"\nprotocol = "knn"\n',
                           "no run stores 'knn_top5' as the metric of the knn protocol"),
    "pretraining metric no run logs": (GRID + '[objective]\nmetric = "fast_linear_top1"\n',
                                       "no run stores 'fast_linear_top1'"),
    "grid over a range": ("[space]\nlr = { low = 0.1, high = 0.5 }\n[sampler]\nname = \"grid\"\n",
                          "the grid sampler needs choices"),
}


def _assert_refused(code: int, stderr: str, home: Path, expected: str) -> None:
    assert code == 1, stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith("error: ") and expected in line, line
    assert "Traceback" not in stderr
    assert not (home / "db").exists() and not (home / "runs").exists()


def test_bad_spec_is_one_line_and_creates_nothing(home):
    """As a user types it; the other bad specs are checked in-process below."""
    body, expected = BAD_SPECS["unknown option"]
    result = run_cli(["tune", str(write_spec(home, "bad", body)), "--trials", "2"], home)
    _assert_refused(result.returncode, result.stderr, home, expected)


@pytest.mark.parametrize("case", sorted(set(BAD_SPECS) - {"unknown option"}))
def test_every_bad_spec_is_one_line_and_creates_nothing(cli, home, case):
    body, expected = BAD_SPECS[case]
    result = cli("tune", str(write_spec(home, "bad", body)), "--trials", "2")
    _assert_refused(result.exit_code, result.stderr, home, expected)


def test_a_base_that_no_trial_can_run_is_refused_before_the_store(cli, home):
    spec = write_spec(home, "big", GRID.replace("lr = [0.001, 0.004]", "batch_size = [64, 512]"),
                      batch=None)
    result = cli("tune", str(spec))
    _assert_refused(result.exit_code, result.stderr, home, "batch_size=512")
    assert "256" in result.stderr


def test_timeout_bounds_the_study_and_a_changed_space_is_refused(cli, home):
    """--timeout: no trial starts after it (here: before the first). Then the same study name
    with another space is one line, and the study is left as it was."""
    spec = write_spec(home, "timed", GRID)
    result = cli("tune", str(spec), "--timeout", "1e-9", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["counts"] == {"waiting": 2}  # the grid, queued, not run
    assert not (home / "runs").exists()
    spec.write_text(spec.read_text().replace("lr = [0.001, 0.004]", "lr = [0.001, 0.008]"))
    changed = cli("tune", str(spec))
    assert changed.exit_code == 1
    (line,) = changed.stderr.strip().splitlines()
    assert "study 'timed' already exists in the store with a different space" in line, line
    study = load_study(home, "timed")
    assert [t.state.name for t in study.get_trials()] == ["WAITING", "WAITING"]
    assert json.loads(study.user_attrs["sslbench_spec"])["space"] == {
        "lr": {"choices": [0.001, 0.004]}}


def test_spec_values_are_checked(tmp_path):
    from sslbench.errors import ConfigError
    from sslbench.runs.tunespec import load_tune

    path = tmp_path / "s.toml"
    path.write_text(base() + GRID + "[[start]]\nlr = 0.002\n")
    with pytest.raises(ConfigError, match=r"lr = 0.002 is outside the space"):
        load_tune(path)
    path.write_text(base(batch=None) + "[space]\nlr = { low = 1e-4, high = 1e-2, log = true }\n"
                    "dim = { low = 16, high = 256, step = 16 }\nbatch_size = [64, 128]\n"
                    "[[start]]\nlr = 0.002\ndim = 64\nbatch_size = 128\n"
                    '[pruner]\nname = "asha"\nreduction_factor = 2\n')
    spec = load_tune(path)
    assert [(p.name, p.kind) for p in spec.space] == [("lr", "float"), ("dim", "int"),
                                                      ("batch_size", "choice")]
    assert spec.start == ({"lr": 0.002, "dim": 64, "batch_size": 128},)
    assert spec.pruner == "asha" and spec.reduction_factor == 2


def test_the_grid_is_queued_in_an_order_shuffled_by_the_seed(tmp_path):
    """Every point once, in an order the spec's seed fixes: another seed, another order."""
    from sslbench.runs.tune import grid_points
    from sslbench.runs.tunespec import load_tune

    def order(seed: int) -> list[tuple[float, float]]:
        path = tmp_path / f"s{seed}.toml"
        path.write_text(base() + "[space]\nlr = [0.001, 0.002, 0.004, 0.008]\n"
                        "temperature = [0.1, 0.2, 0.5]\n"
                        f'[sampler]\nname = "grid"\nseed = {seed}\n')
        return [(p["lr"], p["temperature"]) for p in grid_points(load_tune(path))]

    first = order(0)
    assert sorted(first) == [(lr, t) for lr in (0.001, 0.002, 0.004, 0.008)
                             for t in (0.1, 0.2, 0.5)]
    assert order(0) == first
    assert first != sorted(first) and order(1) != first
    assert len({lr for lr, _ in first[:4]}) > 1  # the first trials do not share one lr


# ------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_trials_are_runs_and_a_repeated_configuration_is_reused(home):
    body = GRID + '[objective]\nmetric = "fast_linear_top1"\nprotocol = "fast-linear"\n' \
                  '[pruner]\nname = "none"\n'
    first = run_cli(["tune", str(write_spec(home, "lr", body)), "--workers", "2",
                     "--format", "json"], home)
    assert first.returncode == 0, first.stdout + first.stderr
    summary = json.loads(first.stdout)
    assert summary["counts"] == {"complete": 2} and summary["told"] == {"complete": 2}
    study = load_study(home, "lr")
    with store_of(home) as store:
        for trial in finished(study):
            run = store.get_run(trial.user_attrs["run_id"])
            assert run.status == "completed" and "tune:lr" in run.tags
            assert run.config["lr"] == trial.params["lr"]
            evaluation = store.get_run(trial.user_attrs["objective_run"])
            assert evaluation.parent_id == run.run_id and evaluation.status == "completed"
            assert trial.value == store.summary(evaluation.run_id)["fast_linear_top1"]
        attempts = {r.run_id: r.attempts for r in store.find_runs()}
    # Another study over the same points: every trial is a stored run, told without training.
    again = run_cli(["tune", str(write_spec(home, "lr-again", body)), "--format", "json"], home)
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["reused"] == 2
    assert sorted(t.value for t in finished(load_study(home, "lr-again"))) == \
        sorted(t.value for t in finished(study))
    with store_of(home) as store:
        assert {r.run_id: r.attempts for r in store.find_runs()} == attempts


@pytest.mark.slow
def test_pruning_stops_a_bad_trial_early_and_records_it(home):
    # VICReg's loss grows with its invariance weight: at sim_coeff = 100 the first epoch's loss
    # is far above the one at 1, so the median pruner (after one finished trial) stops it.
    body = """
[space]
sim_coeff = [1.0, 100.0]
[[start]]
sim_coeff = 1.0
[objective]
metric = "epoch_loss"
direction = "minimize"
[sampler]
name = "grid"
[pruner]
name = "median"
metric = "epoch_loss"
startup_trials = 1
"""
    spec = write_spec(home, "prune", body, method="vicreg", epochs=3)
    result = run_cli(["tune", str(spec), "--workers", "1"], home)
    assert result.returncode == 0, result.stdout + result.stderr
    good, bad = sorted(finished(load_study(home, "prune")), key=lambda t: t.number)
    assert good.params == {"sim_coeff": 1.0} and good.state.name == "COMPLETE"
    assert bad.params == {"sim_coeff": 100.0} and bad.state.name == "PRUNED"
    assert bad.intermediate_values[1] > good.intermediate_values[1]
    with store_of(home) as store:
        run = store.get_run(bad.user_attrs["run_id"])
        assert run.status == "pruned" and "after epoch 1" in run.error
        epochs = store.metrics_frame(run.run_id, "epoch_loss")["epoch"].tolist()
        assert epochs == [1]  # stopped after its first epoch of three
        assert (home / "runs" / run.run_id / "checkpoint.pt").is_file()  # resumable
        assert store.get_run(good.user_attrs["run_id"]).status == "completed"
    shown = run_cli(["runs", "show", bad.user_attrs["run_id"]], home).stdout
    assert f"pruned:\n  pruned by study prune trial {bad.number}: epoch_loss" in shown


RANDOM = """
[space]
lr = { low = 0.0005, high = 0.005, log = true }
[sampler]
name = "random"
seed = %d
[pruner]
name = "none"
"""


def _start_tune(home: Path, spec: Path, trials: int) -> subprocess.Popen:
    env = {**os.environ, "SSLBENCH_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env.pop("SSLBENCH_DB", None)
    return subprocess.Popen([sys.executable, "-m", "sslbench", "tune", str(spec), "--trials",
                             str(trials), "--workers", "1"], cwd=home, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _running_runs(home: Path) -> int:
    path = home / "db" / "sslbench.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path) as con:
            return con.execute("SELECT count(*) FROM runs WHERE kind = 'pretrain' AND "
                               "status = 'running'").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_a_killed_tune_resumes_its_study_without_duplicates(home):
    spec = write_spec(home, "killed", RANDOM % 0)
    proc = _start_tune(home, spec, 3)
    deadline = time.monotonic() + 120
    while _running_runs(home) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _running_runs(home) == 1, "the first trial never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    result = run_cli(["tune", str(spec), "--trials", "3", "--workers", "1", "--format", "json"],
                     home)
    assert result.returncode == 0, result.stdout + result.stderr
    trials = load_study(home, "killed").get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    runs = [t.user_attrs["run_id"] for t in trials]
    assert len(set(runs)) == 3  # the killed trial was adopted, not asked again
    with store_of(home) as store:
        tagged = store.runs_tagged("tune:killed")
        assert sorted(r.run_id for r in tagged) == sorted(runs)
        assert all(r.status == "completed" for r in tagged)
        assert not [a for r in tagged for a in store.attempt_details(r.run_id)
                    if a["ended_at"] is None]


@pytest.mark.slow
def test_two_tunes_share_one_study(home):
    spec = write_spec(home, "shared", RANDOM % 1)
    first, second = _start_tune(home, spec, 4), _start_tune(home, spec, 4)
    outputs = [p.communicate(timeout=300)[0] for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    trials = load_study(home, "shared").get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4, outputs
    with store_of(home) as store:
        for trial in trials:
            assert store.get_run(trial.user_attrs["run_id"]).status == "completed"


@pytest.mark.slow
def test_trials_run_as_submitit_job_arrays(home):
    """The Slurm path, through submitit's local executor: each trial's runs are one task, the
    driver polls the store for their ends, and the task's worker prunes on its own."""
    pytest.importorskip("submitit")
    body = GRID + '[objective]\nmetric = "online_top1"\n[pruner]\nname = "none"\n'
    spec = write_spec(home, "arrays", body)
    result = run_cli(["tune", str(spec), "--backend", "submitit-local", "--format", "json"],
                     home, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["counts"] == {"complete": 2}
    trials = load_study(home, "arrays").get_trials()
    with store_of(home) as store:
        for trial in trials:
            run = store.get_run(trial.user_attrs["run_id"])
            assert run.status == "completed" and trial.value == store.summary(
                run.run_id)["online_top1"]
    assert list((home / "slurm" / "tune-arrays").glob("*_submitted.pkl"))


def test_a_pruned_trial_leaves_no_evaluation_queued(tmp_path):
    """The evaluation planned for a trial's objective never runs once the trial is pruned: its
    queued row goes -- unless someone else asked for it too (another tag) or it started."""
    import optuna

    from sslbench.runs.tune import StudyFeed, _Live, open_study
    from sslbench.runs.tunespec import load_tune

    path = tmp_path / "s.toml"
    path.write_text('name = "p"\n' + base() + GRID
                    + '[objective]\nmetric = "fast_linear_top1"\nprotocol = "fast-linear"\n')
    spec = load_tune(path)
    with Store.open(str(tmp_path / "store.sqlite")) as store:
        study = open_study(spec, store.url)
        feed = StudyFeed(spec, study, store, trials=2, deadline=None, slots=1, driver="d",
                         max_attempts=1, command=[])
        outcomes = []
        for n, other_tags in enumerate(([], ["sweep:mine"])):
            pre, ev = f"{n:012x}", f"e{n:011x}"
            store.upsert_run(run_id=pre, kind="pretrain", config={}, command=[], env={},
                             tags=["tune:p"])
            store.upsert_run(run_id=ev, kind="eval", config={}, command=[], env={},
                             parent_id=pre, tags=["tune:p", *other_tags])
            store.set_status(pre, "running")
            store.set_status(pre, "pruned", error="pruned by study p")
            trial = study.ask()
            trial.suggest_categorical("lr", [0.001, 0.004])
            feed.live[trial.number] = _Live(trial, pre, ev)
            feed.ended(pre, "pruned")
            outcomes.append([r.run_id for r in store.find_runs(kind="eval")])
        assert outcomes == [[], ["e00000000001"]]
        assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.PRUNED] * 2


@pytest.mark.parametrize("name", ["median", "asha"])
def test_no_pruner_stops_a_trial_before_min_epochs(tmp_path, name):
    """Steps are epochs done: with min_epochs = 3, a far worse trial goes on through epochs 1
    and 2 and may stop from epoch 3 on."""
    import optuna

    from sslbench.runs.tune import pruner_of

    signature = {"pruner": {"name": name, "min_epochs": 3, "startup_trials": 1,
                            "reduction_factor": 3}}
    study = optuna.create_study(direction="maximize", pruner=pruner_of(signature))
    for value in (50.0, 52.0):
        good = study.ask()
        for epoch in range(1, 10):  # as the worker's gate: report, then ask
            good.report(value + epoch, epoch)
            assert not good.should_prune()
        study.tell(good, value + 9)
    bad = study.ask()
    verdicts = []
    for epoch in range(1, 5):
        bad.report(1.0, epoch)
        verdicts.append(bad.should_prune())
    assert verdicts[:2] == [False, False] and verdicts[2]
