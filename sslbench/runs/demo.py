"""The demo, sslbench's main job on a fresh machine: SimCLR and VICReg at several embedding
dimensions on the embedded ``shapes`` data, each evaluated (linear probe + k-NN on frozen
features) beside a randomly initialised backbone, then the dims table. About 5 minutes on 2 CPU
cores, no network. Every run is an ordinary run in the store: re-running the demo reuses them.

The settings are defined once, in the shipped sweep file ``sslbench/runs/sweeps/demo.toml``:
this command reads it and resolves its cells the way ``sslbench sweep demo`` does, so the two
name the same runs and either reuses the other's results.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sslbench.config import EvalConfig, TrainConfig
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


def demo_baselines(spec: SweepSpec, configs: Sequence[TrainConfig],
                   device: str) -> list[EvalConfig]:
    """The sweep's random-init baselines, one per backbone and dataset (protocols apart: the
    caller evaluates every protocol on each, sharing the extracted features)."""
    from sslbench.config import replace
    from sslbench.runs.plan import baseline_configs

    bases: dict[tuple[str, str], EvalConfig] = {}
    for cfg in baseline_configs(spec, configs):
        bases.setdefault((cfg.backbone, cfg.dataset), replace(cfg, device=device))
    return list(bases.values())


def run_demo(store, *, epochs: int | None, dims: list[int] | None, device: str,
             command: list[str], echo: Callable[[str], None] = print) -> str:
    """Trains, evaluates and reports; returns the rendered dims table."""
    from sslbench.db.models import RunStatus
    from sslbench.evaluate.run import eval_config_for
    from sslbench.report.dims import dims_report
    from sslbench.report.render import render
    from sslbench.train.loop import pretrain

    spec = demo_spec(epochs, dims, device)
    configs = demo_configs(spec)
    total = len(configs)
    for i, cfg in enumerate(configs, 1):
        t0 = time.perf_counter()
        result = pretrain(cfg, store, command=command, progress=False)
        if result.status != RunStatus.COMPLETED:
            return ""
        base = eval_config_for(store, result.run_id, **{**spec.eval_options, "device": device})
        lin, knn = _evaluate(store, base, spec.protocols, command)
        echo(f"[{i}/{total}] {cfg.method:<7} dim {cfg.dim:<4} run {result.run_id}: online "
             f"{result.summary.get('online_top1', float('nan')):5.1f}%  linear {lin:5.1f}%  "
             f"k-NN {knn:5.1f}%  ({time.perf_counter() - t0:.0f} s"
             f"{', reused' if result.reused else ''})")
    for baseline in demo_baselines(spec, configs, device):
        lin, knn = _evaluate(store, baseline, spec.protocols, command)
        echo(f"[baseline] random-init {baseline.backbone}: linear {lin:5.1f}%  "
             f"k-NN {knn:5.1f}%")
    report = dims_report(store, metric="fast_linear_top1", dataset=configs[0].dataset)
    table = render(report.frame, "table", title=report.title, caption=report.caption)
    echo(table)
    return table


def _evaluate(store, cfg: EvalConfig, protocols: tuple[str, ...],
              command: list[str]) -> tuple[float, float]:
    """(fast linear top-1, k-NN top-1) of one backbone; NaN for a protocol the sweep file
    does not list."""
    from sslbench.evaluate.run import evaluate_protocols

    results = evaluate_protocols(store, cfg, protocols, command=command)
    summary = {k: v for r in results for k, v in r.summary.items()}
    nan = float("nan")
    return summary.get("fast_linear_top1", nan), summary.get("knn_top1", nan)
