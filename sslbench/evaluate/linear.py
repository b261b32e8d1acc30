"""Linear probes of a frozen backbone: the paper's offline protocol and its fast variant.

Both train one linear layer with the paper's head recipe (PAPER.md §6, App. E): SGD with
momentum 0.9 and weight decay 1e-6, a cosine schedule from lr = base_lr x batch / 256,
cross-entropy, ``epochs`` passes over the labelled training split in the same seeded batch
order. They differ only in what the layer is fed:

- :func:`offline_linear_probe` (protocol ``linear``): every epoch, each training image is freshly
  augmented (:data:`AUGMENT_SETTINGS`) and passed through the frozen backbone; test images get the
  centre crop. That is ``epochs`` forward passes over the training split.
- :func:`train_linear_probe` (protocol ``fast-linear``): the centre-crop representations are
  extracted once and kept (:class:`sslbench.evaluate.features.FeatureCache`) and the layer trains
  on them in memory. With the augmentation ``none`` the two compute the same thing.

Labels < 0 (unlabelled images) are ignored throughout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from sslbench.config import PROBE_AUGMENTS

# (crop scale or None, flip probability) of each of PROBE_AUGMENTS, the offline probe's
# training-image augmentations; "crop-flip" is the paper's RandomResizedCrop(0.08, 1) + flip.
AUGMENT_SETTINGS: dict[str, tuple[tuple[float, float] | None, float]] = {
    "crop-flip": ((0.08, 1.0), 0.5),
    "flip": (None, 0.5),
    "none": (None, 0.0),
}


@dataclass(frozen=True)
class HeadRecipe:
    """How the linear layer is trained (the paper's offline recipe by default)."""

    epochs: int = 100
    batch_size: int = 256
    base_lr: float = 0.25
    weight_decay: float = 1e-6
    momentum: float = 0.9
    seed: int = 0

    @property
    def peak_lr(self) -> float:
        return self.base_lr * self.batch_size / 256


Batches = Callable[[int], Iterable[tuple[Tensor, Tensor]]]


class LinearHead:
    """A linear classifier trained by SGD on cross-entropy, with closed-form gradients.

    One :meth:`step` equals ``F.cross_entropy(nn.Linear(h), y)`` (mean over the labelled rows;
    rows with a label < 0 get zero weight), ``backward()`` and a ``torch.optim.SGD`` step with
    momentum and weight decay on weight and bias alike (a test checks this against autograd).
    Without autograd and the optimiser, a step on cached features costs a few small kernels and
    no host-device sync, which is most of the fast protocol's time.
    """

    def __init__(self, dim: int, num_classes: int, recipe: HeadRecipe, device: torch.device):
        g = torch.Generator().manual_seed(recipe.seed)
        self.weight = (torch.randn(num_classes, dim, generator=g) * 0.01).to(device)
        self.bias = torch.zeros(num_classes, device=device)
        self.momentum, self.weight_decay = recipe.momentum, recipe.weight_decay
        self._buffers: list[Tensor] | None = None

    def __call__(self, h: Tensor) -> Tensor:
        return torch.addmm(self.bias, h, self.weight.t())

    @torch.no_grad()
    def step(self, h: Tensor, y: Tensor, lr: float) -> Tensor:
        """One SGD step on the batch (h (B, D), y (B,)); returns the logits before the step."""
        logits = self(h)
        keep = (y >= 0).to(h.dtype)
        grad = logits.softmax(1)
        grad[torch.arange(len(y), device=y.device), y.clamp_min(0)] -= 1.0
        grad.mul_((keep / keep.sum().clamp_min(1.0))[:, None])
        params = (self.weight, self.bias)
        grads = (grad.t() @ h, grad.sum(0))
        steps = [g.add(p, alpha=self.weight_decay) for p, g in zip(params, grads)]
        if self._buffers is None:
            self._buffers = steps
        else:
            for buf, d in zip(self._buffers, steps):
                buf.mul_(self.momentum).add_(d)
        for p, buf in zip(params, self._buffers):
            p.add_(buf, alpha=-lr)
        return logits


def _fit_head(batches: Batches, steps_per_epoch: int, num_classes: int, recipe: HeadRecipe,
              device: torch.device) -> tuple[LinearHead, float]:
    """Trains a :class:`LinearHead` on ``batches(epoch)`` -> (features (B, D), labels (B,)).

    The learning rate follows a cosine from ``recipe.peak_lr`` to 0 over every step. Returns the
    head and its top-1 on the last epoch's training batches (before each batch's step).
    """
    head = None
    total, step = max(recipe.epochs * steps_per_epoch, 1), 0
    correct = seen = torch.zeros((), device=device)
    for epoch in range(recipe.epochs):
        for h, y in batches(epoch):
            if head is None:
                head = LinearHead(h.shape[1], num_classes, recipe, device)
            lr = recipe.peak_lr * 0.5 * (1 + math.cos(math.pi * step / total))
            step += 1
            logits = head.step(h, y, lr)
            if epoch == recipe.epochs - 1:
                correct = correct + (logits.argmax(1) == y).sum()
                seen = seen + (y >= 0).sum()
    if head is None:
        raise ValueError("no training batches for the linear probe")
    return head, 100.0 * float(correct / seen.clamp_min(1))


def _top1(logits: Tensor, labels: Tensor) -> float:
    keep = labels >= 0
    if not bool(keep.any()):
        return math.nan
    return 100.0 * float((logits.argmax(1)[keep] == labels[keep]).float().mean())


def _require_labels(labels: Tensor) -> None:
    if not bool((labels >= 0).any()):
        raise ValueError("no labelled training images for the linear probe")


def train_linear_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor,
                       num_classes: int, recipe: HeadRecipe = HeadRecipe()) -> dict[str, float]:
    """The fast protocol on cached features -> {"top1": test top-1 %, "train_top1": ...}.

    Runs on the features' device (move them to the GPU first for large data sets)."""
    from sslbench.data.loader import epoch_order

    _require_labels(train_y)
    n = len(train_x)

    def batches(epoch: int):
        order = epoch_order(n, shuffle=True, seed=recipe.seed, epoch=epoch).to(train_x.device)
        for idx in order.split(recipe.batch_size):
            yield train_x[idx], train_y[idx]

    layer, train_top1 = _fit_head(batches, math.ceil(n / recipe.batch_size), num_classes,
                                  recipe, train_x.device)
    with torch.no_grad():
        return {"top1": _top1(layer(test_x), test_y), "train_top1": train_top1}


