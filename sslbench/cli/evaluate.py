"""``sslbench eval``, ``compare``, ``duality`` and ``export-features``: the commands that read a
frozen backbone. Each result is an evaluation run in the store, reused when repeated.

Options that describe only one of a command's cases (the network of ``eval --random-init``, the
random embeddings of ``duality`` without a run) are refused in the other case instead of being
ignored: a command that runs means every option it was given was used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from sslbench.cli.common import (
    Backbone,
    Choices,
    Dataset,
    Device,
    Format,
    ProbeAugment,
    app,
    command_line,
    echo_json,
    open_store,
    refuse,
)
from sslbench.config import EVAL_PROTOCOLS, EvalConfig


def _parse_protocols(text: str) -> object:
    from sslbench.evaluate.run import parse_protocols

    return parse_protocols(text)


PROTOCOLS = Choices("--protocol", lambda: EVAL_PROTOCOLS, extra=("all",), parse=_parse_protocols)
# Only eval --random-init builds its network from options; an evaluated run brings its own.
RANDOM_INIT_ONLY = ("backbone", "dataset", "data_root", "projector", "dim")


@app.command("eval")
def eval_(
    ctx: typer.Context,
    run_id: str | None = typer.Argument(None, help="Pretraining run to evaluate."),
    protocol: str = typer.Option("fast-linear,knn", help="Comma-separated protocols, or all "
                                 "(fast-linear: a linear probe on cached features; linear: the "
                                 "paper's offline protocol; knn: the paper's k x T sweep).",
                                 callback=PROTOCOLS.check),
    pending: bool = typer.Option(False, "--pending", help="Evaluate every completed pretraining "
                                 "run that lacks one of the protocols."),
    random_init: bool = typer.Option(False, "--random-init", help="Evaluate a randomly "
                                     "initialised backbone instead (a baseline)."),
    backbone: Backbone = None,
    dataset: Dataset = None,
    data_root: str | None = typer.Option(None, help="With --random-init: the dataset folder."),
    projector: str | None = typer.Option(None, help="With --random-init: projector spec "
                                         f"(analysis) [{EvalConfig.projector}].",
                                         show_default=False),
    dim: int | None = typer.Option(None, help="With --random-init: embedding dim of the "
                                   f"projector [{EvalConfig.dim}].", show_default=False),
    seed: int | None = typer.Option(None, help="Seed (default: the run's)."),
    linear_epochs: int = typer.Option(EvalConfig.linear_epochs,
                                      help="Epochs of the linear probes."),
    batch_size: int = typer.Option(EvalConfig.batch_size, help="Batch size of the linear probes."),
    lr: float = typer.Option(EvalConfig.lr, help="Base lr of the linear probes (x batch/256)."),
    probe_augment: ProbeAugment = "auto",
    standardize: bool = typer.Option(True, "--standardize/--no-standardize", help="Standardise "
                                     "each representation dimension before the linear probes "
                                     "(--no-standardize: the paper's literal recipe)."),
    samples: int = typer.Option(EvalConfig.samples, help="Images used by the analysis protocol."),
    device: Device = "auto",
    fmt: Format = "table",
) -> None:
    """Probe and analyse frozen backbones; every result is an eval run in the store. --backbone,
    --dataset, --data-root, --projector and --dim describe the network of --random-init."""
    from sslbench.errors import ConfigError
    from sslbench.evaluate.run import (
        eval_config_for,
        evaluate_protocols,
        parse_protocols,
        random_init_config,
    )
    from sslbench.evaluate.run import pending as pending_runs

    if not random_init:
        refuse(ctx, RANDOM_INIT_ONLY, "applies to --random-init only: an evaluated run "
               "brings its own network and data")
    _validate_eval_options(seed=seed, linear_epochs=linear_epochs, batch_size=batch_size, lr=lr,
                           samples=samples, projector=projector, dim=dim)
    protocols = parse_protocols(protocol)
    if sum([run_id is not None, random_init, pending]) != 1:
        raise ConfigError("give a RUN_ID, or --random-init for a baseline, or --pending")
    store = open_store()
    opts = dict(seed=seed, linear_epochs=linear_epochs, batch_size=batch_size, lr=lr,
                probe_augment=probe_augment, probe_standardize=standardize, samples=samples,
                device=device)
    targets: list[tuple[EvalConfig, tuple[str, ...]]]  # (config, its protocols)
    if pending:
        targets = [(eval_config_for(store, r, **opts), (p,))
                   for r, p in pending_runs(store, protocols)]
    elif random_init:
        targets = [(random_init_config(backbone=backbone or EvalConfig.backbone,
                                       dataset=dataset or EvalConfig.dataset,
                                       data_root=data_root, projector=projector, dim=dim,
                                       **opts), protocols)]
    else:
        targets = [(eval_config_for(store, run_id, **opts), protocols)]
    results = [r for cfg, ps in targets
               for r in evaluate_protocols(store, cfg, ps, command=command_line())]
    if fmt == "json":
        echo_json([store.get_run(r.run_id).to_dict(summary=store.summary(r.run_id))
                   for r in results])
        return
    if not results:
        typer.echo("nothing to evaluate: every completed run has these protocols")
    for r in results:
        typer.echo(f"{r.run_id} {r.protocol:<11} {_headline(r.summary)}{_reused(r.reused)}")


def _validate_eval_options(**options: Any) -> None:
    """The eval options checked as EvalConfig fields, before the store is opened (the run's
    own values fill what is not given, and were checked when it was trained)."""
    from sslbench.config import replace, validate_eval

    validate_eval(replace(EvalConfig(), **{k: v for k, v in options.items() if v is not None}))


def _headline(summary: dict) -> str:
    keys = ("fast_linear_top1", "linear_top1", "knn_top1", "rankme_repr", "rankme_emb")
    parts = [f"{k} {summary[k]:.2f}" for k in keys if k in summary]
    if "knn_k" in summary:
        parts.append(f"(k={summary['knn_k']:g}, T={summary['knn_temperature']:g})")
    return "  ".join(parts)


def _reused(reused: bool) -> str:
    """The mark of a result read back from the store instead of computed."""
    return " [reused]" if reused else ""


def _eval_run_line(run_id: str, reused: bool) -> str:
    # A line of its own: rich would take "[reused]" in a table title for markup.
    return f"eval run {run_id}{_reused(reused)}"


@app.command()
def compare(
    run_ids: list[str] = typer.Argument(..., help="Pretraining runs to compare."),
    random: bool = typer.Option(True, "--random/--no-random", help="Include a randomly "
                                "initialised network of the first run's architecture."),
    samples: int = typer.Option(1024, help="Test images used."),
    device: Device = "auto",
    fmt: Format = "table",
) -> None:
    """Linear CKA between runs (Figure S2); the matrix is stored, and reused when repeated."""
    from sslbench.config import require_positive
    from sslbench.evaluate.compare import cka_between

    require_positive("samples", samples)
    out = cka_between(open_store(), run_ids, samples=samples, random_baseline=random,
                      device=device, command=command_line())
    if fmt == "json":
        echo_json(out)
        return
    import pandas as pd

    from sslbench.report.render import render

    frame = pd.DataFrame(out["matrix"], index=out["labels"], columns=out["labels"])
    typer.echo(render(frame, "table", title=f"linear CKA (eval run {out['eval_run_id']})"))
    typer.echo(_eval_run_line(out["eval_run_id"], out["reused"]))


@app.command("export-features")
def export_features(
    run_id: str = typer.Argument(..., help="Pretraining run."),
    split: str = typer.Option("test", help="train or test."),
    out: Path = typer.Option(..., help="Output .npz file (arrays: features, labels)."),
    device: Device = "auto",
) -> None:
    """Write a run's frozen backbone representations of a split to an .npz file."""
    from sslbench.evaluate.run import export_features as export

    info = export(open_store(), run_id, split, out, device=device)
    typer.echo(f"wrote {info['path']}: features {tuple(info['features'])}, "
               f"labels ({info['labels']},)")


