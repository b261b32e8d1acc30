"""``sslbench bench tune``: does pruning find the grid's best configuration for less training?

One fixed search space of 12 configurations (SimCLR at d = 64 with the demo's settings and
budget on the embedded shapes data: learning rate x temperature, the two knobs of the paper's
SimCLR-Tuned search), run two ways through ``sslbench tune``'s own machinery
(:class:`sslbench.runs.tune.StudyFeed` on the local scheduler), each in a fresh store and run
folder -- a shared store would simply reuse the first search's runs:

- ``grid``: every configuration to the end (pruner ``none``): the best value is the target, and
  its training epochs are the cost of exhaustive search;
- ``pruned``: the same 12 points, in the same (seeded, shuffled) order, with successive
  halving (ASHA: a third of the trials going on at each rung) on the per-epoch online probe.
  Its first rung is the first epoch after the learning-rate warmup (epochs 2, 6, 18, ... with
  the demo's one-epoch warmup): at the end of the warmup the trials are ranked by how fast they
  start rather than by where they go (with 9 epochs and a first rung at epoch 1, the grid's
  best configuration, at the largest learning rate, was pruned there).

The objective of both is the fast linear probe on the final backbone (an evaluation queued after
each completed trial; a pruned trial is never evaluated). The record:

- ``grid_best`` / ``pruned_best``: the best objective each search found; ``gap`` their
  difference (target: at most 1 point);
- ``grid_epochs`` / ``pruned_epochs``: epochs trained, summed over the runs (each run's stored
  per-epoch rows); ``epoch_ratio`` = pruned / grid (target: at most 0.4);
- ``pruned_trials``, ``grid_s``, ``pruned_s``, and both searches' per-trial values;
- ``rank_correlation``: for each epoch, Spearman's correlation over the grid's trials between
  their online top-1 at that epoch and their objective: how early the pruner's signal ranks the
  configurations as the objective does.

Both searches run on the same machine in the same invocation. The runs are bit-identical per
configuration on CPU (:mod:`sslbench.numerics`), so a trial that both searches complete has the
same value in both: a gap only comes from the best configuration having been pruned.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from sslbench.bench.sweep import use_home

#: The fixed space: 3 learning rates x 4 temperatures.
LRS = (5e-4, 2e-3, 8e-3)
TEMPERATURES = (0.07, 0.15, 0.3, 0.6)


def base(epochs: int | None, samples: int) -> dict[str, Any]:
    """Every trial's settings: the demo's (``sslbench/runs/sweeps/demo.toml``'s data, backbone,
    optimiser, augmentations, online probe, whose per-epoch top-1 the pruner reads, and with
    ``epochs`` None its budget) for SimCLR at d = 64."""
    from sslbench.runs.demo import demo_spec

    fixed = demo_spec().fixed
    return {**fixed, "method": "simclr", "dim": 64, "epochs": epochs or fixed["epochs"],
            "train_samples": samples}


def first_rung(settings: dict[str, Any]) -> int:
    """ASHA's first rung: the first epoch after the learning-rate warmup."""
    from sslbench.config import TrainConfig

    return int(settings.get("warmup_epochs", TrainConfig.warmup_epochs)) + 1


def spec_text(name: str, pruner: str, epochs: int | None, samples: int) -> str:
    settings = base(epochs, samples)
    lines = [f'name = "{name}"', "[base]"]
    lines += [f"{k} = {v!r}".replace("'", '"') for k, v in settings.items()]
    lines += ["[space]", f"lr = {list(LRS)}", f"temperature = {list(TEMPERATURES)}",
              "[objective]", 'metric = "fast_linear_top1"', 'protocol = "fast-linear"',
              "[sampler]", 'name = "grid"',
              "[pruner]", f'name = "{pruner}"', 'metric = "online_top1"',
              f"min_epochs = {first_rung(settings)}", "reduction_factor = 3"]
    return "\n".join(lines) + "\n"


