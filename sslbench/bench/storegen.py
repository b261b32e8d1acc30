"""Synthetic stores for the store and report benchmarks, written through the product's own code.

:func:`build` fills an empty store with ``n_runs`` completed pretraining runs covering Table S5's
grid (5 paper methods x 4 projector families x 5 dims, the rest as seeds, or as further
configs of the grid with learning rates of their own: :func:`run_config`) and ``n_points``
metric points (``online_top1`` and ``loss`` per epoch), tagged as sweeps run on Slurm tag them
(:func:`run_tags`). A run's id is the product's, the hash of
its config (:func:`sslbench.config.run_id_of`): ids in no relation to the order the runs were
created in, as an index on them meets in a lab's store (with each run's number as its id,
Table S5 over a million runs took 1.9 s where hashed ids took 5.1 s, before schema 7). Runs and
their flattened params go through :meth:`Store.upsert_runs` (what ``sslbench sweep`` queues a
grid with), points and their summaries through :meth:`Store.write_batch` (what every training
run's buffered writer writes with), a few thousand runs per transaction. Only the runs'
lifecycle (status 'completed' and its times, which a real run gets from ``set_status`` attempt by
attempt) is set with one UPDATE per transaction.

On PostgreSQL the build ends with ``VACUUM ANALYZE``, what autovacuum does to a store filled
over months before anyone reads it: without it, the rows just written are not yet marked
visible to every transaction, and each index-only scan of the reports fetches every row's heap
page to check it (Table S5 over a million runs: about 3.8 s instead of 2.4 s).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from sslbench.config import run_id_of

if TYPE_CHECKING:
    from sslbench.db import Store
    from sslbench.db.ingest import Point
    from sslbench.db.records import NewRun

METHODS = (("vicreg", None), ("vicreg-exp", 0.1), ("vicreg-ctr", 0.15), ("simclr", 0.5),
           ("simclr", 0.15))
FAMILIES = ("d-d-d", "8192-8192-d", "2048-d", "2048-2048-d")
DIMS = (256, 512, 1024, 2048, 8192)
#: Table S5's cells: a run's (method, temperature, projector family, dim).
CELLS = [(m, t, f, d) for m, t in METHODS for f in FAMILIES for d in DIMS]
#: Configs of a synthetic store (seeds aside) unless asked: the grid's.
CONFIGS = len(CELLS)
#: Runs per transaction.
CHUNK_RUNS = 2000
#: Runs per sweep: the grid with 10 seeds. Every run is tagged as ``sslbench sweep`` tags it
#: (``sweep:grid-K``) and with the Slurm job array task that ran it (``slurm:JOB_TASK``, a job
#: of 100 tasks), as the Slurm backend tags it: at a million runs, a thousand sweeps and ten
#: thousand jobs. The reports read neither tag unless asked (``--sweep``): to them each config's
#: runs are one recipe, of 10,000 seeds at a million runs.
SWEEP_RUNS = 10 * len(CELLS)
JOB_TASKS = 100
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def config(method: str, tau: float | None, family: str, dim: int, seed: int) -> dict[str, Any]:
    """The resolved config of one synthetic ImageNet run (the paper's recipe)."""
    loss = ({"sim_coeff": 25.0, "std_coeff": 25.0, "cov_coeff": 1.0} if tau is None else
            {"temperature": tau} if method == "simclr" else
            {"sim_coeff": 1.0, "std_coeff": 1.0, "cov_coeff": 1.0, "temperature": tau})
    return {"method": method, "dataset": "imagefolder", "backbone": "resnet50",
            "cifar_stem": False, "projector": family, "dim": dim, "epochs": 100,
            "batch_size": 1024, "lr": 0.3, "optimizer": "lars", "weight_decay": 1e-6,
            "momentum": 0.9, "warmup_epochs": 10, "augment": "byol", "image_size": 224,
            "loss": loss, "probe_lr": 1e-3, "sync_bn": False, "train_samples": 0, "seed": seed,
            "preset": "paper"}


def run_config(i: int, configs: int = CONFIGS) -> dict[str, Any]:
    """The config of the ``i``-th synthetic run of a store of ``configs`` configs (its seed
    aside): they come in turn, then the next seed. The first hundred are the grid's cells; each
    next hundred is the grid again with a learning rate of its own (0.3001, 0.3002, ...), as a
    lab's learning-rate sweeps make configs that Table S5's cells group together."""
    c = i % configs
    method, tau, family, dim = CELLS[c % len(CELLS)]
    out = config(method, tau, family, dim, seed=i // configs)
    if c >= len(CELLS):
        out["lr"] = round(0.3 + 1e-4 * (c // len(CELLS)), 6)
    return out


def run_tags(i: int) -> list[str]:
    """The tags of the ``i``-th synthetic run: its sweep's and its Slurm job's."""
    return [f"sweep:grid-{i // SWEEP_RUNS}", f"slurm:{1000 + i // JOB_TASKS}_{i % JOB_TASKS}"]


def id_of(config: dict[str, Any]) -> str:
    """A synthetic run's id: the product's, from its config."""
    return run_id_of("pretrain", config)


def points_per_run(n_runs: int, n_points: int) -> int:
    return max(2, n_points // n_runs)


def _runs(n_runs: int, n_points: int, rng: random.Random, configs: int
          ) -> Iterator[tuple[NewRun, list[Point]]]:
    from sslbench.db.ingest import Point
    from sslbench.db.records import NewRun

    per_run = points_per_run(n_runs, n_points)
    epochs = {"online_top1": (per_run + 1) // 2, "loss": per_run // 2}
    for i in range(n_runs):
        cfg = run_config(i, configs)
        run_id = id_of(cfg)
        level = 60.0 + 8.0 * rng.random()
        at = T0 + timedelta(seconds=i)
        points = []
        for key, count in epochs.items():
            for e in range(count):
                value = (level * (1 - 0.5 ** (1 + e / 5)) + rng.gauss(0, 0.2)
                         if key == "online_top1" else 5.0 / (1 + e) + rng.gauss(0, 0.01))
                points.append(Point(run_id, key, e, value, e, at))
        yield NewRun(run_id=run_id, kind="pretrain", config=cfg, command=[], env={},
                     tags=run_tags(i)), points


def build(store: Store, n_runs: int, n_points: int, seed: int = 0,
          configs: int = CONFIGS) -> float:
    """Fill ``store`` (empty) with the synthetic runs of ``configs`` configs
    (:func:`run_config`); returns the seconds it took."""
    from sqlalchemy import update

    from sslbench.db.models import Run, RunStatus

    rng = random.Random(seed)
    start = time.perf_counter()
    runs: list[NewRun] = []
    points: list[Point] = []

    def write() -> None:
        store.upsert_runs(runs)
        store.write_batch(points)
        ids = [run.run_id for run in runs]
        with store._session(write=True) as session:  # the lifecycle: see the module docstring
            session.execute(update(Run).where(Run.run_id.in_(ids)).values(
                status=RunStatus.COMPLETED, attempts=1, host="bench", started_at=T0,
                ended_at=T0 + timedelta(hours=1)))
        runs.clear()
        points.clear()

    for run, history in _runs(n_runs, n_points, rng, configs):
        runs.append(run)
        points.extend(history)
        if len(runs) >= CHUNK_RUNS:
            write()
    if runs:
        write()
    _settle(store)
    return time.perf_counter() - start


def _settle(store: Store) -> None:
    """On PostgreSQL, ``VACUUM ANALYZE`` (outside a transaction, as it must run)."""
    from sqlalchemy import text

    if store._engine.dialect.name != "postgresql":
        return
    with store._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
