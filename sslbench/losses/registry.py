"""Criteria of the paper: the registry, ``build_criterion``, and the modules behind them.

``build_criterion(name, **hparams)`` returns an ``nn.Module``; ``criterion(z1, z2)`` takes the two
views' (N, M) embeddings (rows are embeddings) and returns a dict of scalar tensors: ``"loss"``,
the **weighted** total to back-propagate, plus one entry per term, **unweighted**, under the
names listed in :attr:`CriterionSpec.terms` (e.g. VICReg: ``inv``, ``var``, ``cov``;
``loss = sim_coeff·inv + std_coeff·var + cov_coeff·cov``). Each criterion's function docstring
gives its equation, convention and weighting.

Inside the module, half / bfloat16 inputs are cast to float32 and autocast is disabled, so the
loss math is float32 (or float64 for float64 inputs). Under ``torch.distributed`` with world
size > 1, batch statistics are gathered automatically (:mod:`sslbench.losses.gather`).

Layering: imports torch and :mod:`sslbench.errors` only (never ``db``, ``cli`` or ``train``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from sslbench.errors import ConfigError
from sslbench.losses import barlow as _barlow
from sslbench.losses import scl as _scl
from sslbench.losses import simclr as _simclr
from sslbench.losses import tcr as _tcr
from sslbench.losses import vicreg as _vicreg
from sslbench.losses.inputs import (
    as_float,
    check_pair,
)
from sslbench.losses.names import CRITERION_NAMES, IMPLS

Family = Literal["sample", "dimension"]

#: hyperparameters that must be > 0; every other numeric one must be >= 0.
_POSITIVE = frozenset({"temperature", "mu", "eps"})


@dataclass(frozen=True)
class CriterionSpec:
    """A registered criterion: its pure function, resolved defaults and what it needs.

    Attributes:
        name: registry name.
        fn: ``fn(z1, z2, **hparams) -> dict[str, Tensor]``.
        defaults: every hyperparameter with its default (``impl="auto"`` where it applies),
            read from ``fn``'s signature (:func:`signature_defaults`).
        family: ``"sample"`` or ``"dimension"`` contrastive (Prop. 3.2, eqs 11-13).
        terms: names of the unweighted terms returned next to ``"loss"``.
        min_batch_size: smallest batch N (all criteria use batch statistics or negatives).
        min_dim: smallest embedding dimension M.
        needs_batch_stats: the loss depends on the whole batch (True for every criterion here).
    """

    name: str
    fn: Callable[..., dict[str, Tensor]]
    defaults: dict[str, float | str]
    family: Family
    terms: tuple[str, ...]
    min_batch_size: int = 2
    min_dim: int = 1
    needs_batch_stats: bool = True

    @property
    def doc(self) -> str:
        """First line of the criterion function's docstring."""
        return (self.fn.__doc__ or "").strip().splitlines()[0]


def signature_defaults(fn: Callable[..., dict[str, Tensor]]) -> dict[str, float | str]:
    """The hyperparameters of a criterion function and their defaults, read from its signature
    (every parameter after the two views), so that a default is written once, in the function.

    A hyperparameter without a default would make ``build_criterion(name)`` fail at training
    time; it is refused here, when the registry is built."""
    params = list(inspect.signature(fn).parameters.values())[2:]
    missing = [p.name for p in params if p.default is inspect.Parameter.empty]
    if missing:
        raise TypeError(f"criterion {fn.__name__} has no default for {', '.join(missing)}")
    return {p.name: p.default for p in params}


def _spec(name: str, fn: Callable[..., dict[str, Tensor]], family: Family,
          terms: tuple[str, ...], min_dim: int = 1) -> CriterionSpec:
    return CriterionSpec(name, fn, signature_defaults(fn), family, terms, min_dim=min_dim)


_NCE = ("inv", "reg")
_VIC = ("inv", "var", "cov")

