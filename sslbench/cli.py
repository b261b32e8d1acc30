"""The ``sslbench`` command line: parse, validate, call one library function, render.

Heavy modules (torch, the store, pandas) are imported inside the commands that need them, so
``sslbench --help`` stays instant. Expected failures (SSLBenchError) print one line to stderr and
exit with code 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from sslbench.errors import SSLBenchError

# rich_markup_mode=None: help texts show "[default]" literally instead of parsing it as markup.
app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  rich_markup_mode=None,
                  help="Pretrain, evaluate and compare SSL criteria; every run lands in a SQL "
                       "store.")
runs_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                       help="List and inspect runs in the store.")
bench_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                        help="Speed benchmarks that print JSON.")
app.add_typer(runs_app, name="runs")
app.add_typer(bench_app, name="bench")

FORMATS = ("table", "json")


def handle_errors(fn: Callable) -> Callable:
    """Turns SSLBenchError into one line on stderr and exit code 1."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SSLBenchError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from None
    return wrapper


class _State:
    db: str | None = None


@app.callback()
def _main(db: str | None = typer.Option(
        None, "--db", envvar="SSLBENCH_DB", metavar="URL",
        help="SQLAlchemy URL of the store (default: sqlite file in $SSLBENCH_HOME/db/).")) -> None:
    _State.db = db


def open_store(create: bool = True):
    """The store of ``--db``; says on stderr when opening it upgraded an older schema."""
    from sslbench.db import SCHEMA_VERSION, Store

    store = Store.open(_State.db, create=create)
    if store.upgraded_from is not None:
        backup = f"; the old store is backed up at {store.backup_path}" if store.backup_path else ""
        typer.echo(f"upgraded the store {store.display_url} from schema version "
                   f"{store.upgraded_from} to {SCHEMA_VERSION}{backup}", err=True)
    return store


def _command() -> list[str]:
    return ["sslbench", *sys.argv[1:]]


def _echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def _check_format(fmt: str, allowed: tuple[str, ...] = FORMATS) -> None:
    if fmt not in allowed:
        from sslbench.errors import ConfigError

        raise ConfigError(f"unknown --format {fmt!r}: choose one of {', '.join(allowed)}")


# --------------------------------------------------------------------------- train

def _opt(help: str, *decls: str) -> Any:
    """An option whose absence means "use the preset's or the built-in default"."""
    return typer.Option(None, *decls, help=help, show_default=False)


