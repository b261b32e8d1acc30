"""Presets: named bundles of training values that explicit flags override.

- ``paper``: the paper's recipe (Appendix D, Table S6): ResNet-50, 100 epochs, LARS with weight
  decay 1e-6, 10 warm-up epochs, BYOL augmentations, and per method and embedding dimension the
  batch size, base lr, loss weights and temperature of Table S6. Only the methods Table S6 has a
  row for are accepted (vicreg, vicreg-exp, vicreg-ctr, simclr = SimCLR-Tuned); VICReg's rows
  exist for d in {256, 512, 1024, 2048, 8192} only.
- ``cifar``: ResNet-18 with a CIFAR stem on CIFAR-10, in the spirit of solo-learn's CIFAR configs.
- ``tiny``: a CPU-sized run on the embedded ``shapes`` data: the demo's settings, read from
  the shipped sweep file ``sslbench/runs/sweeps/demo.toml`` (their one definition), at
  one of its embedding dimensions.

This module imports nothing heavy (the demo's sweep file is read when ``tiny`` is asked for);
presets are plain dictionaries of TrainConfig field values, with loss hyperparameters under
``"loss"``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from sslbench.errors import ConfigError

PAPER_DIMS = (256, 512, 1024, 2048, 8192)

# Table S6 (Appendix K): (batch size, base lr, sim, var, cov, tau) by method and dim.
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

#: The demo's one definition, the shipped sweep file; the tiny preset is its cell at dim 64.
DEMO_SWEEP_FILE = Path(__file__).parent / "runs" / "sweeps" / "demo.toml"
TINY_DIM = 64  # the demo's grid cell the tiny preset names


def demo_values(method: str) -> dict[str, Any]:
    """The settings of the demo's cell (``method``, dim 64), read from the demo's sweep file as
    data: its ``[fixed]`` table, then each ``[[override]]`` whose ``where`` that cell matches, as
    the sweep applies them. Presets sit below ``sslbench.runs`` in the import layers, so they
    cannot use its sweep loader, which checks the same file whenever the demo runs. Integers
    given for float fields become floats, as the loader reads them: ``lr = 1`` and ``lr = 1.0``
    must name the same run. Keys that are not TrainConfig fields are the loss's (``loss``)."""
    import tomllib

    from sslbench.config import TrainConfig

    data = tomllib.loads(DEMO_SWEEP_FILE.read_text(encoding="utf-8"))
    cell = {**data.get("fixed", {}), "method": method, "dim": TINY_DIM}
    for override in data.get("override", []):
        if all(cell.get(k) == v for k, v in override.get("where", {}).items()):
            cell.update(override.get("set", {}))
    fields = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}
    values = {k: float(v) if fields[k] == "float" and isinstance(v, int) else v
              for k, v in cell.items() if k in fields}
    loss = {k: v for k, v in cell.items() if k not in fields}
    return {**values, "loss": loss} if loss else values


PRESETS = ("paper", "cifar", "tiny")


def preset_values(name: str, method: str, dim: int | None) -> dict[str, Any]:
    """Values of preset ``name`` for ``method`` (and ``dim``, which Table S6 depends on)."""
    if name == "paper":
        row = table_s6(method, dim if dim is not None else 2048)
        return {**_PAPER_BASE, "dim": 2048, **row}
    if name == "cifar":
        return {**_CIFAR_BASE, **_CIFAR_METHOD.get(method, _CIFAR_DEFAULT)}
    if name == "tiny":
        return demo_values(method)
    raise ConfigError(f"unknown --preset {name!r}: choose one of {', '.join(PRESETS)}")
