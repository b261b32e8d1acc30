"""Backbones and projectors (Linear-BN-ReLU blocks in the paper's "X-Y-Z" notation)."""

from sslbench.models.backbones import BACKBONES, backbone_names, build_backbone
from sslbench.models.projector import build_projector
from sslbench.models.ssl import SSLModel, build_model

__all__ = ["BACKBONES", "backbone_names", "build_backbone", "build_projector", "SSLModel",
           "build_model"]
