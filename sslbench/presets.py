"""Presets: named bundles of training values that explicit flags override.

- ``paper``: the paper's recipe (PAPER.md §6, Table S6): ResNet-50, 100 epochs, LARS with weight
  decay 1e-6, 10 warm-up epochs, BYOL augmentations, and per method and embedding dimension the
  batch size, base lr, loss weights and temperature of Table S6. Only the methods Table S6 has a
  row for are accepted (vicreg, vicreg-exp, vicreg-ctr, simclr = SimCLR-Tuned); VICReg's rows
  exist for d in {256, 512, 1024, 2048, 8192} only.
- ``cifar``: ResNet-18 with a CIFAR stem on CIFAR-10, in the spirit of solo-learn's CIFAR configs.
- ``tiny``: a CPU-sized run on the embedded ``shapes`` data (what the demo uses).

This module imports nothing heavy; presets are plain dictionaries of TrainConfig field values,
with loss hyperparameters under ``"loss"``.
"""

from __future__ import annotations

from typing import Any

from sslbench.errors import ConfigError

PAPER_DIMS = (256, 512, 1024, 2048, 8192)

# Table S6 (PAPER.md §4): (batch size, base lr, sim, var, cov, tau) by method and dim.
_S6_VICREG_COV = {256: 4.0, 512: 2.0, 1024: 2.0, 2048: 2.0, 8192: 0.5}


def table_s6(method: str, dim: int) -> dict[str, Any]:
    """The Table S6 row for ``method`` at embedding dimension ``dim``, as preset values."""
    if method == "vicreg":
        if dim not in _S6_VICREG_COV:
            raise ConfigError(f"--preset paper has VICReg rows for dims {list(PAPER_DIMS)} only, "
                              f"not {dim}: pick one of those or drop --preset")
        return dict(batch_size=1024, lr=0.3,
                    loss=dict(sim_coeff=25.0, std_coeff=25.0, cov_coeff=_S6_VICREG_COV[dim]))
    if method == "vicreg-exp":
        return dict(batch_size=1024, lr=0.8 if dim == 8192 else 0.5,
                    loss=dict(sim_coeff=1.0, std_coeff=1.0, cov_coeff=2.0, temperature=0.1))
    if method == "vicreg-ctr":
        return dict(batch_size=1024, lr=0.6,
                    loss=dict(sim_coeff=1.0, std_coeff=1.0, cov_coeff=1.0, temperature=0.15))
    if method == "simclr":
        return dict(batch_size=2048, lr=0.5, loss=dict(temperature=0.15))
    raise ConfigError(f"--preset paper has no Table S6 row for method {method!r}: use vicreg, "
                      "vicreg-exp, vicreg-ctr or simclr, or drop --preset and set the values")


_PAPER_BASE = dict(dataset="imagefolder", backbone="resnet50", cifar_stem=False,
                   projector="8192-8192-d", epochs=100, optimizer="lars", weight_decay=1e-6,
                   warmup_epochs=10, augment="byol", image_size=224)

_CIFAR_BASE = dict(dataset="cifar10", backbone="resnet18", cifar_stem=True, epochs=1000,
                   optimizer="lars", warmup_epochs=10, augment="cifar", image_size=32,
                   batch_size=256)
_CIFAR_METHOD = {
    "simclr": dict(projector="2048-d", dim=256, lr=0.4, weight_decay=1e-5,
                   loss=dict(temperature=0.2)),
    "vicreg": dict(projector="2048-2048-d", dim=2048, lr=0.3, weight_decay=1e-4,
                   loss=dict(sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0)),
    "barlow": dict(projector="2048-2048-d", dim=2048, lr=0.3, weight_decay=1e-4,
                   loss=dict(lambd=0.0051)),
}
_CIFAR_DEFAULT = dict(projector="2048-2048-d", dim=2048, lr=0.3, weight_decay=1e-4)

_TINY = dict(dataset="shapes", backbone="tiny", projector="512-d", dim=64, epochs=10,
             batch_size=128, optimizer="adamw", lr=0.002, weight_decay=1e-4, augment="small")

PRESETS = ("paper", "cifar", "tiny")


def preset_values(name: str, method: str, dim: int | None) -> dict[str, Any]:
    """Values of preset ``name`` for ``method`` (and ``dim``, which Table S6 depends on)."""
    if name == "paper":
        row = table_s6(method, dim if dim is not None else 2048)
        return {**_PAPER_BASE, "dim": 2048, **row}
    if name == "cifar":
        return {**_CIFAR_BASE, **_CIFAR_METHOD.get(method, _CIFAR_DEFAULT)}
    if name == "tiny":
        return dict(_TINY)
    raise ConfigError(f"unknown --preset {name!r}: choose one of {', '.join(PRESETS)}")