CRITERIA: dict[str, CriterionSpec] = {s.name: s for s in (
    _spec("simclr", _simclr.simclr, "sample", _NCE),
    _spec("simclr-sq", _simclr.simclr_sq, "sample", _NCE),
    _spec("simclr-abs", _simclr.simclr_abs, "sample", _NCE),
    _spec("dcl", _simclr.dcl, "sample", _NCE),
    _spec("dcl-sq", _simclr.dcl_sq, "sample", _NCE),
    _spec("dcl-abs", _simclr.dcl_abs, "sample", _NCE),
    _spec("simclr-center", _simclr.simclr_center, "sample", _NCE),
    _spec("simclr-dimstd", _simclr.simclr_dimstd, "sample", _NCE),
    _spec("scl", _scl.scl, "sample", _NCE),
    _spec("vicreg", _vicreg.vicreg, "dimension", _VIC),
    _spec("vicreg-exp", _vicreg.vicreg_exp, "dimension", _VIC, min_dim=2),
    _spec("vicreg-ctr", _vicreg.vicreg_ctr, "sample", _VIC, min_dim=2),
    _spec("barlow", _barlow.barlow, "dimension", ("inv", "red")),
    _spec("tcr", _tcr.tcr, "dimension", _NCE),
)}


if tuple(CRITERIA) != CRITERION_NAMES:  # the command line lists the names from there
    raise ImportError("sslbench.losses.names.CRITERION_NAMES is out of step with the registry: "
                      f"{', '.join(CRITERIA)}")


def _spec_or_error(name: str) -> CriterionSpec:
    if name not in CRITERIA:
        raise ConfigError(f"unknown criterion {name!r}; valid names: {', '.join(CRITERIA)}")
    return CRITERIA[name]


def criterion_defaults(name: str) -> dict[str, float | str]:
    """Resolved default hyperparameters of ``name`` (a fresh dict)."""
    return dict(_spec_or_error(name).defaults)


def _check_value(name: str, key: str, value: object, default: float | str) -> float | str:
    where = f"criterion {name!r} hyperparameter {key!r}"
    if isinstance(default, str):
        if value not in IMPLS:
            raise ConfigError(f"{where} must be one of {', '.join(IMPLS)}, got {value!r}")
        return str(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be a number, got {value!r} ({type(value).__name__})")
    x = float(value)
    if not math.isfinite(x) or (x <= 0 if key in _POSITIVE else x < 0):
        bound = "> 0" if key in _POSITIVE else ">= 0"
        raise ConfigError(f"{where} must be finite and {bound}, got {value!r}")
    return x


def resolve_hparams(name: str, **hparams: object) -> dict[str, float | str]:
    """Defaults of ``name`` overridden by ``hparams``, validated (ConfigError on any problem)."""
    spec = _spec_or_error(name)
    unknown = sorted(set(hparams) - set(spec.defaults))
    if unknown:
        raise ConfigError(f"criterion {name!r} has no hyperparameter {unknown[0]!r}; valid: "
                          f"{', '.join(spec.defaults) or '(none)'}")
    out = dict(spec.defaults)
    for key, value in hparams.items():
        out[key] = _check_value(name, key, value, spec.defaults[key])
    return out


class Criterion(nn.Module):
    """``criterion(z1, z2) -> {"loss": weighted total, <term>: unweighted term, ...}``."""

    def __init__(self, spec: CriterionSpec, hparams: dict[str, float | str]) -> None:
        super().__init__()
        self.spec = spec
        self.hparams = dict(hparams)

    def forward(self, z1: Tensor, z2: Tensor) -> dict[str, Tensor]:
        """Validate (N, M) inputs, cast to float32 outside autocast, evaluate the criterion."""
        spec = self.spec
        check_pair(z1, z2, spec.name, spec.min_batch_size, spec.min_dim)
        with torch.autocast(device_type=z1.device.type, enabled=False):
            return spec.fn(as_float(z1), as_float(z2), **self.hparams)

    def extra_repr(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())
        return f"{self.spec.name!r}, {args}"


def build_criterion(name: str, **hparams: object) -> nn.Module:
    """Build criterion ``name`` with ``hparams`` over its defaults; ConfigError when invalid."""
    return Criterion(_spec_or_error(name), resolve_hparams(name, **hparams))


