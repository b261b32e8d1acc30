"""``sslbench train``, ``demo`` and ``methods``: pretraining runs and the criteria they use.

Options of ``train`` default to None, meaning "the preset's value, else the built-in default"
(resolved by :func:`sslbench.train.setup.resolve_train_config`); the built-in defaults named in
the help are read from :class:`~sslbench.config.TrainConfig`, so they cannot drift from it.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from sslbench import config, presets
from sslbench.cli.common import (
    METHODS,
    Backbone,
    Choices,
    Dataset,
    Device,
    Format,
    app,
    command_line,
    echo_json,
    open_store,
)
from sslbench.config import TrainConfig


def _impls() -> tuple[str, ...]:
    from sslbench.losses import IMPLS

    return IMPLS


def _recipes() -> list[str]:
    from sslbench.data import recipe_names

    return recipe_names()


PRESETS = Choices("--preset", lambda: presets.PRESETS)
OPTIMIZERS = Choices("--optimizer", lambda: config.OPTIMIZERS)
PROBE_VIEWS = Choices("--probe-view", lambda: config.PROBE_VIEWS)
IMPLS = Choices("--impl", _impls)
RECIPES = Choices("--augment", _recipes)


def _opt(help: str, *decls: str, choices: Choices | None = None) -> Any:
    """An option whose absence means "use the preset's or the built-in default"."""
    return typer.Option(None, *decls, help=help, show_default=False,
                        callback=choices.check if choices else None)


def _default(field: str) -> str:
    """`` [value]``: the built-in default of TrainConfig ``field``, for a help text."""
    return f" [{getattr(TrainConfig, field)}]"


@app.command()
def train(
    method: str | None = _opt(f"Criterion{_default('method')} (see `sslbench methods`).",
                              choices=METHODS),
    preset: str | None = _opt("Bundle of values that explicit flags override: paper is "
                              "Table S6.", choices=PRESETS),
    dataset: Dataset = None,
    data_root: str | None = _opt("Folder holding the dataset (not needed for the embedded "
                                 "shapes and digits)."),
    backbone: Backbone = None,
    projector: str | None = _opt(f"Projector{_default('projector')}, widths with d = --dim: "
                                 "8192-8192-d, d-d-d, 2048-d, 512-512-128, none."),
    dim: int | None = _opt(f"Embedding dimension d, the projector output{_default('dim')}."),
    epochs: int | None = _opt(f"Pretraining epochs{_default('epochs')}."),
    batch_size: int | None = _opt(f"Global batch size{_default('batch_size')} (split across "
                                  "processes)."),
    lr: float | None = _opt(f"Base learning rate{_default('lr')}, scaled by batch_size/256."),
    optimizer: str | None = _opt(f"Optimiser{_default('optimizer')}.", choices=OPTIMIZERS),
    weight_decay: float | None = _opt(f"Weight decay{_default('weight_decay')}, not on biases "
                                      "and norms."),
    warmup_epochs: int | None = _opt("Linear warm-up epochs [epochs/10, at most 10]."),
    augment: str | None = _opt("Augmentation recipe [by dataset].", choices=RECIPES),
    image_size: int | None = _opt("Training resolution in pixels, >= 1 [the dataset's]."),
    cifar_stem: bool | None = _opt("ResNet stem for small images [cifar when size <= 64].",
                                   "--cifar-stem/--imagenet-stem"),
    train_samples: int | None = _opt("Use only this many training images, at most the "
                                     "dataset's [0 = all]."),
    seed: int | None = _opt(f"Random seed in 0 .. 2**63-1{_default('seed')}; CPU runs are "
                            "repeatable."),
    temperature: float | None = _opt("Loss temperature (SimCLR/DCL families, VICReg-exp/ctr)."),
    sim_coeff: float | None = _opt("VICReg-family invariance weight (lambda)."),
    std_coeff: float | None = _opt("VICReg-family variance weight (mu)."),
    cov_coeff: float | None = _opt("VICReg-family covariance weight (nu)."),
    lambd: float | None = _opt("Barlow Twins off-diagonal weight."),
    impl: str | None = _opt("Squared-Frobenius terms [auto].", choices=IMPLS),
    probe_lr: float | None = _opt(f"Learning rate of the online linear probe"
                                  f"{_default('probe_lr')}."),
    probe_view: str | None = _opt("What the online probe learns from: the two augmented views "
                                  "(the paper's) or one view augmented as the offline probes "
                                  "are [views].", choices=PROBE_VIEWS),
    sync_bn: bool | None = _opt("SyncBatchNorm across processes under torchrun [off].",
                                "--sync-bn/--no-sync-bn"),
    device: Device = "auto",
    num_workers: int | None = _opt(f"DataLoader workers for image folders"
                                   f"{_default('num_workers')}."),
    threads: int | None = _opt("CPU intra-op threads [1]. Recorded at the run's first start "
                               "and kept by every resume: one run id, one result."),
    compile_model: bool | None = _opt("torch.compile the model [off].",
                                      "--compile/--no-compile"),
    progress: bool = typer.Option(True, "--progress/--quiet", help="Show a progress bar."),
    fmt: Format = "table",
) -> None:
    """Pretrain one SSL criterion with an online linear probe; resumes or reuses its run."""
    from sslbench.train.setup import resolve_train_config

    options = dict(method=method, preset=preset, dataset=dataset, data_root=data_root,
                   backbone=backbone, projector=projector, dim=dim, epochs=epochs,
                   batch_size=batch_size, lr=lr, optimizer=optimizer, weight_decay=weight_decay,
                   warmup_epochs=warmup_epochs, augment=augment, image_size=image_size,
                   cifar_stem=cifar_stem, train_samples=train_samples, seed=seed,
                   probe_lr=probe_lr, probe_view=probe_view, sync_bn=sync_bn, device=device,
                   num_workers=num_workers, compile=compile_model, threads=threads)
    loss = {k: v for k, v in dict(temperature=temperature, sim_coeff=sim_coeff,
                                  std_coeff=std_coeff, cov_coeff=cov_coeff, lambd=lambd,
                                  impl=impl).items() if v is not None}
    cfg = resolve_train_config(options, loss)
    from sslbench.train.loop import pretrain

    store = open_store()
    result = pretrain(cfg, store, command=command_line(),
                      progress=progress and sys.stderr.isatty())
    if fmt == "json":
        echo_json(store.get_run(result.run_id).to_dict(summary=store.summary(result.run_id)))
    else:
        verb = "reused completed run" if result.reused else f"run {result.status}"
        top1 = result.summary.get("online_top1")
        acc = f", online top-1 {top1:.2f}%" if top1 is not None else ""
        typer.echo(f"{result.run_id}: {verb}{acc} ({result.run_dir})")
    if result.status == "interrupted":
        typer.echo("interrupted: re-run the same command to resume from the checkpoint", err=True)
        raise typer.Exit(1)


@app.command()
def demo(
    epochs: int = typer.Option(None, help="Pretraining epochs per run (default: the demo's)."),
    dims: str = typer.Option(None, help="Comma-separated embedding dims (default: the demo's)."),
    device: Device = "auto",
    workers: int | None = typer.Option(None, help="Runs at once: CPU worker processes, or runs "
                                       "per CUDA device [min(4, cores) on CPU, 1 per GPU]."),
) -> None:
    """Train SimCLR and VICReg at several embedding dims on the embedded data, evaluate, report."""
    from sslbench.runs.demo import run_demo

    dim_list = _parse_ints(dims, "--dims") if dims else None
    if not run_demo(open_store(), epochs=epochs, dims=dim_list, device=device, workers=workers,
                    command=command_line(), echo=typer.echo):
        raise typer.Exit(1)


def _parse_ints(text: str, flag: str) -> list[int]:
    from sslbench.errors import ConfigError

    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{flag} must be comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"{flag} must list positive integers, got {text!r}")
    return values


@app.command()
def methods(fmt: Format = "table") -> None:
    """The registered criteria, their family and default hyperparameters."""
    from sslbench.losses import CRITERIA, criterion_defaults

    rows: list[dict[str, Any]] = [
        dict(method=name, family=spec.family, defaults=criterion_defaults(name), doc=spec.doc)
        for name, spec in sorted(CRITERIA.items())]
    if fmt == "json":
        echo_json(rows)
        return
    for row in rows:
        params = ", ".join(f"{k}={v}" for k, v in row["defaults"].items())
        typer.echo(f"{row['method']:<14} {row['family']:<10} {params}\n{'':<25}{row['doc']}")
