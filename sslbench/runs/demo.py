"""The demo, sslbench's main job on a fresh machine: SimCLR and VICReg at several embedding
dimensions on the embedded ``shapes`` data, each evaluated (linear probe + k-NN on frozen
features) beside a randomly initialised backbone, then the dims table. No network; see the README
for its time on 2 CPU cores. Every run is an ordinary run in the store: re-running the demo reuses
them.

The settings are defined once, in the shipped sweep file ``sslbench/runs/sweeps/demo.toml``:
this command reads it and resolves its cells the way ``sslbench sweep demo`` does, so the two
name the same runs and either reuses the other's results. It runs them the same way too: queued
in the store, then through the local scheduler (:class:`~sslbench.runs.scheduler.LocalScheduler`),
a worker process per run, several at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sslbench.config import TrainConfig
    from sslbench.db import Store
    from sslbench.runs.devices import DevicePool
    from sslbench.runs.plan import Plan
    from sslbench.runs.sweepfile import SweepSpec

DEMO_SWEEP = "demo"  # the shipped sweep file sweeps/demo.toml


def demo_spec(epochs: int | None = None, dims: Sequence[int] | None = None,
              device: str = "auto") -> SweepSpec:
    """The shipped demo sweep with the command's ``--epochs``, ``--dims`` and ``--device`` laid
    over it the way ``sslbench sweep demo --set`` would (the device is not part of a run id)."""
    from sslbench.runs.sweepfile import load_sweep, shipped_sweeps

    sets = [f"device={json.dumps(device)}"]
    if epochs:
        sets.append(f"epochs={epochs}")
    if dims:
        sets.append(f"dim={list(dict.fromkeys(dims))}")  # a repeated dim is the same run
    return load_sweep(shipped_sweeps()[DEMO_SWEEP], sets)  # never a file named demo in cwd


def demo_configs(spec: SweepSpec) -> list[TrainConfig]:
    """The pretraining runs of the demo, resolved exactly as the sweep resolves its cells."""
    from sslbench.runs.plan import resolve_sweep

    return [cfg for _, cfg in resolve_sweep(spec)]


def demo_pool(device: str, workers: int | None) -> DevicePool:
    """The devices the demo's scheduler owns: CPU workers (``workers``, default one per core up
    to the scheduler's usual cap) for ``--device cpu`` or a machine without CUDA, else the CUDA
    device asked for (``cuda:N``) or every visible one, ``workers`` runs at once on each."""
    from sslbench.runs.devices import build_pool, visible_cuda_devices

    count = 0 if device == "cpu" else visible_cuda_devices()
    if count == 0 or device == "cpu":
        return build_pool(None, workers=workers)
    chosen = device.partition(":")[2] if device.startswith("cuda:") else None
    return build_pool(chosen or ",".join(map(str, range(count))), per_device=workers or 1)


def run_demo(store: Store, *, epochs: int | None, dims: list[int] | None, device: str,
             workers: int | None, command: list[str],
             echo: Callable[[str], None] = print) -> str:
    """Queues the demo's runs and evaluations, runs them through the local scheduler (as
    ``sslbench sweep demo`` does: done runs are reused, ``workers`` at once), then prints each
    pretraining run's three top-1s and the dims table; returns the rendered table, or "" when a
    run did not complete."""
    from sslbench.report.dims import dims_report
    from sslbench.report.filters import ReportFilters
    from sslbench.report.render import render
    from sslbench.runs.control import reap
    from sslbench.runs.plan import apply_plan, build_plan, with_statuses
    from sslbench.runs.policy import RetryPolicy
    from sslbench.runs.scheduler import LocalScheduler

    spec = demo_spec(epochs, dims, device)
    pool = demo_pool(device, workers)  # checked before anything is queued
    reap(store)  # runs whose process died are re-queued, as `sslbench sweep` does
    plan = with_statuses(build_plan(spec), store)
    policy = RetryPolicy()
    queued = apply_plan(plan, store, max_attempts=policy.max_attempts, command=command)
    reused = len(plan.runs) - len(queued)
    echo(f"demo: {len(plan.runs)} runs ({len(queued)} to run, {reused} reused) on "
         f"{', '.join(pool.describe())}")
    report = LocalScheduler(store, pool, policy=policy, echo=echo,
                            processes=plan.processes).run(queued)
    failed = {r: s for r, s in report.outcomes.items() if s != "completed"}
    for run_id, status in failed.items():
        echo(f"  {run_id} {status}: {report.reasons.get(run_id, '')}")
    if report.stopped:
        echo("stopped: re-run `sslbench demo` to resume")
    if failed or report.stopped:
        return ""
    echo(_results(store, plan))
    first = next(r.config for r in plan.runs if r.kind == "pretrain")
    # The demo's runs at this budget, not whatever else the store holds on the same data
    # (`sslbench report dims --sweep demo --epochs N` shows the same table).
    mine = ReportFilters(sweep=spec.name, dataset=first.dataset, epochs=first.epochs)
    found = dims_report(store, metric="fast_linear_top1", filters=mine)
    table = render(found.frame, "table", title=found.title, caption=found.caption)
    echo(table)
    return table


def _results(store: Store, plan: Plan) -> str:
    """One line per pretraining run (online, fast-linear and k-NN top-1), then the random-init
    baseline's: the numbers the dims table summarises, by run id."""
    children: dict[str | None, dict[str, float]] = {}
    for run in plan.runs:
        if run.kind == "eval":
            children.setdefault(run.parent_id, {}).update(store.summary(run.run_id))
    nan = float("nan")
    lines = [f"{'method':<8}{'dim':>5}  {'run':<13}{'online':>7}{'linear':>8}{'k-NN':>7}"]
    for run in plan.runs:
        if run.kind == "pretrain":
            evals, online = children.get(run.run_id, {}), store.summary(run.run_id)
            lines.append(f"{run.config.method:<8}{run.config.dim:>5}  {run.run_id:<13}"
                         f"{online.get('online_top1', nan):7.1f}"
                         f"{evals.get('fast_linear_top1', nan):8.1f}"
                         f"{evals.get('knn_top1', nan):7.1f}")
    base = children.get(None, {})
    lines.append(f"{'random-init backbone':<26}{'':>7}{base.get('fast_linear_top1', nan):8.1f}"
                 f"{base.get('knn_top1', nan):7.1f}")
    return "\n".join(lines)
