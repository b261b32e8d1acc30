"""The backbone names, without importing torch (the command line lists and checks them);
:mod:`sslbench.models.backbones` refuses to load when its registry disagrees."""

from __future__ import annotations

BACKBONE_NAMES: tuple[str, ...] = ("small", "tiny", "resnet18", "resnet50")