@app.command()
def duality(
    ctx: typer.Context,
    run_id: str | None = typer.Argument(None, help="Pretraining run (omit for random "
                                        "Gaussian embeddings)."),
    samples: int = typer.Option(1024, help="Batch size N of the embedding matrix."),
    m: int = typer.Option(512, help="Without a run: embedding dimension M."),
    seed: int = typer.Option(0, help="Without a run: seed of the random embeddings."),
    device: Device = "auto",
    fmt: Format = "table",
) -> None:
    """Theorem 3.3 and the Lemma 3.4 bounds (Table S4) on a batch of a run's embeddings (stored
    as an eval run, reused when repeated) or of random ones (not stored)."""
    from sslbench.config import require_positive
    from sslbench.evaluate.duality import duality_of_random, duality_of_run

    require_positive("samples", samples)
    require_positive("m", m)
    if run_id is None:
        refuse(ctx, ["device"], "applies to a run's embeddings only: give a RUN_ID")
        report = duality_of_random(samples, m, seed=seed)
    else:
        refuse(ctx, ["m", "seed"], "applies to random embeddings only: a run has its own")
        report = duality_of_run(open_store(), run_id, samples=samples, device=device,
                                command=command_line())
    if fmt == "json":
        echo_json(report)
        return
    from sslbench.report.text import duality_table

    reused = report.pop("reused", None)
    typer.echo(duality_table(report))
    if reused is not None:  # a run's analysis, stored as an eval run
        typer.echo(_eval_run_line(report["eval_run_id"], reused))
