"""The joint-embedding network: a shared backbone and projector applied to both views."""

from __future__ import annotations

import torch
from torch import nn

from sslbench.models.backbones import build_backbone
from sslbench.models.projector import build_projector


class SSLModel(nn.Module):
    """``forward(x) -> (representation, embedding)``; one set of weights for both branches."""

    def __init__(self, backbone: nn.Module, projector: nn.Module, representation_dim: int):
        super().__init__()
        self.backbone = backbone
        self.projector = projector
        self.representation_dim = representation_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone(x)
        return h, self.projector(h)


def build_model(backbone: str, projector: str, dim: int, *, cifar_stem: bool) -> SSLModel:
    net, rep_dim = build_backbone(backbone, cifar_stem=cifar_stem)
    return SSLModel(net, build_projector(projector, dim, rep_dim), rep_dim)
