"""Criteria of the paper (:mod:`sslbench.losses.registry`) and the modules behind them.

Importing the package is cheap: the names (:func:`criterion_names`, ``IMPLS``) come from the
torch-free :mod:`sslbench.losses.names`, so the command line can list and check them without
loading torch; everything else (``CRITERIA``, ``build_criterion``, ...) loads the registry, and
torch with it, on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sslbench.losses.names import CRITERION_NAMES, IMPLS

if TYPE_CHECKING:
    from sslbench.losses.inputs import EmbeddingShapeError, NonFiniteEmbeddingsError
    from sslbench.losses.registry import (
        CRITERIA,
        Criterion,
        CriterionSpec,
        build_criterion,
        criterion_defaults,
        resolve_hparams,
        signature_defaults,
    )

#: What loads torch, and from which module.
_LAZY = {"EmbeddingShapeError": "inputs", "NonFiniteEmbeddingsError": "inputs",
         **{name: "registry" for name in ("CRITERIA", "Criterion", "CriterionSpec",
                                          "build_criterion", "criterion_defaults",
                                          "resolve_hparams", "signature_defaults")}}


def criterion_names() -> list[str]:
    """Registered criterion names, in registry order."""
    return list(CRITERION_NAMES)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"sslbench.losses.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CRITERIA", "IMPLS", "Criterion", "CriterionSpec", "EmbeddingShapeError",
           "NonFiniteEmbeddingsError", "build_criterion", "criterion_defaults", "criterion_names",
           "resolve_hparams", "signature_defaults"]
