"""How fast ``sslbench report table-s5`` and ``sslbench report all`` are on a large store.

``run()`` builds (once; it is cached in the temp folder) a synthetic SQLite store with
``n_runs`` completed pretraining runs covering Table S5's grid (5 paper methods x 4 projector
families x 5 dims, the rest as seeds) and ``n_points`` metric points (``online_top1`` and
``loss`` per epoch, with their summaries), then times building the ``table-s5`` report and
rendering it as a rich table, from opening the store to the text, and (``report_all``) writing
the one-file HTML report of every report, figures included. It returns::

    {"report": "table-s5", "runs": ..., "metric_points": ..., "seconds": ..., "target_s": 2.0,
     "repeats": [...], "all_seconds": ..., "all_target_s": 10.0, "store_build_s": ...,
     "cached": ...}

``seconds`` / ``all_seconds`` are the fastest of ``repeats`` timed runs (background load only
ever adds time); ``all_seconds`` is None without ``report_all``.
The store is written with bulk inserts through the DB-API driver, in exactly the layout the
``Store`` writes (params flattened, NaN-free summaries with final / best / min / max / count).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TARGET_S = 2.0
ALL_TARGET_S = 10.0
BENCH_VERSION = 1
METHODS = (("vicreg", None), ("vicreg-exp", 0.1), ("vicreg-ctr", 0.15), ("simclr", 0.5),
           ("simclr", 0.15))
FAMILIES = ("d-d-d", "8192-8192-d", "2048-d", "2048-2048-d")
DIMS = (256, 512, 1024, 2048, 8192)
_STAMP = "2024-01-01 00:00:00.000000"

Row = tuple[Any, ...]  # one row of a table, in its INSERT's column order


def _config(method: str, tau: float | None, family: str, dim: int, seed: int) -> dict[str, Any]:
    loss = ({"sim_coeff": 25.0, "std_coeff": 25.0, "cov_coeff": 1.0} if tau is None else
            {"temperature": tau} if method == "simclr" else
            {"sim_coeff": 1.0, "std_coeff": 1.0, "cov_coeff": 1.0, "temperature": tau})
    return {"method": method, "dataset": "imagefolder", "backbone": "resnet50",
            "cifar_stem": False, "projector": family, "dim": dim, "epochs": 100,
            "batch_size": 1024, "lr": 0.3, "optimizer": "lars", "weight_decay": 1e-6,
            "momentum": 0.9, "warmup_epochs": 10, "augment": "byol", "image_size": 224,
            "loss": loss, "probe_lr": 1e-3, "sync_bn": False, "train_samples": 0, "seed": seed,
            "preset": "paper"}


def _rows(n_runs: int, n_points: int,
          rng: random.Random) -> Iterator[tuple[Row, list[Row], list[Row], list[Row]]]:
    """Yields (run row, param rows, metric rows, summary rows) for each synthetic run."""
    from sslbench.db.values import encode_param, flatten

    per_run = max(2, n_points // n_runs)
    epochs = {"online_top1": (per_run + 1) // 2, "loss": per_run // 2}
    cells = [(m, t, f, d) for m, t in METHODS for f in FAMILIES for d in DIMS]
    for i in range(n_runs):
        method, tau, family, dim = cells[i % len(cells)]
        config = _config(method, tau, family, dim, seed=i // len(cells))
        run_id = f"{i:012x}"
        yield ((run_id, "pretrain", "completed", method, config["dataset"], None,
                json.dumps(config, sort_keys=True), "[]", "{}", "[]", None, "bench", None, 1,
                _STAMP, _STAMP, _STAMP, _STAMP, _STAMP),
               [(run_id, key, *encode_param(value)) for key, value in flatten(config)],
               *_history(run_id, epochs, 60.0 + 8.0 * rng.random(), rng))


def _history(run_id: str, epochs: dict[str, int], level: float,
             rng: random.Random) -> tuple[list[Row], list[Row]]:
    metrics: list[Row] = []
    summaries: list[Row] = []
    for key, count in epochs.items():
        if key == "online_top1":
            values = [level * (1 - 0.5 ** (1 + e / 5)) + rng.gauss(0, 0.2) for e in range(count)]
            goal = "max"
        else:
            values = [5.0 / (1 + e) + rng.gauss(0, 0.01) for e in range(count)]
            goal = "min"
        metrics += [(run_id, key, e, e, v, _STAMP) for e, v in enumerate(values)]
        best = max(range(count), key=lambda e: values[e] if goal == "max" else -values[e])
        summaries.append((run_id, key, goal, values[-1], count - 1, values[best], best,
                          min(values), max(values), count, _STAMP))
    return metrics, summaries


def build_store(path: Path, n_runs: int, n_points: int, seed: int = 0) -> None:
    """Write the synthetic store to ``path`` (a new SQLite file)."""
    from sslbench.db import Store
    from sslbench.db.engine import build_engine, parse_url

    url = f"sqlite:///{path}"
    Store.open(url).close()  # creates the schema exactly as sslbench does
    engine = build_engine(parse_url(url))
    rng = random.Random(seed)
    batches: dict[str, list[Row]] = {"runs": [], "params": [], "metrics": [],
                                                 "summaries": []}
    sql = {"runs": "INSERT INTO runs (run_id, kind, status, method, dataset, parent_id, "
                   "config_json, command_json, env_json, tags_json, error, host, pid, attempts, "
                   "created_at, updated_at, started_at, ended_at, heartbeat_at) VALUES "
                   f"({', '.join('?' * 19)})",
           "params": "INSERT INTO params (run_id, key, value_type, value_text, value_num) "
                     "VALUES (?, ?, ?, ?, ?)",
           "metrics": "INSERT INTO metrics (run_id, key, step, epoch, value, logged_at) VALUES "
                      "(?, ?, ?, ?, ?, ?)",
           "summaries": "INSERT INTO summaries (run_id, key, goal, final, final_step, best, "
                        "best_step, min, max, count, updated_at) VALUES "
                        f"({', '.join('?' * 11)})"}
    try:
        with engine.begin() as conn:
            for run, params, metrics, summaries in _rows(n_runs, n_points, rng):
                batches["runs"].append(run)
                batches["params"] += params
                batches["metrics"] += metrics
                batches["summaries"] += summaries
                if len(batches["metrics"]) >= 100_000:
                    _flush(conn, sql, batches)
            _flush(conn, sql, batches)
    finally:
        engine.dispose()


def _flush(conn: Any, sql: dict[str, str], batches: dict[str, list[Row]]) -> None:
    for table in ("runs", "params", "metrics", "summaries"):  # parents before children
        if batches[table]:
            conn.exec_driver_sql(sql[table], batches[table])
            batches[table] = []


def cached_store(n_runs: int, n_points: int, folder: Path | None = None) -> tuple[Path, float,
                                                                               bool]:
    """(path, seconds spent building, whether it was already there) of the benchmark store."""
    from sslbench.db import SCHEMA_VERSION

    folder = Path(folder or Path(tempfile.gettempdir()) / "sslbench-bench-report")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"store-{n_runs}-{n_points}-s{SCHEMA_VERSION}-b{BENCH_VERSION}.sqlite"
    if path.exists():
        return path, 0.0, True
    tmp = folder / f".{path.stem}.{os.getpid()}.sqlite"
    for leftover in (tmp, tmp.with_name(tmp.name + ".lock")):
        leftover.unlink(missing_ok=True)
    start = time.perf_counter()
    build_store(tmp, n_runs, n_points)
    os.replace(tmp, path)
    return path, time.perf_counter() - start, False


def time_report(path: Path, name: str = "table-s5") -> float:
    """Seconds to open the store, build report ``name`` and render it as a rich table."""
    from sslbench.db import Store
    from sslbench.report import build_report, write_report

    start = time.perf_counter()
    with Store.open(f"sqlite:///{path}", create=False) as store:
        write_report(build_report(name, store), "table")
    return time.perf_counter() - start


def time_report_all(path: Path, out: Path) -> float:
    """Seconds to open the store and write ``report all``'s HTML file into ``out``."""
    from sslbench.db import Store
    from sslbench.report import write_html

    start = time.perf_counter()
    with Store.open(f"sqlite:///{path}", create=False) as store:
        write_html(store, out)
    return time.perf_counter() - start


def run(n_runs: int = 10_000, n_points: int = 1_000_000, *, repeats: int = 3,
        folder: Path | None = None, report_all: bool = True) -> dict[str, Any]:
    """Time ``report table-s5`` (and ``report all``) on the synthetic store (see the module
    docstring)."""
    path, build_s, cached = cached_store(n_runs, n_points, folder)
    times = [time_report(path) for _ in range(max(1, repeats))]
    every = []
    if report_all:
        with tempfile.TemporaryDirectory() as out:
            every = [time_report_all(path, Path(out)) for _ in range(max(1, repeats))]
    return {"report": "table-s5", "runs": n_runs,
            "metric_points": n_runs * max(2, n_points // n_runs),
            "seconds": round(min(times), 4), "target_s": TARGET_S,
            "repeats": [round(t, 4) for t in times],
            "all_seconds": round(min(every), 3) if every else None,
            "all_target_s": ALL_TARGET_S, "store_build_s": round(build_s, 2),
            "cached": cached}
