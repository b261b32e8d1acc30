"""From a sweep file to runs in the store: resolve every cell, compare with what is stored, queue.

Each cell becomes a resolved :class:`TrainConfig` (through ``resolve_train_config``, the one way
options become a config), so its run id is its config hash: running the same sweep again finds
the same runs. Evaluations are eval runs whose parent is the pretraining run; their configs are
built now with the evaluation code's own ``eval_config_for`` (from the parent's config, which is
all it reads), so a dry run already shows their ids.

What a sweep does with each run, by stored status (:func:`action_for`):

========================  =================================================================
not stored / queued       queue it
completed                 skip it
interrupted / killed      resume it (from its checkpoint)
pruned                    resume it (a tuning study stopped it early; a sweep wants it whole)
failed                    re-run it with ``--retry-failed``, else skip it and say so
running                   leave it to the process running it; its evaluations still wait on it
========================  =================================================================

Evaluations of a failed pretraining run that is not retried are "blocked" (not queued).

Nothing is written until every cell resolved and passed the data checks of ``sslbench train``
(``--batch-size`` and ``--train-samples`` against the dataset, loaded once per dataset and
root, and the batch against the cell's ``devices_per_run``: the global batch is an identity
field split evenly across the run's processes), so a bad sweep queues nothing. Memory is left
to each run's own check: it depends on the device the scheduler gives the run and on what else
runs there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sslbench.config import EvalConfig, TrainConfig
from sslbench.db.models import RunStatus
from sslbench.errors import ConfigError
from sslbench.runs.sweepfile import EXECUTION_KEYS, Cell, SweepSpec, expand, loss_key_types

#: Actions that put a run in this sweep's queue.
RUN_ACTIONS = ("queue", "resume", "retry", "wait")


@dataclass(frozen=True)
class PlannedRun:
    """One run of the plan: what it is and what the sweep will do with it."""

    run_id: str
    kind: str
    label: str
    config: Any  # TrainConfig or EvalConfig
    parent_id: str | None
    status: str  # stored status, or "new"
    action: str  # queue, resume, retry, wait, skip, skip-failed, blocked
    attempts: int = 0
    #: Processes (devices) it is started with: the cell's devices_per_run, or the count recorded
    #: at the run's first start (``with_statuses``), which every later attempt keeps.
    processes: int = 1


@dataclass
class Plan:
    spec: SweepSpec
    runs: list[PlannedRun] = field(default_factory=list)

    @property
    def queue(self) -> list[str]:
        """Ids the scheduler must see through: pretraining runs first, in grid order."""
        return [r.run_id for r in self.runs if r.action in RUN_ACTIONS]

    @property
    def processes(self) -> dict[str, int]:
        """Processes of each run in the queue that needs more than one."""
        return {r.run_id: r.processes for r in self.runs
                if r.action in RUN_ACTIONS and r.processes > 1}

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.runs:
            out[r.action] = out.get(r.action, 0) + 1
        return out


class _PlannedParent:
    """What ``eval_config_for`` reads of a parent run, for a parent that is only planned."""

    def __init__(self, cfg: TrainConfig) -> None:
        self._cfg = cfg

    def get_run(self, run_id: str) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(run_id=self._cfg.run_id, kind="pretrain", status=RunStatus.COMPLETED,
                               config=self._cfg.to_dict())


def resolve_cell(spec: SweepSpec, cell: Cell, loss_keys: Sequence[str]) -> TrainConfig:
    """The resolved TrainConfig of one cell (a ConfigError names the cell)."""
    from sslbench.losses import criterion_defaults
    from sslbench.train.setup import resolve_train_config

    options = {**spec.defaults, **{k: v for k, v in cell.settings.items()
                                   if k not in loss_keys and k not in EXECUTION_KEYS}}
    method = options.get("method", TrainConfig.method)
    try:
        applicable = set(criterion_defaults(method))
    except Exception:  # an unknown method: resolve_train_config names it below
        applicable = set()
    loss = {k: v for k, v in cell.settings.items() if k in loss_keys and k in applicable}
    try:
        return resolve_train_config(options, loss)
    except ConfigError as err:
        raise ConfigError(f"{spec.path}, cell {cell.label}: {err}") from None


def resolve_sweep(spec: SweepSpec) -> list[tuple[Cell, TrainConfig]]:
    """Every cell with its config; duplicate cells and loss keys used by no cell are errors."""
    loss_keys = list(loss_key_types())
    resolved = [(cell, resolve_cell(spec, cell, loss_keys)) for cell in expand(spec)]
    seen: dict[str, Cell] = {}
    for cell, cfg in resolved:
        if cfg.run_id in seen:
            raise ConfigError(f"{spec.path}: cells {seen[cfg.run_id].label} and {cell.label} "
                              f"are the same run {cfg.run_id} (a duplicate cell): remove one")
        seen[cfg.run_id] = cell
    given = {k for cell, _ in resolved for k in cell.settings if k in loss_keys}
    used = {k for _, cfg in resolved for k in cfg.loss}
    unused = sorted(given - used)
    if unused:
        raise ConfigError(f"{spec.path}: {unused[0]} applies to none of the sweep's methods: "
                          "remove it")
    _check_data_roots(spec, [cfg for _, cfg in resolved])
    _check_sizes(spec, resolved)
    return resolved


def _check_data_roots(spec: SweepSpec, configs: Sequence[TrainConfig]) -> None:
    from pathlib import Path

    for root in sorted({c.data_root for c in configs if c.data_root}):
        if not Path(root).expanduser().is_dir():
            raise ConfigError(f"{spec.path}: data_root {root!r} is not a folder: point it at the "
                              "dataset (--set data_root=/path)")


def _split_sizes(cfg: TrainConfig) -> tuple[int, int]:
    """(pretraining images, test images) of the cell's dataset, at its native size (a resize
    changes no count)."""
    from sslbench.data import load_dataset

    root = cfg.data_root or None
    return (len(load_dataset(cfg.dataset, "pretrain", root)),
            len(load_dataset(cfg.dataset, "test", root)))


def _check_sizes(spec: SweepSpec, resolved: Sequence[tuple[Cell, TrainConfig]]) -> None:
    """``sslbench train``'s data checks for every cell; each dataset is loaded once."""
    from sslbench.train.preflight import check_sizes

    sizes: dict[tuple[str, str], tuple[int, int]] = {}
    for cell, cfg in resolved:
        key = (cfg.dataset, cfg.data_root)
        if key not in sizes:
            sizes[key] = _split_sizes(cfg)
        try:
            check_processes(cfg.batch_size, cell.devices_per_run)
            check_sizes(cfg, *sizes[key], cell.devices_per_run)
        except ConfigError as err:
            raise ConfigError(f"{spec.path}, cell {cell.label}: {err}") from None


