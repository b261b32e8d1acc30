"""Backbones: torchvision ResNets (optionally with a CIFAR stem) and a small CPU-friendly net.

Every builder returns ``(module, representation_dim)``; the module maps images (B, 3, H, W) to
representations (B, representation_dim).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sslbench.config import require_choice
from sslbench.models.names import BACKBONE_NAMES


def _resnet(arch: str) -> Callable[[bool], tuple[nn.Module, int]]:
    def build(cifar_stem: bool) -> tuple[nn.Module, int]:
        import torchvision

        net = getattr(torchvision.models, arch)(weights=None)
        if cifar_stem:
            # 32x32 inputs: a 3x3 stride-1 first conv and no max-pool keep spatial resolution.
            net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        dim = net.fc.in_features
        net.fc = nn.Identity()
        return net, dim
    return build


def _conv_bn(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


class SmallConvNet(nn.Module):
    """A 5-conv VGG-style net for CPU runs on 32x32 images.

    Widths w, 2w, 2w, 4w, 8w with three stride-2 stages, then global average pooling
    (representation dimension 8w).
    """

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_conv_bn(3, w, 1),
            *_conv_bn(w, 2 * w, 2),
            *_conv_bn(2 * w, 2 * w, 1),
            *_conv_bn(2 * w, 4 * w, 2),
            *_conv_bn(4 * w, 8 * w, 2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.out_dim = 8 * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.features(x)
        return out


def _convnet(width: int) -> Callable[[bool], tuple[nn.Module, int]]:
    def build(cifar_stem: bool) -> tuple[nn.Module, int]:
        net = SmallConvNet(width)
        return net, net.out_dim
    return build


BACKBONES: dict[str, Callable[[bool], tuple[nn.Module, int]]] = {
    "small": _convnet(32),   # 256-d representations, ~0.3 M parameters
    "tiny": _convnet(16),    # 128-d, 4x cheaper: the demo's backbone on 2 CPU cores
    "resnet18": _resnet("resnet18"),
    "resnet50": _resnet("resnet50"),
}


if tuple(BACKBONES) != BACKBONE_NAMES:  # the command line lists the names from there
    raise ImportError("sslbench.models.names.BACKBONE_NAMES is out of step with the backbone "
                      f"registry: {', '.join(BACKBONES)}")


def build_backbone(name: str, *, cifar_stem: bool = False) -> tuple[nn.Module, int]:
    require_choice("backbone", name, list(BACKBONES))
    return BACKBONES[name](cifar_stem)
