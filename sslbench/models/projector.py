"""Projectors in the paper's notation (§5).

"X-Y-Z" means Linear layers of widths X, Y, Z; every layer but the last is followed by
BatchNorm1d and ReLU (the official VICReg order, Linear -> BN -> ReLU); the last layer has no
bias, no BN and no activation. An empty spec ("none") is the identity.
"""

from __future__ import annotations

from torch import nn

from sslbench.config import parse_projector


def build_projector(spec: str, dim: int, in_dim: int) -> nn.Module:
    widths = parse_projector(spec, dim)
    if not widths:
        return nn.Identity()
    layers: list[nn.Module] = []
    prev = in_dim
    for width in widths[:-1]:
        layers += [nn.Linear(prev, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
        prev = width
    layers.append(nn.Linear(prev, widths[-1], bias=False))
    return nn.Sequential(*layers)
