"""The demo, sslbench's main job on a fresh machine: SimCLR and VICReg at several embedding
dimensions on the embedded ``shapes`` data, each evaluated (linear probe + k-NN on frozen
features) beside a randomly initialised backbone, then the dims table. About 5 minutes on 2 CPU
cores, no network. Every run is an ordinary run in the store: re-running the demo reuses them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

DEMO_METHODS = ("simclr", "vicreg")
DEMO_DIMS = (16, 64, 256)
DEMO_EPOCHS = 10
# Tuned for a short CPU budget: a 4x cheaper backbone, small batches (more steps for the same
# compute) and AdamW, which moves fastest in the first few hundred steps.
DEMO_OPTIONS = dict(dataset="shapes", backbone="tiny", projector="512-d", batch_size=128,
                    optimizer="adamw", lr=0.002, weight_decay=1e-4, seed=0)
DEMO_LOSS: dict[str, dict] = {"simclr": {}, "vicreg": {}}  # the criteria's defaults (Table S6)


def run_demo(store, *, epochs: int | None, dims: list[int] | None, device: str,
             command: list[str], echo: Callable[[str], None] = print) -> str:
    """Trains, evaluates and reports; returns the rendered dims table."""
    from sslbench.evaluate.run import eval_config_for, random_init_config
    from sslbench.report.dims import dims_report
    from sslbench.report.render import render
    from sslbench.train.loop import pretrain
    from sslbench.train.setup import resolve_train_config

    epochs = epochs or DEMO_EPOCHS
    dims = list(dims or DEMO_DIMS)
    configs = [resolve_train_config({**DEMO_OPTIONS, "method": m, "dim": d, "epochs": epochs,
                                     "device": device}, DEMO_LOSS[m])
               for m in DEMO_METHODS for d in dims]
    total = len(configs)
    for i, cfg in enumerate(configs, 1):
        t0 = time.perf_counter()
        result = pretrain(cfg, store, command=command, progress=False)
        if result.status != "completed":
            return ""
        lin, knn = _evaluate(store, eval_config_for(store, result.run_id, device=device),
                             command)
        echo(f"[{i}/{total}] {cfg.method:<7} dim {cfg.dim:<4} run {result.run_id}: online "
             f"{result.summary.get('online_top1', float('nan')):5.1f}%  linear {lin:5.1f}%  "
             f"k-NN {knn:5.1f}%  ({time.perf_counter() - t0:.0f} s"
             f"{', reused' if result.reused else ''})")
    baseline = random_init_config(dataset=DEMO_OPTIONS["dataset"],
                                  backbone=DEMO_OPTIONS["backbone"], seed=0, device=device)
    lin, knn = _evaluate(store, baseline, command)
    echo(f"[baseline] random-init {DEMO_OPTIONS['backbone']}: linear {lin:5.1f}%  "
         f"k-NN {knn:5.1f}%")
    report = dims_report(store, metric="fast_linear_top1", dataset=DEMO_OPTIONS["dataset"])
    table = render(report.frame, "table", title=report.title, caption=report.caption)
    echo(table)
    return table


def _evaluate(store, cfg, command: list[str]) -> tuple[float, float]:
    """(fast linear top-1, k-NN top-1) of one backbone."""
    from sslbench.evaluate.run import DEFAULT_PROTOCOLS, evaluate_protocols

    results = evaluate_protocols(store, cfg, DEFAULT_PROTOCOLS, command=command)
    summary = {k: v for r in results for k, v in r.summary.items()}
    return summary["fast_linear_top1"], summary["knn_top1"]