def offline_linear_probe(backbone: torch.nn.Module, train_ds, test_ds, *, image_size: int,
                         recipe: HeadRecipe = HeadRecipe(), augment: str = "crop-flip",
                         device: torch.device | None = None) -> dict[str, float]:
    """The paper's offline protocol -> {"top1": test top-1 %, "train_top1": ...}.

    Frozen backbone in eval mode; training images augmented with ``augment`` (a key of
    :data:`AUGMENT_SETTINGS`, batched on the device); test images centre-cropped. The backbone's
    weights, BatchNorm statistics and training flag are unchanged afterwards.
    """
    from sslbench.data import iterate_batches, num_batches
    from sslbench.data.augment import BatchAugment, eval_transform
    from sslbench.device import autocast, memory_format, to_device

    if augment not in AUGMENT_SETTINGS:
        raise ValueError(f"unknown probe augmentation {augment!r}: use {', '.join(PROBE_AUGMENTS)}")
    _require_labels(train_ds.labels)
    device = device or next(backbone.parameters()).device
    fmt = memory_format(device)
    crop_scale, flip_p = AUGMENT_SETTINGS[augment]
    train_view = BatchAugment(image_size=image_size, mean=train_ds.mean, std=train_ds.std,
                              crop_scale=crop_scale, flip_p=flip_p, jitter_p=0.0,
                              gray_p=0.0).to(device)
    centre = eval_transform(image_size=image_size, mean=test_ds.mean, std=test_ds.std)
    g = torch.Generator(device=device)

    @torch.no_grad()
    def encode(images: Tensor, transform, *args) -> Tensor:
        with autocast(device):
            x = transform(to_device(images, device), *args).contiguous(memory_format=fmt)
            return backbone(x).float()

    def batches(epoch: int):
        for i, (images, labels) in enumerate(iterate_batches(
                train_ds, recipe.batch_size, shuffle=True, drop_last=False, seed=recipe.seed,
                epoch=epoch)):
            g.manual_seed((recipe.seed * 1_000_003 + epoch) * 1_000_003 + i)
            yield encode(images, train_view, g), to_device(labels, device)

    was_training = backbone.training
    backbone.eval()
    try:
        steps = max(num_batches(train_ds, recipe.batch_size, drop_last=False), 1)
        layer, train_top1 = _fit_head(batches, steps, train_ds.num_classes, recipe, device)
        logits, labels = [], []
        with torch.no_grad():
            for images, y in iterate_batches(test_ds, 512, shuffle=False, drop_last=False):
                logits.append(layer(encode(images, centre)).cpu())
                labels.append(y)
    finally:
        backbone.train(was_training)
    return {"top1": _top1(torch.cat(logits), torch.cat(labels)), "train_top1": train_top1}
