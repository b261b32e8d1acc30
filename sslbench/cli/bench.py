"""``sslbench bench NAME``: the speed benchmarks of :mod:`sslbench.bench`, as a table or JSON.

Each command runs one benchmark's ``run`` and renders its rows; nothing is written to the store.
"""

from __future__ import annotations

from typing import Any

import typer

from sslbench.bench.storegen import CONFIGS
from sslbench.cli.common import Device, Format, ProbeAugment, bench_app, echo_json
from sslbench.errors import ConfigError

CONFIGS_HELP = ("Distinct configs of the synthetic runs, seeds aside: Table S5's grid, then the "
                "grid again with learning rates of their own.")


def _positive(**values: float) -> None:
    """Each option must be positive (one line naming the first that is not)."""
    from sslbench.config import require_positive

    for name, value in values.items():
        require_positive(name, value)


def _output(rows: Any, fmt: str) -> None:
    if fmt == "json":
        echo_json(rows)
        return
    from sslbench.report.text import records_table

    typer.echo(records_table(rows if isinstance(rows, list) else [rows]))


@bench_app.command("criteria")
def bench_criteria(fmt: Format = "table") -> None:
    """Forward+backward time and peak memory of the criteria, direct vs dual."""
    from sslbench.bench.criteria import run

    _output(run(), fmt)


@bench_app.command("augment")
def bench_augment(fmt: Format = "table") -> None:
    """Images/s of the batched augmentations vs torchvision's per-sample PIL pipeline."""
    from sslbench.bench.augment import run

    _output(run(), fmt)


@bench_app.command("report")
def bench_report(
    fmt: Format = "table",
    runs: int = typer.Option(10_000, help="Runs in the synthetic store."),
    points: int = typer.Option(1_000_000, help="Metric points in the synthetic store."),
    configs: int = typer.Option(CONFIGS, help=CONFIGS_HELP),
) -> None:
    """`report table-s5` and `report all` over a synthetic store (cached in the temp folder)."""
    from sslbench.bench.report import run

    _positive(runs=runs, points=points, configs=configs)
    _output(run(runs, points, configs=configs), fmt)


@bench_app.command("store")
def bench_store(
    fmt: Format = "table",
    runs: int = typer.Option(1_000_000, help="Runs in the large synthetic store."),
    points: int = typer.Option(20_000_000, help="Metric points in the large store."),
    configs: int = typer.Option(CONFIGS, help=CONFIGS_HELP),
    steps: int = typer.Option(2000, help="Steps (two metrics each) of the ingestion runs."),
    writers: int = typer.Option(8, help="Processes logging into one store at once."),
    writer_points: int = typer.Option(100_000, help="Points each of them logs."),
    report_all: bool = typer.Option(True, "--report-all/--no-report-all",
                                    help="Also time `report all` on the large store."),
    db: str | None = typer.Option(None, "--db", metavar="URL", help="An empty database "
                                  "(PostgreSQL) to run in instead of temporary SQLite files; "
                                  "every table made there is dropped at the end."),
) -> None:
    """The store at lab scale: ingestion vs MLflow, the cost of a log call, concurrent
    writers, and reports, listings and eval --pending on a large store."""
    from sslbench.bench.store import run

    _positive(runs=runs, points=points, configs=configs, steps=steps, writers=writers,
              writer_points=writer_points)
    if db is not None:
        from sslbench.db.engine import parse_url

        parse_url(db)  # a malformed URL is one line before anything runs
    _output(run(runs=runs, points=points, steps=steps, writers=writers,
                writer_points=writer_points, url=db, report_all=report_all,
                configs=configs), fmt)


@bench_app.command("scan")
def bench_scan(fmt: Format = "table",
               images: int = typer.Option(10_000, help="JPEGs in the generated folder.")) -> None:
    """The up-front image-folder check (headers only) vs listing and decoding the folder."""
    from sslbench.bench.scan import run

    _positive(images=images)
    _output(run(images=images), fmt)


@bench_app.command("train")
def bench_train(fmt: Format = "table", device: Device = "auto") -> None:
    """Pretraining images/s and data-pipeline overhead on synthetic data."""
    from sslbench.bench.train import run

    _output(run(device=device), fmt)


@bench_app.command("eval")
def bench_eval(fmt: Format = "table", probe_augment: ProbeAugment = "auto",
               device: Device = "auto") -> None:
    """The fast linear protocol vs the paper's offline protocol: time and accuracy."""
    from sslbench.bench.eval import run

    _output(run(probe_augment=probe_augment, device=device), fmt)


@bench_app.command("sweep")
def bench_sweep(
    fmt: Format = "table",
    runs: int = typer.Option(6, help="Tiny pretraining runs."),
    workers: int = typer.Option(2, help="CPU workers of the scheduler."),
    repeats: int = typer.Option(1, help="Alternate the phases this often; keep the fastest."),
) -> None:
    """N tiny runs on CPU workers against one after another: speed-up and overhead."""
    from sslbench.bench.sweep import run

    _positive(runs=runs, workers=workers, repeats=repeats)
    _output(run(runs=runs, workers=workers, repeats=repeats), fmt)


@bench_app.command("slurm")
def bench_slurm(
    fmt: Format = "table",
    runs: int = typer.Option(4, help="One-epoch tiny pretraining runs."),
    cpus: int = typer.Option(2, help="CPUs of the throw-away cluster's node (1 per task)."),
    repeats: int = typer.Option(1, help="Alternate the phases this often; keep the fastest."),
) -> None:
    """N tiny runs as one Slurm job array (a throw-away one-node cluster) vs one after another."""
    from sslbench.bench.slurm import run

    _positive(runs=runs, cpus=cpus, repeats=repeats)
    _output(run(runs=runs, cpus=cpus, repeats=repeats), fmt)


@bench_app.command("tune")
def bench_tune(
    fmt: Format = "table",
    epochs: int | None = typer.Option(None, help="Epochs of each configuration (default: the "
                                      "demo's, 15; ASHA's rungs are at 2, 6, 18, ...)."),
    samples: int = typer.Option(0, help="Training images per run (0: all of shapes)."),
    workers: int = typer.Option(2, help="CPU workers of the scheduler."),
) -> None:
    """A 12-point grid to the end vs the same points with ASHA pruning: best found, epochs."""
    from sslbench.bench.tune import run

    _positive(workers=workers, **({} if epochs is None else {"epochs": epochs}))
    if samples < 0:
        raise ConfigError(f"--samples must be >= 0, got {samples}")
    _output(run(epochs=epochs, samples=samples, workers=workers), fmt)