@app.command()
@handle_errors
def train(
    method: str | None = _opt("Criterion [simclr]: simclr, vicreg, vicreg-exp, vicreg-ctr, "
                                 "barlow, dcl, scl, tcr, ... (see `sslbench methods`)."),
    preset: str | None = _opt("Bundle of values that explicit flags override: paper "
                                 "(Table S6), cifar, tiny."),
    dataset: str | None = _opt("Dataset [shapes]: shapes, digits, cifar10, cifar100, stl10, "
                                  "imagefolder, synthetic."),
    data_root: str | None = _opt("Folder holding the dataset (not needed for the embedded "
                                    "shapes and digits)."),
    backbone: str | None = _opt("Backbone [small]: small, resnet18, resnet50."),
    projector: str | None = _opt("Projector [2048-d], widths with d = --dim: 8192-8192-d, "
                                    "d-d-d, 2048-d, 512-512-128, none."),
    dim: int | None = _opt("Embedding dimension d, the projector output [128]."),
    epochs: int | None = _opt("Pretraining epochs [10]."),
    batch_size: int | None = _opt("Global batch size [256] (split across processes)."),
    lr: float | None = _opt("Base learning rate [0.3], scaled by batch_size/256."),
    optimizer: str | None = _opt("lars [default], sgd or adamw."),
    weight_decay: float | None = _opt("Weight decay [1e-6], not on biases and norms."),
    warmup_epochs: int | None = _opt("Linear warm-up epochs [epochs/10, at most 10]."),
    augment: str | None = _opt("Augmentation recipe: byol, cifar, small [by dataset]."),
    image_size: int | None = _opt("Training resolution in pixels, >= 1 [the dataset's]."),
    cifar_stem: bool | None = _opt("ResNet stem for small images [cifar when size <= 64].",
                                      "--cifar-stem/--imagenet-stem"),
    train_samples: int | None = _opt("Use only this many training images, at most the "
                                        "dataset's [0 = all]."),
    seed: int | None = _opt("Random seed in 0 .. 2**63-1 [0]; CPU runs are repeatable."),
    temperature: float | None = _opt("Loss temperature (SimCLR/DCL families, VICReg-exp/ctr)."),
    sim_coeff: float | None = _opt("VICReg-family invariance weight (lambda)."),
    std_coeff: float | None = _opt("VICReg-family variance weight (mu)."),
    cov_coeff: float | None = _opt("VICReg-family covariance weight (nu)."),
    lambd: float | None = _opt("Barlow Twins off-diagonal weight."),
    impl: str | None = _opt("Squared-Frobenius terms: auto [default], direct or dual."),
    probe_lr: float | None = _opt("Learning rate of the online linear probe [1e-3]."),
    sync_bn: bool | None = _opt("SyncBatchNorm across processes under torchrun [off].",
                                   "--sync-bn/--no-sync-bn"),
    device: str | None = _opt("auto [default], cpu, cuda or cuda:N."),
    num_workers: int | None = _opt("DataLoader workers for image folders [0]."),
    threads: int | None = _opt("CPU intra-op threads [1]. Recorded at the run's first start "
                                  "and kept by every resume: one run id, one result."),
    compile_model: bool | None = _opt("torch.compile the model [off].",
                                         "--compile/--no-compile"),
    progress: bool = typer.Option(True, "--progress/--quiet", help="Show a progress bar."),
    fmt: str = typer.Option("table", "--format", help="table or json (the finished run)."),
) -> None:
    """Pretrain one SSL criterion with an online linear probe; resumes or reuses its run."""
    _check_format(fmt)
    from sslbench.train.setup import resolve_train_config

    options = dict(method=method, preset=preset, dataset=dataset, data_root=data_root,
                   backbone=backbone,
                   projector=projector, dim=dim, epochs=epochs, batch_size=batch_size, lr=lr,
                   optimizer=optimizer, weight_decay=weight_decay, warmup_epochs=warmup_epochs,
                   augment=augment, image_size=image_size, cifar_stem=cifar_stem,
                   train_samples=train_samples, seed=seed, probe_lr=probe_lr, sync_bn=sync_bn,
                   device=device, num_workers=num_workers, compile=compile_model,
                   threads=threads)
    loss = {k: v for k, v in dict(temperature=temperature, sim_coeff=sim_coeff,
                                  std_coeff=std_coeff, cov_coeff=cov_coeff, lambd=lambd,
                                  impl=impl).items() if v is not None}
    cfg = resolve_train_config(options, loss)
    from sslbench.train.loop import pretrain

    store = open_store()
    result = pretrain(cfg, store, command=_command(), progress=progress and sys.stderr.isatty())
    if fmt == "json":
        _echo_json(store.get_run(result.run_id).to_dict(summary=store.summary(result.run_id)))
    else:
        verb = "reused completed run" if result.reused else f"run {result.status}"
        top1 = result.summary.get("online_top1")
        acc = f", online top-1 {top1:.2f}%" if top1 is not None else ""
        typer.echo(f"{result.run_id}: {verb}{acc} ({result.run_dir})")
    if result.status == "interrupted":
        typer.echo("interrupted: re-run the same command to resume from the checkpoint", err=True)
        raise typer.Exit(1)


# --------------------------------------------------------------------------- eval

