"""``sslbench bench tune``: does pruning find the grid's best configuration for less training?

One fixed search space of 12 configurations (SimCLR at d = 64 with the demo's settings on the
embedded shapes data, at a shorter budget: learning rate x temperature, the two knobs of the
paper's SimCLR-Tuned search), run two
ways through ``sslbench tune``'s own machinery (:class:`sslbench.runs.tune.StudyFeed` on the
local scheduler), each in a fresh store and run folder -- a shared store would simply reuse the
first search's runs:

- ``grid``: every configuration to the end (pruner ``none``): the best value is the target, and
  its training epochs are the cost of exhaustive search;
- ``pruned``: the same 12 points, in the same order, with successive halving (ASHA: rungs at
  epochs 1, 3, 9, ..., a third of the trials going on at each) on the per-epoch online probe.

The objective of both is the fast linear probe on the final backbone (an evaluation queued after
each completed trial; a pruned trial is never evaluated). The record:

- ``grid_best`` / ``pruned_best``: the best objective each search found; ``gap`` their
  difference (target: at most 1 point);
- ``grid_epochs`` / ``pruned_epochs``: epochs trained, summed over the runs (each run's stored
  per-epoch rows); ``epoch_ratio`` = pruned / grid (target: at most 0.4);
- ``pruned_trials``, ``grid_s``, ``pruned_s``, and both searches' per-trial values.

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


def base(epochs: int, samples: int) -> dict[str, Any]:
    """Every trial's settings: the demo's (``sslbench/runs/sweeps/demo.toml``'s data, backbone,
    optimiser, augmentations and online probe, whose per-epoch top-1 the pruner reads) for
    SimCLR at d = 64, at the benchmark's budget."""
    from sslbench.runs.demo import demo_spec

    return {**demo_spec().fixed, "method": "simclr", "dim": 64, "epochs": epochs,
            "train_samples": samples}


def spec_text(name: str, pruner: str, epochs: int, samples: int) -> str:
    lines = [f'name = "{name}"', "[base]"]
    lines += [f"{k} = {v!r}".replace("'", '"') for k, v in base(epochs, samples).items()]
    lines += ["[space]", f"lr = {list(LRS)}", f"temperature = {list(TEMPERATURES)}",
              "[objective]", 'metric = "fast_linear_top1"', 'protocol = "fast-linear"',
              "[sampler]", 'name = "grid"',
              "[pruner]", f'name = "{pruner}"', 'metric = "online_top1"', "min_epochs = 1",
              "reduction_factor = 3"]
    return "\n".join(lines) + "\n"


def _search(root: Path, pruner: str, epochs: int, samples: int, workers: int) -> dict[str, Any]:
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
        trained = {r: len(epoch_curve(store, r, "online_top1")) for r in runs}
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
    return {"best": max(done), "epochs": sum(trained.values()), "wall_s": wall, "values": values,
            "pruned": sum(t.state.name == "PRUNED" for t in trials)}


def run(epochs: int = 9, samples: int = 0, workers: int = 2) -> dict[str, Any]:
    """The benchmark record (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="sslbench-bench-tune-") as tmp:
        grid = _search(Path(tmp) / "grid", "none", epochs, samples, workers)
        pruned = _search(Path(tmp) / "pruned", "asha", epochs, samples, workers)
    return {
        "configurations": len(LRS) * len(TEMPERATURES), "epochs_per_run": epochs,
        "train_samples": samples or "all", "workers": workers,
        "grid_best": round(grid["best"], 2), "pruned_best": round(pruned["best"], 2),
        "gap": round(grid["best"] - pruned["best"], 2),
        "grid_epochs": grid["epochs"], "pruned_epochs": pruned["epochs"],
        "epoch_ratio": round(pruned["epochs"] / grid["epochs"], 3),
        "pruned_trials": pruned["pruned"],
        "grid_s": round(grid["wall_s"], 1), "pruned_s": round(pruned["wall_s"], 1),
        "grid_values": grid["values"], "pruned_values": pruned["values"],
    }