def check_processes(batch_size: int, processes: int) -> None:
    """``devices_per_run`` is at least 1 and splits the global batch evenly (ConfigError)."""
    from sslbench.train.distributed import DistInfo, check_batch

    if processes < 1:
        raise ConfigError(f"devices_per_run must be >= 1, got {processes}")
    check_batch(batch_size, DistInfo(0, processes, 0))


def eval_configs(spec: SweepSpec, cfg: TrainConfig) -> list[EvalConfig]:
    """The evaluation runs queued after pretraining run ``cfg``, one per protocol."""
    from sslbench.config import replace
    from sslbench.evaluate.run import eval_config_for

    if not spec.protocols:
        return []
    base = eval_config_for(_PlannedParent(cfg), cfg.run_id, **spec.eval_options)
    return [replace(base, protocol=p) for p in spec.protocols]


def baseline_configs(spec: SweepSpec, configs: Sequence[TrainConfig]) -> list[EvalConfig]:
    """Random-init baselines (one per backbone, dataset and protocol) when ``baseline = true``."""
    from sslbench.config import replace
    from sslbench.evaluate.run import random_init_config

    if not (spec.baseline and spec.protocols):
        return []
    out, seen = [], set()
    for cfg in configs:
        key = (cfg.backbone, cfg.dataset, cfg.data_root, cfg.image_size)
        if key in seen:
            continue
        seen.add(key)
        base = random_init_config(backbone=cfg.backbone, dataset=cfg.dataset,
                                  data_root=cfg.data_root, image_size=cfg.image_size,
                                  **spec.eval_options)
        out += [replace(base, protocol=p) for p in spec.protocols]
    return out


def action_for(status: str, *, retry_failed: bool) -> str:
    """What a sweep does with a run in stored ``status`` (see the module docstring)."""
    if status in ("new", RunStatus.QUEUED):
        return "queue"
    if status == RunStatus.COMPLETED:
        return "skip"
    if status in (RunStatus.INTERRUPTED, RunStatus.KILLED, RunStatus.PRUNED):
        return "resume"
    if status == RunStatus.FAILED:
        return "retry" if retry_failed else "skip-failed"
    if status == RunStatus.RUNNING:  # live: the sweep reaped dead runs before planning
        return "wait"
    raise ValueError(f"unknown run status {status!r}")


