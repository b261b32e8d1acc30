"""``sslbench bench slurm``: N one-epoch tiny runs as one Slurm job array on a 2-CPU node, one CPU
per task, against the same runs one after another.

It starts a throw-away one-node Slurm cluster (:mod:`sslbench.bench.slurm_cluster`: root and
Debian's slurm-wlm and munge needed) and runs both phases from a fresh store and run folders each
(the runs are identical, so a shared store would just reuse them), through the same code as
``sslbench sweep``:

- ``serial_s``: the local scheduler with one CPU worker -- the runs one after another, each in
  its own worker process, as ``sslbench sweep --workers 1`` runs them;
- ``array_s``: ``sslbench sweep --backend slurm`` with ``cpus_per_task = 1``: the array
  submitted held, the runs queued, the array released, until the last run has ended;
- ``ratio``: ``array_s / serial_s`` (target: at most 0.6 with 4 runs on 2 CPUs);
- ``overlap_s``: how long two runs' attempts trained at the same time in the array phase (0 if
  the tasks had queued behind each other), and ``task_start_s``: the mean time from the
  submission to each run's start (Slurm scheduling, the task's Python and store start-up).

Both phases time the queueing of the runs in the store too. The generated data is cached before
either phase, so neither pays for drawing it. ``repeats`` alternates the phases and keeps the
fastest of each, since other load on the machine only ever adds time. The tiny run is
:data:`sslbench.bench.sweep.TINY` (embedded shapes data, small backbone, 1 epoch of 128 images).
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sslbench.bench.sweep import TINY, use_home
from sslbench.db.models import TERMINAL_STATUSES
from sslbench.errors import ConfigError


def _plan(root: Path, runs: int, store: Any) -> Any:
    from sslbench.runs.plan import build_plan, with_statuses
    from sslbench.runs.sweepfile import load_sweep

    fixed = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in TINY.items())
    path = root / "bench.toml"
    path.write_text(f'name = "bench"\n[fixed]\n{fixed}\n[grid]\nseed = {list(range(runs))}\n'
                    "[eval]\nprotocols = []\n[slurm]\ncpus_per_task = 1\ntime = 10\n")
    return with_statuses(build_plan(load_sweep(str(path), [])), store, retry_failed=False)


def _queue(plan: Any, store: Any) -> list[str]:
    from sslbench.runs.plan import apply_plan

    return apply_plan(plan, store, max_attempts=1, command=["sslbench", "bench", "slurm"])


def _serial(root: Path, runs: int) -> float:
    from sslbench.db import Store
    from sslbench.runs.devices import build_pool
    from sslbench.runs.scheduler import LocalScheduler

    root.mkdir(parents=True)
    with use_home(root), Store.open(f"sqlite:///{root / 'store.sqlite'}") as store:
        plan = _plan(root, runs, store)
        t0 = time.perf_counter()
        LocalScheduler(store, build_pool(None, workers=1, cores=1)).run(_queue(plan, store))
        wall = time.perf_counter() - t0
        _require_completed(store, plan.queue, root)
        return wall


def _array(root: Path, runs: int, timeout: float) -> dict[str, float]:
    from sslbench.db import Store
    from sslbench.runs.slurm import make_executor, submit_sweep

    root.mkdir(parents=True)
    with use_home(root), Store.open(f"sqlite:///{root / 'store.sqlite'}") as store:
        plan = _plan(root, runs, store)
        executor = make_executor("slurm", root / "slurm" / "bench", plan.spec.slurm, hold=True)
        t0, started = time.perf_counter(), datetime.now(timezone.utc)
        submit_sweep(plan, store, executor, held=True, queue=lambda: _queue(plan, store),
                     max_attempts=1)
        while any(r.status not in TERMINAL_STATUSES
                  for r in store.runs_by_id(plan.queue).values()):
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"the array did not finish within {timeout:.0f} s "
                                   f"(logs under {root / 'slurm'})")
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        _require_completed(store, plan.queue, root)
        spans = [(_utc(a["started_at"]), _utc(a["ended_at"]))
                 for a in (store.attempt_details(r)[-1] for r in plan.queue)]
    overlap = sum(max(0.0, (min(a[1], b[1]) - max(a[0], b[0])).total_seconds())
                  for i, a in enumerate(spans) for b in spans[i + 1:])
    start = sum((s[0] - started).total_seconds() for s in spans) / len(spans)
    return {"array_s": wall, "overlap_s": overlap, "task_start_s": start}


def _utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _require_completed(store: Any, run_ids: list[str], root: Path) -> None:
    failed = {r: rec.status for r, rec in store.runs_by_id(run_ids).items()
              if rec.status != "completed"}
    if failed:
        raise RuntimeError(f"bench runs did not complete: {failed} (logs under {root})")


def run(runs: int = 4, cpus: int = 2, repeats: int = 1, timeout: float = 600) -> dict[str, Any]:
    """The benchmark record (see the module docstring)."""
    from sslbench.bench import slurm_cluster
    from sslbench.data import load_dataset

    why = slurm_cluster.unavailable()
    if why is not None:
        raise ConfigError(f"bench slurm starts a throw-away Slurm cluster here, and cannot: "
                          f"{why}")
    for split in ("train", "test"):
        load_dataset(str(TINY["dataset"]), split)  # into the cache the workers read
    serial, array = float("inf"), {"array_s": float("inf")}
    with tempfile.TemporaryDirectory(prefix="sslbench-bench-slurm-") as tmp, \
            slurm_cluster.running(cpus):
        os.chmod(tmp, 0o755)  # the tasks run as the submitting user; keep the folder reachable
        for i in range(repeats):
            phase = _array(Path(tmp) / f"array{i}", runs, timeout)
            array = phase if phase["array_s"] < array["array_s"] else array
            serial = min(serial, _serial(Path(tmp) / f"serial{i}", runs))
    return {"runs": runs, "node_cpus": cpus, "cpus_per_task": 1, "repeats": repeats,
            "serial_s": round(serial, 3), "array_s": round(array["array_s"], 3),
            "ratio": round(array["array_s"] / serial, 3),
            "overlap_s": round(array["overlap_s"], 3),
            "task_start_s": round(array["task_start_s"], 3)}
