"""The online linear probe: a linear classifier on detached representations (the paper's online
linear evaluation, Section 5 and Appendix E).

It trains alongside pretraining, with its own optimiser, on the step's two augmented views (the
paper's) or on its own view of the batch (``probe_view = "offline"``: augmented as the offline
probes' training images, encoded by the backbone in eval mode); its gradient never reaches the
backbone. Its test accuracy at the end of each epoch is the paper's main metric.
With ``standardize`` the representations first pass a BatchNorm without affine parameters
(running statistics at test time): an affine map, so the classifier stays linear, and one whose
learning rate does not depend on the scale of the representations (a random network's are ~100x
smaller than a trained one's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

UNLABELED = -1


class OnlineProbe(nn.Module):
    def __init__(self, representation_dim: int, num_classes: int, standardize: bool = False):
        super().__init__()
        self.norm: nn.Module = (nn.BatchNorm1d(representation_dim, affine=False) if standardize
                                else nn.Identity())
        self.linear = nn.Linear(representation_dim, num_classes)

    def classify(self, h: torch.Tensor) -> torch.Tensor:
        """The logits of representations ``h`` (float32)."""
        return self.linear(self.norm(h.float()))

    def forward(self, h: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy on ``h.detach()``; unlabeled samples (label -1) are ignored.

        Returns (loss, number of correct predictions among labelled samples), both on the
        device: no branch on the data and no boolean indexing, either of which would wait for
        the device every step. A batch without labels gives a zero loss (0 / 1) and no gradient.
        """
        logits = self.classify(h.detach())
        labelled = labels != UNLABELED
        # The summed loss over the labelled count is bit for bit cross_entropy's mean reduction
        # (forward and gradient), without its 0 / 0 when nothing is labelled.
        total = F.cross_entropy(logits, labels, ignore_index=UNLABELED, reduction="sum")
        loss = total / labelled.sum().clamp(min=1)
        correct = ((logits.argmax(1) == labels) & labelled).sum()
        return loss, correct


@torch.no_grad()
def encode(backbone: nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The representations of images ``x`` with the backbone in eval mode (its BatchNorms'
    running statistics, as at test time; nothing is updated), without gradient."""
    from sslbench.device import autocast

    was_training = backbone.training
    backbone.eval()
    try:
        with autocast(device):
            h: torch.Tensor = backbone(x)
        return h
    finally:
        backbone.train(was_training)


@torch.no_grad()
def probe_accuracy(backbone: nn.Module, probe: OnlineProbe, batches, transform,
                   device: torch.device) -> float:
    """Top-1 (percent) of the probe on ``batches`` of (uint8 images, labels), backbone in eval
    mode."""
    from sslbench.device import memory_format, to_device

    was_training = probe.training
    probe.eval()
    correct = total = 0
    for images, labels in batches:
        x = transform(to_device(images, device)).contiguous(memory_format=memory_format(device))
        pred = probe.classify(encode(backbone, x, device)).argmax(1).cpu()
        keep = labels != UNLABELED
        correct += int((pred[keep] == labels[keep]).sum())
        total += int(keep.sum())
    probe.train(was_training)
    return 100.0 * correct / max(total, 1)
