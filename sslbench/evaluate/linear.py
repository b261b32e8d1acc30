"""Linear probe on cached features (the fast offline protocol).

Features are extracted once from the frozen backbone (eval mode, no augmentation) and a linear
classifier is trained on them in memory: mini-batch SGD with momentum 0.9, cosine schedule,
cross-entropy. The features are standardised with the training split's statistics first; that is
an affine map, so the classifier stays linear in the representation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def train_linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                       test_y: torch.Tensor, num_classes: int, *, epochs: int = 100,
                       batch_size: int = 256, lr: float = 0.1, weight_decay: float = 1e-6,
                       seed: int = 0) -> dict[str, float]:
    """Returns {"top1": test top-1 percent, "train_top1": ...}. Labels < 0 are ignored."""
    keep = train_y >= 0
    train_x, train_y = train_x[keep], train_y[keep]
    if len(train_x) == 0:
        raise ValueError("no labelled training features for the linear probe")
    mean = train_x.mean(0, keepdim=True)
    std = train_x.std(0, keepdim=True).clamp_min(1e-6)
    xs, xt = (train_x - mean) / std, (test_x - mean) / std
    g = torch.Generator().manual_seed(seed)
    layer = torch.nn.Linear(xs.shape[1], num_classes)
    with torch.no_grad():
        layer.weight.normal_(0, 0.01, generator=g)
        layer.bias.zero_()
    opt = torch.optim.SGD(layer.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(xs) / batch_size)
    total = epochs * steps_per_epoch
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(xs), generator=g)
        for i in range(0, len(xs), batch_size):
            idx = order[i:i + batch_size]
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(layer(xs[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    with torch.no_grad():
        return {"top1": _top1(layer(xt), test_y), "train_top1": _top1(layer(xs), train_y)}


def _top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    keep = labels >= 0
    if not bool(keep.any()):
        return math.nan
    return 100.0 * float((logits.argmax(1)[keep] == labels[keep]).float().mean())
