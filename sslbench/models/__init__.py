"""Backbones and projectors (Linear-BN-ReLU blocks in the paper's "X-Y-Z" notation).

Importing the package is cheap: :func:`backbone_names` comes from the torch-free
:mod:`sslbench.models.names`; the builders load torch and torchvision on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sslbench.models.names import BACKBONE_NAMES

if TYPE_CHECKING:
    from sslbench.models.backbones import BACKBONES, build_backbone
    from sslbench.models.projector import build_projector
    from sslbench.models.ssl import SSLModel, build_model

#: What loads torch, and from which module.
_LAZY = {"BACKBONES": "backbones", "build_backbone": "backbones",
         "build_projector": "projector", "SSLModel": "ssl", "build_model": "ssl"}


def backbone_names() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(BACKBONE_NAMES)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"sslbench.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BACKBONES", "backbone_names", "build_backbone", "build_projector", "SSLModel",
           "build_model"]