def _search(root: Path, pruner: str, epochs: int | None, samples: int, workers: int
            ) -> dict[str, Any]:
    from sslbench.db import Store
    from sslbench.runs.devices import build_pool
    from sslbench.runs.scheduler import LocalScheduler
    from sslbench.runs.tune import StudyFeed, epoch_curve, open_study
    from sslbench.runs.tunespec import load_tune

    root.mkdir(parents=True)
    path = root / "spec.toml"
    path.write_text(spec_text(f"bench-{pruner}", pruner, epochs, samples))
    spec = load_tune(path)
    with use_home(root), Store.open(f"sqlite:///{root / 'store.sqlite'}") as store:
        pool = build_pool(None, workers=workers)
        scheduler = LocalScheduler(store, pool)
        study = open_study(spec, store.url)
        feed = StudyFeed(spec, study, store, trials=spec.grid_size(), deadline=None,
                         slots=pool.total_slots, driver=scheduler.scheduler_id,
                         max_attempts=1, command=["bench"])
        t0 = time.perf_counter()
        scheduler.run([], feed=feed)
        wall = time.perf_counter() - t0
        trials = study.get_trials(deepcopy=False)
        runs = [t.user_attrs["run_id"] for t in trials if "run_id" in t.user_attrs]
        curves = {r: epoch_curve(store, r, "online_top1") for r in runs}
        trained = {r: len(curve) for r, curve in curves.items()}
        # A pruned trial's value in Optuna is its last intermediate one (online top-1), not
        # the objective: only completed trials count.
        complete = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
        values = {f"lr={t.params['lr']:g},tau={t.params['temperature']:g}":
                  (round(float(t.value or 0.0), 2) if t in complete else
                   f"{t.state.name.lower()} after {trained.get(t.user_attrs.get('run_id'), 0)} "
                   "epochs") for t in trials}
    done = [float(t.value or 0.0) for t in complete]
    if not done:
        raise RuntimeError(f"no trial of the {pruner} search completed (logs under {root})")
    finals = [(dict(curves[t.user_attrs["run_id"]]), float(t.value or 0.0)) for t in complete]
    return {"best": max(done), "epochs": sum(trained.values()), "wall_s": wall, "values": values,
            "pruned": sum(t.state.name == "PRUNED" for t in trials),
            "rank_correlation": rank_correlation(finals)}


def rank_correlation(trials: list[tuple[dict[int, float], float]]) -> dict[int, float | None]:
    """Per epoch, Spearman's correlation between the trials' online top-1 at that epoch
    (``(curve, objective)`` each) and their objective; None where it is undefined (fewer than
    three trials, or a constant side)."""
    import pandas as pd

    epochs = sorted({e for curve, _ in trials for e in curve})
    out: dict[int, float | None] = {}
    for epoch in epochs:
        pairs = pd.DataFrame([(c[epoch], v) for c, v in trials if epoch in c])
        rho = pairs[0].corr(pairs[1], method="spearman") if len(pairs) >= 3 else float("nan")
        out[epoch] = None if pd.isna(rho) else round(float(rho), 3)
    return out


def run(epochs: int | None = None, samples: int = 0, workers: int = 2) -> dict[str, Any]:
    """The benchmark record (see the module docstring); ``epochs`` None: the demo's."""
    with tempfile.TemporaryDirectory(prefix="sslbench-bench-tune-") as tmp:
        grid = _search(Path(tmp) / "grid", "none", epochs, samples, workers)
        pruned = _search(Path(tmp) / "pruned", "asha", epochs, samples, workers)
    settings = base(epochs, samples)
    return {
        "configurations": len(LRS) * len(TEMPERATURES), "epochs_per_run": settings["epochs"],
        "first_rung": first_rung(settings),
        "train_samples": samples or "all", "workers": workers,
        "grid_best": round(grid["best"], 2), "pruned_best": round(pruned["best"], 2),
        "gap": round(grid["best"] - pruned["best"], 2),
        "grid_epochs": grid["epochs"], "pruned_epochs": pruned["epochs"],
        "epoch_ratio": round(pruned["epochs"] / grid["epochs"], 3),
        "pruned_trials": pruned["pruned"],
        "grid_s": round(grid["wall_s"], 1), "pruned_s": round(pruned["wall_s"], 1),
        "grid_values": grid["values"], "pruned_values": pruned["values"],
        "rank_correlation": grid["rank_correlation"],
    }
