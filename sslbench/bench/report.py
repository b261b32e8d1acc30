"""How fast ``sslbench report table-s5`` and ``sslbench report all`` are on a large store.

``run()`` builds (once; it is cached in the temp folder, and a cached store of an older schema
is upgraded in place as any store is) a synthetic SQLite store of ``n_runs`` completed
pretraining runs of ``configs`` configs and ``n_points`` metric points
(:mod:`sslbench.bench.storegen`, which writes through the product's own bulk paths), then
times building the ``table-s5`` report and rendering it as a rich table, from opening the store
to the text, and (``report_all``) writing the one-file HTML report of every report, figures
included. It returns::

    {"report": "table-s5", "runs": ..., "configs": ..., "metric_points": ..., "seconds": ...,
     "target_s": 2.0, "repeats": [...], "all_seconds": ..., "all_target_s": 20.0,
     "store_build_s": ..., "cached": ...}

``seconds`` / ``all_seconds`` are the fastest of ``repeats`` timed runs (background load only
ever adds time); ``all_seconds`` is None without ``report_all``.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from sslbench.bench.storegen import CONFIGS

TARGET_S = 2.0
ALL_TARGET_S = 20.0
BENCH_VERSION = 4


def cached_store(n_runs: int, n_points: int, folder: Path | None = None,
                 configs: int = CONFIGS) -> tuple[Path, float, bool]:
    """(path, seconds spent building, whether it was already there) of the benchmark store."""
    from sslbench.db import SCHEMA_VERSION

    folder = Path(folder or Path(tempfile.gettempdir()) / "sslbench-bench-report")
    folder.mkdir(parents=True, exist_ok=True)
    name = _name(n_runs, n_points, configs)
    path = folder / f"{name}-s{SCHEMA_VERSION}-b{BENCH_VERSION}.sqlite"
    if path.exists():
        return path, 0.0, True
    if _upgrade_older(folder, path, name):
        return path, 0.0, True
    tmp = folder / f".{path.stem}.{os.getpid()}.sqlite"
    for leftover in (tmp, tmp.with_name(tmp.name + ".lock")):
        leftover.unlink(missing_ok=True)
    from sslbench.bench.storegen import build
    from sslbench.db import Store

    with Store.open(f"sqlite:///{tmp}") as store:
        seconds = build(store, n_runs, n_points, configs=configs)
    os.replace(tmp, path)
    tmp.with_name(tmp.name + ".lock").unlink(missing_ok=True)
    return path, seconds, False


def _name(n_runs: int, n_points: int, configs: int) -> str:
    """The cached store's name but its versions (the grid's hundred configs: unnamed)."""
    return f"store-{n_runs}-{n_points}" + ("" if configs == CONFIGS else f"-c{configs}")


def _upgrade_older(folder: Path, path: Path, name: str) -> bool:
    """Upgrade the newest cached store of an older schema version (the same runs and points)
    into ``path``, as opening it does to any user's store; False when there is none. Its backup
    is deleted: the store is a cache, and at a million runs the copy takes gigabytes."""
    from sslbench.db import SCHEMA_VERSION, Store

    for version in range(SCHEMA_VERSION - 1, 0, -1):
        older = folder / f"{name}-s{version}-b{BENCH_VERSION}.sqlite"
        if not older.exists():
            continue
        with Store.open(f"sqlite:///{older}", create=False) as store:
            backup = store.backup_path
        if backup is not None:
            backup.unlink(missing_ok=True)
        for suffix in ("", "-wal", "-shm"):  # a clean close leaves the file alone
            if older.with_name(older.name + suffix).exists():
                os.replace(older.with_name(older.name + suffix), path.with_name(path.name + suffix))
        older.with_name(older.name + ".lock").unlink(missing_ok=True)
        return True
    return False


def _url(store: Path | str) -> str:
    return store if isinstance(store, str) else f"sqlite:///{store}"


def time_report(path: Path | str, name: str = "table-s5") -> float:
    """Seconds to open the store (a SQLite file or a URL), build report ``name`` and render it
    as a rich table."""
    from sslbench.db import Store
    from sslbench.report import build_report, write_report

    start = time.perf_counter()
    with Store.open(_url(path), create=False) as store:
        write_report(build_report(name, store), "table")
    return time.perf_counter() - start


def time_report_all(path: Path | str, out: Path) -> float:
    """Seconds to open the store (a SQLite file or a URL) and write ``report all``'s HTML file
    into ``out``."""
    from sslbench.db import Store
    from sslbench.report import write_html

    start = time.perf_counter()
    with Store.open(_url(path), create=False) as store:
        write_html(store, out)
    return time.perf_counter() - start


def run(n_runs: int = 10_000, n_points: int = 1_000_000, *, repeats: int = 3,
        folder: Path | None = None, report_all: bool = True, configs: int = CONFIGS
        ) -> dict[str, Any]:
    """Time ``report table-s5`` (and ``report all``) on the synthetic store (see the module
    docstring)."""
    path, build_s, cached = cached_store(n_runs, n_points, folder, configs)
    times = [time_report(path) for _ in range(max(1, repeats))]
    every = []
    if report_all:
        with tempfile.TemporaryDirectory() as out:
            every = [time_report_all(path, Path(out)) for _ in range(max(1, repeats))]
    from sslbench.bench.storegen import points_per_run

    return {"report": "table-s5", "runs": n_runs, "configs": min(configs, n_runs),
            "metric_points": n_runs * points_per_run(n_runs, n_points),
            "seconds": round(min(times), 4), "target_s": TARGET_S,
            "repeats": [round(t, 4) for t in times],
            "all_seconds": round(min(every), 3) if every else None,
            "all_target_s": ALL_TARGET_S, "store_build_s": round(build_s, 2),
            "cached": cached}