@app.command("eval")
@handle_errors
def eval_(
    run_id: str | None = typer.Argument(None, help="Pretraining run to evaluate."),
    protocol: str = typer.Option("fast-linear,knn", help="Comma-separated: fast-linear (linear "
                                 "probe on cached features), knn (the paper's k x T sweep), "
                                 "linear (the paper's offline protocol), analysis; or all."),
    pending: bool = typer.Option(False, "--pending", help="Evaluate every completed pretraining "
                                 "run that lacks one of the protocols."),
    random_init: bool = typer.Option(False, "--random-init", help="Evaluate a randomly "
                                     "initialised backbone instead (a baseline)."),
    backbone: str = typer.Option("small", help="With --random-init: the backbone."),
    dataset: str = typer.Option("shapes", help="With --random-init: the dataset."),
    data_root: str = typer.Option("", help="With --random-init: the dataset folder."),
    projector: str = typer.Option("none", help="With --random-init: projector spec (analysis)."),
    dim: int = typer.Option(0, help="With --random-init: embedding dim of the projector."),
    seed: int | None = typer.Option(None, help="Seed (default: the run's)."),
    linear_epochs: int = typer.Option(100, help="Epochs of the linear probes."),
    batch_size: int = typer.Option(256, help="Batch size of the linear probes."),
    lr: float = typer.Option(0.25, help="Base lr of the linear probes (x batch/256)."),
    probe_augment: str = typer.Option("auto", help="Training images of the linear protocol: "
                                      "crop-flip (the paper's), flip, none; auto = the "
                                      "dataset's (crop-flip; flip on shapes, none on digits)."),
    standardize: bool = typer.Option(True, "--standardize/--no-standardize", help="Standardise "
                                     "each representation dimension before the linear probes "
                                     "(--no-standardize: the paper's literal recipe)."),
    samples: int = typer.Option(1024, help="Images used by the analysis protocol."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    fmt: str = typer.Option("table", "--format", help="table or json."),
) -> None:
    """Probe and analyse frozen backbones; every result is an eval run in the store."""
    _check_format(fmt)
    from sslbench.config import PROBE_AUGMENTS, require_choice
    from sslbench.errors import ConfigError
    from sslbench.evaluate.run import (
        eval_config_for,
        evaluate_protocols,
        parse_protocols,
        random_init_config,
    )
    from sslbench.evaluate.run import pending as pending_runs

    _validate_eval_options(seed=seed, linear_epochs=linear_epochs, batch_size=batch_size, lr=lr,
                           samples=samples,
                           **(dict(projector=projector, dim=dim) if random_init else {}))
    if probe_augment != "auto":
        require_choice("--probe-augment", probe_augment, PROBE_AUGMENTS)
    protocols = parse_protocols(protocol)
    if sum([run_id is not None, random_init, pending]) != 1:
        raise ConfigError("give a RUN_ID, or --random-init for a baseline, or --pending")
    store = open_store()
    opts = dict(seed=seed, linear_epochs=linear_epochs, batch_size=batch_size, lr=lr,
                probe_augment=probe_augment, probe_standardize=standardize, samples=samples,
                device=device)
    if pending:
        targets = [(eval_config_for(store, r, **opts), (p,))
                   for r, p in pending_runs(store, protocols)]
    elif random_init:
        targets = [(random_init_config(backbone=backbone, dataset=dataset, data_root=data_root,
                                       projector=projector, dim=dim, **opts), protocols)]
    else:
        targets = [(eval_config_for(store, run_id, **opts), protocols)]
    results = [r for cfg, ps in targets
               for r in evaluate_protocols(store, cfg, ps, command=_command())]
    if fmt == "json":
        _echo_json([store.get_run(r.run_id).to_dict(summary=store.summary(r.run_id))
                    for r in results])
        return
    if not results:
        typer.echo("nothing to evaluate: every completed run has these protocols")
    for r in results:
        typer.echo(f"{r.run_id} {r.protocol:<11} {_headline(r.summary)}"
                   + (" [reused]" if r.reused else ""))


def _validate_eval_options(**options: Any) -> None:
    """The eval options checked as EvalConfig fields, before the store is opened (the run's
    own values fill what is not given, and were checked when it was trained)."""
    from sslbench.config import EvalConfig, replace, validate_eval

    validate_eval(replace(EvalConfig(), **{k: v for k, v in options.items() if v is not None}))


def _headline(summary: dict) -> str:
    keys = ("fast_linear_top1", "linear_top1", "knn_top1", "rankme_repr", "rankme_emb")
    parts = [f"{k} {summary[k]:.2f}" for k in keys if k in summary]
    if "knn_k" in summary:
        parts.append(f"(k={summary['knn_k']:g}, T={summary['knn_temperature']:g})")
    return "  ".join(parts)


@app.command()
@handle_errors
def compare(
    run_ids: list[str] = typer.Argument(..., help="Pretraining runs to compare."),
    cka: bool = typer.Option(True, "--cka/--no-cka", help="Linear CKA of the representations."),
    random: bool = typer.Option(True, "--random/--no-random", help="Include a randomly "
                                "initialised network of the first run's architecture."),
    samples: int = typer.Option(1024, help="Test images used."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    fmt: str = typer.Option("table", "--format", help="table or json."),
) -> None:
    """Linear CKA between runs (Figure S2); the matrix is printed and stored."""
    _check_format(fmt)
    from sslbench.config import require_positive
    from sslbench.errors import ConfigError
    from sslbench.evaluate.compare import cka_between

    if not cka:
        raise ConfigError("compare computes CKA only for now: drop --no-cka")
    require_positive("samples", samples)
    out = cka_between(open_store(), run_ids, samples=samples, random_baseline=random,
                      device=device, command=_command())
    if fmt == "json":
        _echo_json(out)
        return
    import pandas as pd

    from sslbench.report.render import render

    frame = pd.DataFrame(out["matrix"], index=out["labels"], columns=out["labels"])
    typer.echo(render(frame, "table", title=f"linear CKA (eval run {out['eval_run_id']})"))


@app.command("export-features")
@handle_errors
def export_features(
    run_id: str = typer.Argument(..., help="Pretraining run."),
    split: str = typer.Option("test", help="train or test."),
    out: Path = typer.Option(..., help="Output .npz file (arrays: features, labels)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Write a run's frozen backbone representations of a split to an .npz file."""
    from sslbench.evaluate.run import export_features as export

    info = export(open_store(), run_id, split, out, device=device)
    typer.echo(f"wrote {info['path']}: features {tuple(info['features'])}, "
               f"labels ({info['labels']},)")


# --------------------------------------------------------------------------- runs

@runs_app.command("list")
@handle_errors
def runs_list(
    kind: str | None = typer.Option(None, help="pretrain or eval."),
    status: str | None = typer.Option(None, help="queued, running, completed, failed, ..."),
    method: str | None = typer.Option(None, help="Only this method."),
    dataset: str | None = typer.Option(None, help="Only this dataset."),
    fmt: str = typer.Option("table", "--format", help="table or json."),
) -> None:
    """All runs with their status, main settings and final metrics."""
    _check_format(fmt)
    from sslbench.report.runs import runs_list_frame, runs_list_json

    store = open_store(create=False)
    filters = dict(kind=kind, status=status, method=method, dataset=dataset)
    if fmt == "json":
        _echo_json(runs_list_json(store, **filters))
        return
    frame = runs_list_frame(store, **filters)
    if frame.empty:
        typer.echo("no runs match: try `sslbench demo` or `sslbench train`")
        return
    from sslbench.report.render import render

    typer.echo(render(frame.set_index("run_id"), "table"))


@runs_app.command("show")
@handle_errors
def runs_show(
    run_id: str = typer.Argument(..., help="Run id (or a unique prefix)."),
    fmt: str = typer.Option("table", "--format", help="table or json."),
) -> None:
    """One run: config, status, environment, final metrics, artifacts and evaluations."""
    _check_format(fmt)
    from sslbench.report.runs import run_show_json

    data = run_show_json(open_store(create=False), run_id)
    if fmt == "json":
        _echo_json(data)
    else:
        from sslbench.runs.views import run_details

        typer.echo(run_details(data))


# --------------------------------------------------------------------------- report

@app.command()
@handle_errors
def report(
    name: str = typer.Argument(..., help="dims, table-s5, fig1, table-s2-s3, table-s4, cka, "
                               "knn, spectra, hparams, or all (one HTML file, needs --out)."),
    fmt: str = typer.Option("table", "--format", help="table, markdown, csv, json, latex, html, "
                            "png or svg (figures need --out)."),
    out: Path | None = typer.Option(None, help="File or folder to write to."),
    select: str = typer.Option("final", help="final or best value of each run's metric."),
    metric: str | None = typer.Option(None, help="dims: fast_linear_top1 [default], "
                                         "linear_top1, knn_top1, online_top1."),
    sweep: str | None = typer.Option(None, help="Only runs of this sweep."),
    dataset: str | None = typer.Option(None, help="Only this dataset."),
    backbone: str | None = typer.Option(None, help="Only this backbone."),
    epochs: int | None = typer.Option(None, help="Only runs of this many epochs."),
    tag: str | None = typer.Option(None, help="Only runs with this tag."),
    since: str | None = typer.Option(None, help="Only runs created on or after YYYY-MM-DD."),
    until: str | None = typer.Option(None, help="Only runs created on or before YYYY-MM-DD."),
    dim: int | None = typer.Option(None, help="spectra: only this embedding dim."),
    run_id: str | None = typer.Option(None, "--run-id", help="cka: this comparison run."),
    complete: bool | None = typer.Option(None, "--complete/--partial", help="Grid reports: "
                                            "list the paper's whole grid [complete] or only "
                                            "cells with runs."),
) -> None:
    """Regenerate the paper's tables and figures from the store, beside the published values."""
    from sslbench.report import (
        ReportFilters,
        build_report,
        report_options,
        write_html,
        write_report,
    )

    store = open_store(create=False)
    filters = ReportFilters.from_options(sweep=sweep, dataset=dataset, backbone=backbone,
                                         epochs=epochs, tag=tag, since=since, until=until)
    if name == "all":
        if out is None:
            from sslbench.errors import ConfigError

            raise ConfigError("report all writes one HTML file: give --out DIR")
        typer.echo(f"wrote {write_html(store, out, filters=filters, select=select)}")
        return
    given = dict(metric=metric, dataset=dataset, dim=dim, run_id=run_id, complete=complete)
    accepted = set(report_options(name)) if name in _report_names() else set()
    options = {k: v for k, v in given.items() if k in accepted}
    result = build_report(name, store, select=select, filters=filters, **options)
    text = write_report(result, fmt, out)
    typer.echo(text if out is None else f"wrote {text}")


def _report_names() -> tuple[str, ...]:
    from sslbench.report import REPORTS

    return tuple(REPORTS)


# --------------------------------------------------------------------------- duality

@app.command()
@handle_errors
def duality(
    run_id: str | None = typer.Argument(None, help="Pretraining run (omit for random "
                                           "Gaussian embeddings)."),
    samples: int = typer.Option(1024, help="Batch size N of the embedding matrix."),
    m: int = typer.Option(512, help="Without a run: embedding dimension M."),
    seed: int = typer.Option(0, help="Without a run: seed of the random embeddings."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    fmt: str = typer.Option("table", "--format", help="table or json."),
) -> None:
    """Theorem 3.3 and the Lemma 3.4 bounds (Table S4) on a batch of a run's embeddings."""
    _check_format(fmt)
    from sslbench.config import require_positive
    from sslbench.evaluate.duality import duality_of_random, duality_of_run

    require_positive("samples", samples)
    require_positive("m", m)
    if run_id is None:
        report = duality_of_random(samples, m, seed=seed)
    else:
        report = duality_of_run(open_store(), run_id, samples=samples, device=device,
                                command=_command())
    if fmt == "json":
        _echo_json(report)
        return
    from sslbench.runs.views import duality_table

    typer.echo(duality_table(report))


@app.command()
@handle_errors
def methods(fmt: str = typer.Option("table", "--format", help="table or json.")) -> None:
    """The registered criteria, their family and default hyperparameters."""
    _check_format(fmt)
    from sslbench.losses import CRITERIA, criterion_defaults

    rows = [dict(method=name, family=spec.family, defaults=criterion_defaults(name),
                 doc=spec.doc) for name, spec in sorted(CRITERIA.items())]
    if fmt == "json":
        _echo_json(rows)
        return
    for row in rows:
        params = ", ".join(f"{k}={v}" for k, v in row["defaults"].items())
        typer.echo(f"{row['method']:<14} {row['family']:<10} {params}\n{'':<25}{row['doc']}")


# --------------------------------------------------------------------------- bench

def _bench_output(rows: Any, fmt: str) -> None:
    _check_format(fmt)
    if fmt == "json":
        _echo_json(rows)
        return
    from sslbench.runs.views import records_table

    typer.echo(records_table(rows if isinstance(rows, list) else [rows]))


@bench_app.command("criteria")
@handle_errors
def bench_criteria(fmt: str = typer.Option("table", "--format", help="table or json.")) -> None:
    """Forward+backward time and peak memory of the criteria, direct vs dual."""
    from sslbench.bench.criteria import run

    _bench_output(run(), fmt)


@bench_app.command("augment")
@handle_errors
def bench_augment(fmt: str = typer.Option("table", "--format", help="table or json.")) -> None:
    """Images/s of the batched augmentations vs torchvision's per-sample PIL pipeline."""
    from sslbench.bench.augment import run

    _bench_output(run(), fmt)


@bench_app.command("report")
@handle_errors
def bench_report(fmt: str = typer.Option("table", "--format", help="table or json.")) -> None:
    """`report table-s5` over a store of 10,000 runs and 1,000,000 metric points."""
    from sslbench.bench.report import run

    _bench_output(run(), fmt)


@bench_app.command("scan")
@handle_errors
def bench_scan(fmt: str = typer.Option("table", "--format", help="table or json."),
               images: int = typer.Option(10_000, help="JPEGs in the generated folder.")) -> None:
    """The up-front image-folder check (headers only) vs listing and decoding the folder."""
    from sslbench.bench.scan import run
    from sslbench.config import require_positive

    require_positive("images", images)
    _bench_output(run(images=images), fmt)


@bench_app.command("train")
@handle_errors
def bench_train(fmt: str = typer.Option("table", "--format", help="table or json."),
                device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N.")) -> None:
    """Pretraining images/s and data-pipeline overhead on synthetic data."""
    from sslbench.bench.train import run

    _bench_output(run(device=device), fmt)


@bench_app.command("eval")
@handle_errors
def bench_eval(fmt: str = typer.Option("table", "--format", help="table or json."),
               probe_augment: str = typer.Option("auto", help="Training images of the offline "
                                                 "protocol: crop-flip, flip, none or auto."),
               device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N.")) -> None:
    """The fast linear protocol vs the paper's offline protocol: time and accuracy."""
    from sslbench.bench.eval import run
    from sslbench.config import PROBE_AUGMENTS, require_choice

    if probe_augment != "auto":
        require_choice("--probe-augment", probe_augment, PROBE_AUGMENTS)
    _bench_output(run(probe_augment=probe_augment, device=device), fmt)


# --------------------------------------------------------------------------- demo

@app.command()
@handle_errors
def demo(
    epochs: int = typer.Option(None, help="Pretraining epochs per run (default: the demo's)."),
    dims: str = typer.Option(None, help="Comma-separated embedding dims (default: the demo's)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Train SimCLR and VICReg at several embedding dims on the embedded data, evaluate, report."""
    from sslbench.runs.demo import run_demo

    dim_list = _parse_ints(dims, "--dims") if dims else None
    run_demo(open_store(), epochs=epochs, dims=dim_list, device=device, command=_command(),
             echo=typer.echo)


def _parse_ints(text: str, flag: str) -> list[int]:
    from sslbench.errors import ConfigError

    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{flag} must be comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"{flag} must list positive integers, got {text!r}")
    return values


from sslbench.cli_sweep import register  # noqa: E402  (sweep, runs stop/reap/watch/exec)

register(app, runs_app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
