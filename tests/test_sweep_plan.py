"""Planning a sweep against the store (no training): resolved run ids, actions by stored
status, blocked evaluations, what apply_plan writes, and the cell-level errors of resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslbench.db import Store
from sslbench.errors import ConfigError
from sslbench.runs.plan import (
    action_for,
    apply_plan,
    build_plan,
    plan_rows,
    plan_sweep,
    with_statuses,
)
from sslbench.runs.sweepfile import load_sweep

SWEEP = """
name = "plan"
[fixed]
dataset = "shapes"
backbone = "small"
projector = "64-d"
dim = 16
epochs = 1
batch_size = 64
[grid]
method = ["simclr", "vicreg"]
[[override]]
where = { method = "vicreg" }
set = { cov_coeff = 0.5 }
[eval]
protocols = ["fast-linear", "knn"]
linear_epochs = 7
"""


@pytest.fixture
def spec(tmp_path: Path):
    path = tmp_path / "plan.toml"
    path.write_text(SWEEP)
    return load_sweep(path)


@pytest.fixture
def store(tmp_path: Path):
    with Store.open(f"sqlite:///{tmp_path / 's.sqlite'}") as s:
        yield s


@pytest.mark.parametrize("status, retry, expected", [
    ("new", False, "queue"), ("queued", False, "queue"), ("completed", False, "skip"),
    ("interrupted", False, "resume"), ("killed", False, "resume"),
    ("failed", False, "skip-failed"), ("failed", True, "retry"), ("running", False, "wait"),
])
def test_action_for_each_stored_status(status, retry, expected):
    assert action_for(status, retry_failed=retry) == expected


def test_cells_resolve_to_the_train_commands_configs(spec):
    from sslbench.train.setup import resolve_train_config

    plan = build_plan(spec)
    pre = [r for r in plan.runs if r.kind == "pretrain"]
    base = dict(dataset="shapes", backbone="small", projector="64-d", dim=16, epochs=1,
                batch_size=64)
    assert pre[0].run_id == resolve_train_config({**base, "method": "simclr"}).run_id
    assert pre[1].run_id == resolve_train_config({**base, "method": "vicreg"},
                                                 {"cov_coeff": 0.5}).run_id
    evals = [r for r in plan.runs if r.kind == "eval"]
    assert [(e.parent_id, e.config.protocol) for e in evals] == [
        (pre[0].run_id, "fast-linear"), (pre[0].run_id, "knn"),
        (pre[1].run_id, "fast-linear"), (pre[1].run_id, "knn")]
    assert evals[0].config.linear_epochs == 7 and evals[0].config.dim == 16
    assert plan.queue == [r.run_id for r in plan.runs]  # pretraining first
    assert [row["kind"] for row in plan_rows(plan)] == ["pretrain"] * 2 + ["eval"] * 4


def test_backend_defaults_fill_cells_that_leave_a_setting_unset(tmp_path):
    """A Slurm CPU task's threads reach the cells that do not set theirs; the run ids (threads
    is an execution setting) stay the same, and a cell's own value wins."""
    from dataclasses import replace

    path = tmp_path / "threads.toml"
    path.write_text(SWEEP.replace("method = [\"simclr\", \"vicreg\"]",
                                  "method = [\"simclr\", \"vicreg\"]\n[[override]]\n"
                                  "where = { method = \"simclr\" }\nset = { threads = 3 }"))
    spec = load_sweep(path)
    plain, slurm = build_plan(spec), build_plan(replace(spec, defaults={"threads": 2}))
    pre = [[r for r in p.runs if r.kind == "pretrain"] for p in (plain, slurm)]
    assert [r.run_id for r in pre[0]] == [r.run_id for r in pre[1]]
    assert [r.config.threads for r in pre[0]] == [3, 0]
    assert [r.config.threads for r in pre[1]] == [3, 2]


def test_apply_plan_creates_tags_and_budgets_then_statuses_drive_actions(spec, store):
    plan = plan_sweep(spec, store)
    queue = apply_plan(plan, store, max_attempts=2, command=["test"])
    assert queue == plan.queue
    runs = store.runs_tagged("sweep:plan")
    assert len(runs) == 6 and all(r.status == "queued" and r.attempt_limit == 2 for r in runs)
    assert {r.parent_id for r in runs if r.kind == "eval"} == {
        r.run_id for r in runs if r.kind == "pretrain"}
    ok, bad = plan.queue[:2]
    for run_id, status in ((ok, "completed"), (bad, "failed")):
        store.set_status(run_id, "running")
        store.set_status(run_id, status, error="boom" if status == "failed" else None)
    again = with_statuses(build_plan(spec), store)
    actions = {r.run_id: r.action for r in again.runs}
    assert actions[ok] == "skip" and actions[bad] == "skip-failed"
    blocked = [r for r in again.runs if r.parent_id == bad]
    assert {actions[r.run_id] for r in blocked} == {"blocked"}
    assert {actions[r.run_id] for r in again.runs if r.parent_id == ok} == {"queue"}
    assert again.queue == [r.run_id for r in again.runs if r.parent_id == ok]

    retry = with_statuses(build_plan(spec), store, retry_failed=True)
    assert {r.run_id: r.action for r in retry.runs}[bad] == "retry"
    apply_plan(retry, store, max_attempts=2, command=["test"])
    record = store.get_run(bad)
    assert record.status == "queued" and record.attempt_limit == 1 + 2  # two more attempts


def test_a_run_created_elsewhere_joins_the_sweep(spec, store):
    plan = build_plan(spec)
    first = plan.runs[0]
    store.upsert_run(run_id=first.run_id, kind="pretrain", config=first.config.to_dict(),
                     command=["sslbench", "train"], env={})
    apply_plan(with_statuses(plan, store), store, max_attempts=3, command=["test"])
    assert "sweep:plan" in store.get_run(first.run_id).tags
    assert store.get_run(first.run_id).command == ["sslbench", "train"]  # untouched


def test_resolution_errors_name_the_cell(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(SWEEP.replace('method = ["simclr", "vicreg"]',
                                  'method = ["simclr", "vicreg"]\nlr = [0.3, -1.0]'))
    with pytest.raises(ConfigError) as info:
        build_plan(load_sweep(path))
    assert "cell method=simclr, lr=-1.0" in str(info.value) and "--lr" in str(info.value)
    path.write_text(SWEEP.replace("dim = 16", "dim = 16\nlambd = 0.1"))
    with pytest.raises(ConfigError, match="lambd applies to none of the sweep's methods"):
        build_plan(load_sweep(path))


def test_eval_probe_settings_reach_the_planned_runs(tmp_path):
    """Planned ids are the ids the evaluation itself computes, probe settings included."""
    from sslbench.evaluate.run import _resolve_probe_augment

    path = tmp_path / "probe.toml"
    path.write_text(SWEEP.replace("linear_epochs = 7", 'linear_epochs = 7\nprobe_augment = '
                                  '"crop-flip"\nprobe_standardize = false').replace(
                                      '["fast-linear", "knn"]', '["fast-linear", "linear"]'))
    evals = [r for r in build_plan(load_sweep(path)).runs if r.kind == "eval"]
    assert {e.config.probe_augment for e in evals} == {"crop-flip"}
    assert {e.config.probe_standardize for e in evals} == {False}
    for e in evals:
        assert _resolve_probe_augment(e.config).run_id == e.run_id
