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


def offline_linear_probe(backbone: torch.nn.Module, train_ds, test_ds, *, image_size: int,
                         epochs: int = 100, batch_size: int = 256, base_lr: float = 0.25,
                         weight_decay: float = 1e-6, seed: int = 0,
                         device: torch.device | None = None) -> dict[str, float]:
    """The paper's offline linear evaluation (PAPER.md §6, App. E).

    Frozen backbone in eval mode; each epoch every training image is freshly augmented
    (random resized crop, scale 0.08-1, and horizontal flip p=0.5, batched on the device) and
    passed through the backbone; a linear layer is trained with SGD (momentum 0.9, weight decay
    1e-6) and a cosine schedule from lr = base_lr x batch_size / 256. Test images get the
    deterministic centre crop. The backbone's weights and BatchNorm statistics never change.
    """
    from sslbench.data import iterate_batches, num_batches
    from sslbench.data.augment import BatchAugment, eval_transform
    from sslbench.device import autocast, memory_format, to_device

    device = device or next(backbone.parameters()).device
    fmt = memory_format(device)
    crop = BatchAugment(image_size=image_size, mean=train_ds.mean, std=train_ds.std,
                        crop_scale=(0.08, 1.0), flip_p=0.5, jitter_p=0.0, gray_p=0.0).to(device)
    centre = eval_transform(image_size=image_size, mean=test_ds.mean, std=test_ds.std)
    was_training = backbone.training
    backbone.eval()
    layer = None
    g = torch.Generator(device=device)
    peak = base_lr * batch_size / 256
    per_epoch = max(num_batches(train_ds, batch_size, drop_last=False), 1)
    total, step = epochs * per_epoch, 0
    train_correct = train_total = 0
    for epoch in range(epochs):
        for images, labels in iterate_batches(train_ds, batch_size, shuffle=True,
                                              drop_last=False, seed=seed, epoch=epoch):
            g.manual_seed(seed * 1_000_003 + step)
            with torch.no_grad(), autocast(device):
                h = backbone(crop(to_device(images, device), g).contiguous(memory_format=fmt))
            h = h.float()
            if layer is None:
                layer = torch.nn.Linear(h.shape[1], train_ds.num_classes).to(device)
                with torch.no_grad():
                    layer.weight.normal_(0, 0.01)
                    layer.bias.zero_()
                opt = torch.optim.SGD(layer.parameters(), lr=peak, momentum=0.9,
                                      weight_decay=weight_decay)
            for group in opt.param_groups:
                group["lr"] = peak * 0.5 * (1 + math.cos(math.pi * step / total))
            y = labels.to(device)
            logits = layer(h)
            loss = F.cross_entropy(logits, y, ignore_index=-1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if epoch == epochs - 1:
                keep = y >= 0
                train_correct += int((logits.argmax(1)[keep] == y[keep]).sum())
                train_total += int(keep.sum())
    correct = seen = 0
    with torch.no_grad():
        for images, labels in iterate_batches(test_ds, 512, shuffle=False, drop_last=False):
            with autocast(device):
                h = backbone(centre(to_device(images, device)).contiguous(memory_format=fmt))
            pred = layer(h.float()).argmax(1).cpu()
            keep = labels >= 0
            correct += int((pred[keep] == labels[keep]).sum())
            seen += int(keep.sum())
    backbone.train(was_training)
    return {"top1": 100.0 * correct / max(seen, 1),
            "train_top1": 100.0 * train_correct / max(train_total, 1)}
