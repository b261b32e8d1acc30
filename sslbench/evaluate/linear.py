"""Linear probes of a frozen backbone: the paper's offline protocol and its fast variant.

Both train one linear layer with the paper's head recipe (Appendix E): SGD with
momentum 0.9 and weight decay 1e-6, a cosine schedule from lr = base_lr x batch / 256,
cross-entropy, ``epochs`` passes over the labelled training split in the same seeded batch
order. By default (``standardize``) each dimension of the representation is first standardised
with the mean and std of the training split's centre-crop representations: an affine map, so the
classifier stays linear in the representation (MAE and MoCo v3 put a non-affine BatchNorm there
for the same reason). Without it a fixed learning rate acts very differently on representations
of different scales: those of a randomly initialised network are ~100x smaller than a trained
one's, and its probe stays at chance. ``standardize=False`` is the paper's literal recipe.

The two protocols differ only in what the layer is fed:

- :func:`offline_linear_probe` (protocol ``linear``): every epoch, each training image is freshly
  augmented (:data:`PROBE_AUGMENT_SETTINGS`) and passed through the frozen backbone; test
  images get the centre crop. That is ``epochs`` forward passes over the training split.
- :func:`train_linear_probe` (protocol ``fast-linear``): the representations of the centre crops,
  and of their mirror images when the augmentation flips, are extracted once and kept
  (:class:`sslbench.evaluate.features.FeatureCache`); the layer trains on them in memory, taking
  the mirrored one wherever the offline protocol's draw flips. With the augmentations ``none``
  and ``flip`` the two protocols compute the same thing; with ``crop-flip`` the fast one leaves
  the crops out.

Labels < 0 (unlabelled images) are ignored throughout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from sslbench.config import PROBE_AUGMENTS
from sslbench.data.augment import PROBE_AUGMENT_SETTINGS

if TYPE_CHECKING:
    from sslbench.data.base import ImageDataset


@dataclass(frozen=True)
class HeadRecipe:
    """How the linear layer is trained (the paper's offline recipe by default)."""

    epochs: int = 100
    batch_size: int = 256
    base_lr: float = 0.25
    weight_decay: float = 1e-6
    momentum: float = 0.9
    seed: int = 0
    standardize: bool = True

    @property
    def peak_lr(self) -> float:
        return self.base_lr * self.batch_size / 256


Batches = Callable[[int], Iterable[tuple[Tensor, Tensor]]]


class LinearHead:
    """A linear classifier trained by SGD on cross-entropy, with closed-form gradients.

    One :meth:`step` equals ``F.cross_entropy(nn.Linear(h), y)`` (mean over the labelled rows;
    rows with a label < 0 get zero weight), ``backward()`` and a ``torch.optim.SGD`` step with
    momentum and weight decay on weight and bias alike (a test checks this against autograd).
    Weight and bias are one (C, D + 1) matrix acting on ``[h, 1]``. Without autograd and the
    optimiser a step on cached features is a few small kernels and no host-device sync, which
    is most of the fast protocol's time.
    """

    def __init__(self, dim: int, num_classes: int, recipe: HeadRecipe, device: torch.device,
                 stats: tuple[Tensor, Tensor] | None = None):
        g = torch.Generator().manual_seed(recipe.seed)
        weight = torch.randn(num_classes, dim, generator=g) * 0.01
        self.params = torch.cat([weight, torch.zeros(num_classes, 1)], 1).to(device)
        self.momentum, self.weight_decay = recipe.momentum, recipe.weight_decay
        self._buffer: Tensor | None = None
        # Inputs are standardised with (mean, std) when given: (h - mean) / std.
        self.stats = None if stats is None else tuple(m.to(device) for m in stats)

    @property
    def weight(self) -> Tensor:
        return self.params[:, :-1]

    @property
    def bias(self) -> Tensor:
        return self.params[:, -1]

    def _inputs(self, h: Tensor) -> Tensor:
        if self.stats is not None:
            mean, std = self.stats
            h = (h - mean) / std
        return torch.cat([h, h.new_ones(len(h), 1)], 1)

    def __call__(self, h: Tensor) -> Tensor:
        return self._inputs(h) @ self.params.t()

    @torch.no_grad()
    def step(self, h: Tensor, y: Tensor, lr: float) -> Tensor:
        """One SGD step on the batch (h (B, D), y (B,)); returns the logits before the step."""
        h = self._inputs(h)
        logits = h @ self.params.t()
        keep = (y >= 0).to(h.dtype)
        grad = logits.softmax(1)
        grad.scatter_add_(1, y.clamp_min(0)[:, None], -torch.ones_like(keep)[:, None])
        grad.mul_((keep / keep.sum().clamp_min(1.0))[:, None])
        step = torch.addmm(self.params, grad.t(), h, beta=self.weight_decay)
        if self._buffer is None:
            self._buffer = step
        else:
            self._buffer.mul_(self.momentum).add_(step)
        self.params.add_(self._buffer, alpha=-lr)
        return logits


def moments(chunks: Iterable[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-dimension (mean, std) of the rows of all ``chunks`` (float64 sums, unbiased std,
    clamped at 1e-6), as float32 on the chunks' device."""
    n, total, squares = 0, None, None
    for chunk in chunks:
        c = chunk.double()
        n += c.shape[0]
        total = c.sum(0) if total is None else total + c.sum(0)
        squares = (c * c).sum(0) if squares is None else squares + (c * c).sum(0)
    if total is None or squares is None or n < 2:  # both None or neither
        raise ValueError("the linear probe needs at least 2 training images")
    mean = total / n
    var = ((squares - n * mean * mean) / (n - 1)).clamp_min(0.0)
    return mean.float(), var.sqrt().clamp_min(1e-6).float()


def _fit_head(batches: Batches, steps_per_epoch: int, num_classes: int, recipe: HeadRecipe,
              device: torch.device,
              stats: tuple[Tensor, Tensor] | None = None) -> tuple[LinearHead, float]:
    """Trains a :class:`LinearHead` on ``batches(epoch)`` -> (features (B, D), labels (B,)),
    standardised with ``stats`` (mean, std) when given.

    The learning rate follows a cosine from ``recipe.peak_lr`` to 0 over every step. Returns the
    head and its top-1 on the last epoch's training batches (before each batch's step).
    """
    head = None
    total, step = max(recipe.epochs * steps_per_epoch, 1), 0
    correct = seen = torch.zeros((), device=device)
    for epoch in range(recipe.epochs):
        for h, y in batches(epoch):
            if head is None:
                head = LinearHead(h.shape[1], num_classes, recipe, device, stats)
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


def flip_draws(recipe: HeadRecipe, epoch: int, n: int, flip_p: float) -> Tensor:
    """(n,) bool on CPU: whether the image at position j of ``epoch``'s batch order is mirrored.
    Both protocols use these draws."""
    g = torch.Generator().manual_seed(_seed(recipe, epoch, stream=1))
    return torch.rand(n, generator=g) < flip_p


def _seed(recipe: HeadRecipe, epoch: int, batch: int = 0, *, stream: int = 0) -> int:
    """A 64-bit seed per (probe seed, epoch, batch, stream): stream 0 crops, stream 1 flips."""
    state = np.random.SeedSequence([recipe.seed, epoch, batch, stream]).generate_state(2)
    return int(state[0]) << 32 | int(state[1])


def train_linear_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor,
                       num_classes: int, recipe: HeadRecipe = HeadRecipe(), *,
                       mirror_x: Tensor | None = None, flip_p: float = 0.0) -> dict[str, float]:
    """The fast protocol on cached features -> {"top1": test top-1 %, "train_top1": ...}.

    ``mirror_x`` holds the representations of the mirrored training images; each is used
    instead of ``train_x``'s with probability ``flip_p``, with the offline protocol's draws.
    Runs on the features' device (move them to the GPU first for large data sets)."""
    from sslbench.data.loader import epoch_order

    _require_labels(train_y)
    if flip_p > 0 and mirror_x is None:
        raise ValueError("flip_p > 0 needs the mirrored representations (mirror_x)")
    n, device = len(train_x), train_x.device
    if recipe.standardize:  # once, here, rather than in every step
        mean, std = moments(torch.split(train_x, 65536))
        train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
        mirror_x = None if mirror_x is None else (mirror_x - mean) / std
    # Rows n.. of `views` are the mirror images: a batch is one gather from it.
    views = train_x if flip_p == 0 or mirror_x is None else torch.cat([train_x, mirror_x])

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        index = epoch_order(n, shuffle=True, seed=recipe.seed, epoch=epoch)
        labels = train_y[index.to(train_y.device)]
        if flip_p > 0:
            index = index + n * flip_draws(recipe, epoch, n, flip_p)
        index = index.to(device)
        for start in range(0, n, recipe.batch_size):
            end = start + recipe.batch_size
            yield views[index[start:end]], labels[start:end]

    layer, train_top1 = _fit_head(batches, math.ceil(n / recipe.batch_size), num_classes,
                                  recipe, device)
    with torch.no_grad():
        return {"top1": _top1(layer(test_x), test_y), "train_top1": train_top1}


def offline_linear_probe(backbone: torch.nn.Module, train_ds: ImageDataset,
                         test_ds: ImageDataset, *, image_size: int,
                         recipe: HeadRecipe = HeadRecipe(), augment: str = "crop-flip",
                         device: torch.device | None = None) -> dict[str, float]:
    """The paper's offline protocol -> {"top1": test top-1 %, "train_top1": ...}.

    Frozen backbone in eval mode. With ``recipe.standardize``, a first pass over the training
    split's centre crops gives the standardisation. Training images are augmented with
    ``augment`` (a key of :data:`PROBE_AUGMENT_SETTINGS`, batched on the device); test images are
    centre-cropped. The backbone's weights, BatchNorm statistics and training flag are unchanged
    afterwards.
    """
    from sslbench.data import iterate_batches, num_batches
    from sslbench.data.augment import BatchAugment, eval_transform
    from sslbench.device import autocast, memory_format, to_device

    if augment not in PROBE_AUGMENT_SETTINGS:
        raise ValueError(f"unknown probe augmentation {augment!r}: use {', '.join(PROBE_AUGMENTS)}")
    _require_labels(train_ds.labels)
    device = device or next(backbone.parameters()).device
    fmt = memory_format(device)
    crop_scale, flip_p = PROBE_AUGMENT_SETTINGS[augment]
    train_view = BatchAugment(image_size=image_size, mean=train_ds.mean, std=train_ds.std,
                              crop_scale=crop_scale, flip_p=0.0, jitter_p=0.0,
                              gray_p=0.0).to(device)
    centre = eval_transform(image_size=image_size, mean=test_ds.mean, std=test_ds.std)
    g = torch.Generator(device=device)

    @torch.no_grad()
    def encode(images: Tensor, transform: Callable[..., Tensor], *args: object) -> Tensor:
        # The transform runs in float32, as in feature extraction; only the backbone autocasts.
        x = transform(to_device(images, device), *args).contiguous(memory_format=fmt)
        with autocast(device):
            h: Tensor = backbone(x)
            return h.float()

    def view(images: Tensor, epoch: int, i: int, flip: Tensor) -> Tensor:
        g.manual_seed(_seed(recipe, epoch, i))
        x: Tensor = train_view(images, g)  # the crop (or the centre square)
        if flip_p == 0:
            return x
        return torch.where(flip[:, None, None, None], x.flip(3), x)

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        # One copy of the epoch's flips to the device, sliced there: no sync per batch.
        flips = to_device(flip_draws(recipe, epoch, len(train_ds), flip_p), device)
        start = 0
        for i, (images, labels) in enumerate(iterate_batches(
                train_ds, recipe.batch_size, shuffle=True, drop_last=False, seed=recipe.seed,
                epoch=epoch)):
            flip = flips[start:start + len(images)]
            start += len(images)
            yield encode(images, view, epoch, i, flip), to_device(labels, device)

    was_training = backbone.training
    backbone.eval()
    try:
        stats = None
        if recipe.standardize:  # one pass over the centre crops, as the fast protocol has
            stats = moments(encode(images, centre) for images, _ in iterate_batches(
                train_ds, 512, shuffle=False, drop_last=False))
        steps = max(num_batches(train_ds, recipe.batch_size, drop_last=False), 1)
        layer, train_top1 = _fit_head(batches, steps, train_ds.num_classes, recipe, device,
                                      stats)
        logits, labels = [], []
        with torch.no_grad():
            for images, y in iterate_batches(test_ds, 512, shuffle=False, drop_last=False):
                logits.append(layer(encode(images, centre)).cpu())
                labels.append(y)
    finally:
        backbone.train(was_training)
    return {"top1": _top1(torch.cat(logits), torch.cat(labels)), "train_top1": train_top1}
