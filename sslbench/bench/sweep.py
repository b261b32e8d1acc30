"""``sslbench bench sweep``: N tiny pretraining runs through the local scheduler on CPU workers,
against the same runs one after another.

``run()`` returns one record:

- ``serial_s``: the scheduler with 1 worker (all cores' threads): the runs one after another,
  each in its own worker process, exactly as a sweep runs them.
- ``parallel_s``: the scheduler with ``workers`` workers (cores / workers threads each).
- ``ratio``: ``parallel_s / serial_s`` (target: at most 0.6 with 2 workers).
- ``serial_inprocess_s`` and ``ratio_vs_inprocess``: the runs one after another inside one
  process (no worker start-up at all), the strictest baseline.
- ``overhead_per_run_s``: scheduler time on the critical path per attempt -- reserving a slot,
  claiming, spawning, recording the exit, freeing the slot (target: under 0.5 s).
- ``idle_per_run_s``: ``(workers * parallel_s - sum of worker lifetimes) / runs``: slot time
  that no worker used (poll latency, the last run's tail), per run.

Worker start-up (Python, torch and sslbench imports, the dataset) is part of every run's time in
both scheduled phases; ``serial_inprocess_s`` shows what it costs. ``repeats`` alternates the
phases and keeps the fastest of each, since other load on the machine only ever adds time.

Each phase uses its own fresh store and run folders (the runs are identical, so a shared store
would just reuse them). The tiny run: embedded shapes data, small backbone, 64-d projector,
dim 16, 1 epoch of 128 images in batches of 64.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

TINY = {"dataset": "shapes", "backbone": "small", "projector": "64-d", "dim": 16, "epochs": 1,
        "batch_size": 64, "train_samples": 128, "method": "simclr", "device": "cpu"}


def use_home(path: Path) -> contextlib.AbstractContextManager[None]:
    """``path`` as SSLBENCH_HOME, with its default store, for the block."""
    from sslbench.paths import environ

    return environ({"SSLBENCH_HOME": str(path), "SSLBENCH_DB": None})


def _queue(store: Any, runs: int) -> list[str]:
    from sslbench.environment import capture
    from sslbench.train.setup import resolve_train_config

    env = capture()
    ids = []
    for seed in range(runs):
        cfg = resolve_train_config({**TINY, "seed": seed})
        store.upsert_run(run_id=cfg.run_id, kind="pretrain", config=cfg.to_dict(),
                         command=["bench"], env=env, tags=["sweep:bench"])
        ids.append(cfg.run_id)
    return ids


def _scheduled(root: Path, runs: int, workers: int, cores: int) -> Any:
    from sslbench.db import Store
    from sslbench.runs.devices import build_pool
    from sslbench.runs.scheduler import LocalScheduler

    with use_home(root), Store.open(f"sqlite:///{root / 'store.sqlite'}") as store:
        queue = _queue(store, runs)
        pool = build_pool(None, workers=workers, cores=cores)
        report = LocalScheduler(store, pool).run(queue)
        failed = {r: s for r, s in report.outcomes.items() if s != "completed"}
        if failed:
            raise RuntimeError(f"bench runs did not complete: {failed} (logs under {root})")
        return report


def _inprocess(root: Path, runs: int, cores: int) -> float:
    import torch

    from sslbench.config import from_dict
    from sslbench.db import Store
    from sslbench.train.loop import pretrain

    threads = torch.get_num_threads()
    torch.set_num_threads(cores)
    try:
        with use_home(root), Store.open(f"sqlite:///{root / 'store.sqlite'}") as store:
            queue = _queue(store, runs)
            t0 = time.perf_counter()
            for run_id in queue:
                from sslbench.config import TrainConfig

                cfg = from_dict(TrainConfig, store.get_run(run_id).config)
                pretrain(cfg, store, command=["bench"], progress=False)
            return time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)


def run(runs: int = 6, workers: int = 2, cores: int | None = None,
        repeats: int = 1) -> dict[str, Any]:
    """The benchmark record (see the module docstring). With ``repeats`` > 1 the phases
    alternate and each keeps its fastest repeat (background load only ever adds time)."""
    cores = cores or os.cpu_count() or 1
    serial = parallel = None
    inprocess = float("inf")
    with tempfile.TemporaryDirectory(prefix="sslbench-bench-sweep-") as tmp:
        for i in range(repeats):
            base = Path(tmp) / str(i)
            s = _scheduled(base / "serial", runs, 1, cores)
            p = _scheduled(base / "parallel", runs, workers, cores)
            inprocess = min(inprocess, _inprocess(base / "inprocess", runs, cores))
            serial = s if serial is None or s.wall_s < serial.wall_s else serial
            parallel = p if parallel is None or p.wall_s < parallel.wall_s else parallel
    assert serial is not None and parallel is not None
    return {
        "runs": runs, "workers": workers, "cores": cores, "repeats": repeats,
        "serial_s": round(serial.wall_s, 3), "parallel_s": round(parallel.wall_s, 3),
        "ratio": round(parallel.wall_s / serial.wall_s, 3),
        "serial_inprocess_s": round(inprocess, 3),
        "ratio_vs_inprocess": round(parallel.wall_s / inprocess, 3),
        "overhead_per_run_s": round(parallel.bookkeeping_s / max(parallel.launched, 1), 4),
        "idle_per_run_s": round((workers * parallel.wall_s - parallel.busy_s) / runs, 3),
    }