def build_plan(spec: SweepSpec) -> Plan:
    """Every run of the sweep, resolved, all "new" (no store read): raises on any bad cell."""
    resolved = resolve_sweep(spec)
    plan = Plan(spec)
    for cell, cfg in resolved:
        plan.runs.append(PlannedRun(cfg.run_id, "pretrain", cell.label, cfg, None, "new",
                                    "queue", processes=cell.devices_per_run))
    for cell, cfg in resolved:
        plan.runs += [PlannedRun(ev.run_id, "eval", f"{cell.label}, eval {ev.protocol}", ev,
                                 cfg.run_id, "new", "queue") for ev in eval_configs(spec, cfg)]
    plan.runs += [PlannedRun(ev.run_id, "eval", f"random-init {ev.backbone} on {ev.dataset}, "
                             f"eval {ev.protocol}", ev, None, "new", "queue")
                  for ev in baseline_configs(spec, [c for _, c in resolved])]
    return plan


def with_statuses(plan: Plan, store: Any, *, retry_failed: bool = False) -> Plan:
    """The plan with each run's stored status and the action the sweep takes."""
    stored = store.runs_by_id([r.run_id for r in plan.runs]) if store is not None else {}
    out = Plan(plan.spec)
    actions: dict[str, str] = {}
    for run in plan.runs:
        record = stored.get(run.run_id)
        status = record.status if record is not None else "new"
        action = action_for(status, retry_failed=retry_failed)
        if run.parent_id is not None and actions.get(run.parent_id) == "skip-failed" \
                and action in RUN_ACTIONS:
            action = "blocked"  # its pretraining failed and is not retried
        actions[run.run_id] = action
        processes = launch_processes(record.numerics if record else {}, run.processes)
        out.runs.append(PlannedRun(run.run_id, run.kind, run.label, run.config, run.parent_id,
                                   status, action, record.attempts if record else 0, processes))
    return out


def launch_processes(numerics: Mapping[str, Any], planned: int) -> int:
    """The processes a run is started with: the count recorded at its first start (a run that
    recorded numerics without one started before it was recorded, as one process), else
    ``planned``. One run id, one result: a resume never changes the count."""
    from sslbench.numerics import recorded_processes

    return recorded_processes(numerics) if numerics else planned


def plan_sweep(spec: SweepSpec, store: Any, *, retry_failed: bool = False) -> Plan:
    """The plan: every run of the sweep with its stored status and the action to take."""
    return with_statuses(build_plan(spec), store, retry_failed=retry_failed)


def apply_plan(plan: Plan, store: Any, *, max_attempts: int, command: list[str]) -> list[str]:
    """Write the plan: create new runs (queued, tagged ``sweep:<name>``; the whole grid in one
    transaction), tag existing ones, re-queue resumed and retried runs, and give every queued
    run ``max_attempts`` more attempts. Returns the ids the scheduler must see through."""
    from sslbench.db.records import NewRun
    from sslbench.environment import capture

    env = {**capture(), "queued_by": "sweep"}
    tag = plan.spec.tag
    store.upsert_runs([NewRun(run_id=run.run_id, kind=run.kind, config=run.config.to_dict(),
                              command=command, env=env, parent_id=run.parent_id,
                              method=run.config.method, dataset=run.config.dataset, tags=[tag])
                       for run in plan.runs if run.status == "new" and run.action != "blocked"])
    for run in plan.runs:
        if run.action == "blocked" and run.status == "new":
            continue
        if run.status != "new":
            store.add_tags(run.run_id, [tag])
        limit = run.attempts + max_attempts
        if run.action in ("resume", "retry"):
            store.requeue(run.run_id, statuses=(run.status,), attempt_limit=limit)
        elif run.action == "queue":
            store.set_attempt_limit(run.run_id, limit)
    return plan.queue


def forget_unstarted(plan: Plan, store: Any) -> None:
    """Undo what :func:`apply_plan` created for runs that nothing has started: their rows go,
    so that a submission that failed leaves no run queued without a job to run it."""
    from sslbench.db.models import RunStatus

    created = [r.run_id for r in plan.runs if r.status == "new"]
    for run_id, record in store.runs_by_id(created).items():
        if record.status == RunStatus.QUEUED and record.attempts == 0:
            store.delete_run(run_id)


def plan_rows(plan: Plan) -> list[dict[str, Any]]:
    """The plan as flat records (for --dry-run tables and JSON)."""
    return [{"run_id": r.run_id, "kind": r.kind, "cell": r.label, "status": r.status,
             "action": r.action, "parent": r.parent_id or "", "processes": r.processes}
            for r in plan.runs]
