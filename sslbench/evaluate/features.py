"""Representations of a frozen backbone, extracted once and kept in memory."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def extract_features(backbone: nn.Module, dataset, transform, device: torch.device,
                     batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(features float32 (N, D) on CPU, labels int64 (N,)) with the backbone in eval mode.

    The backbone's training flag is restored afterwards; its weights and BatchNorm statistics
    are never touched (no_grad, eval mode).
    """
    from sslbench.data import iterate_batches
    from sslbench.device import autocast, memory_format, to_device

    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    for images, y in iterate_batches(dataset, batch_size, shuffle=False, drop_last=False):
        x = transform(to_device(images, device)).contiguous(memory_format=memory_format(device))
        with autocast(device):
            h = backbone(x)
        feats.append(h.float().cpu())
        labels.append(y)
    backbone.train(was_training)
    if not feats:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(feats), torch.cat(labels)
