"""Batched SSL augmentations on the training device: recipes and the per-view pipeline.

A :class:`BatchAugment` turns a uint8 batch (B, 3, H, W) into one normalised float view
(B, 3, S, S) on the same device. Every sample gets its own random parameters, all drawn at once
(one ``torch.rand`` call per batch), and every op is vectorised over the batch
(:mod:`sslbench.data.augment_ops`). The pipeline follows torchvision's order for the BYOL recipe:

    random resized crop -> horizontal flip -> colour jitter (random op order, prob p)
    -> grayscale (p) -> Gaussian blur (p) -> solarize (p, threshold 0.5) -> normalise

Differences from a per-sample PIL pipeline, all deliberate: values stay float between ops (no
rounding to uint8 after each op), the crop is resampled with antialiased bilinear weights (as
torchvision's tensor ``resized_crop``), and the blur kernel size is fixed per image size
(:func:`~sslbench.data.augment_ops.blur_kernel_size`). Random draws use ``generator`` (CPU or the
images' device); a CPU generator gives the same parameters whatever the training device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import torch
from torch import Tensor

from sslbench.data import augment_ops as ops
from sslbench.data.names import RECIPE_NAMES
from sslbench.errors import ConfigError

# (crop scale or None, flip probability) of each of the offline probes' training-image
# augmentations (sslbench.config.PROBE_AUGMENTS); "crop-flip" is the paper's
# RandomResizedCrop(0.08, 1) + flip.
PROBE_AUGMENT_SETTINGS: dict[str, tuple[tuple[float, float] | None, float]] = {
    "crop-flip": ((0.08, 1.0), 0.5),
    "flip": (None, 0.5),
    "none": (None, 0.0),
}
CROP_TRIES = 10  # candidate boxes per sample, as torchvision's RandomResizedCrop
CPU_CHUNK_BYTES = 3 * 2**19  # float working set per chunk on CPU (see BatchAugment.apply)


@dataclass(frozen=True)
class ViewRecipe:
    """Settings of one view's pipeline; ``crop_scale=None`` means a deterministic centre crop."""

    crop_scale: tuple[float, float] | None = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    gray_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0


@dataclass(frozen=True)
class Recipe:
    """Two view recipes (view 1, view 2) and a one-line description."""

    views: tuple[ViewRecipe, ViewRecipe]
    description: str


_EVAL_VIEW = ViewRecipe(crop_scale=None, flip_p=0.0, jitter_p=0.0, gray_p=0.0)
_SMALL_VIEW = ViewRecipe(crop_scale=(0.25, 1.0))
_SHAPES_VIEW = ViewRecipe(crop_scale=(0.5, 1.0))

RECIPES: dict[str, Recipe] = {
    "byol": Recipe(
        (ViewRecipe(blur_p=1.0), ViewRecipe(blur_p=0.1, solarize_p=0.2)),
        "paper Table S1 (BYOL): crop 0.08-1, flip, jitter 0.4/0.4/0.2/0.1 p=0.8, gray 0.2, "
        "blur 1.0/0.1, solarize 0.0/0.2",
    ),
    "cifar": Recipe(
        (ViewRecipe(), ViewRecipe(solarize_p=0.1)),
        "usual CIFAR SSL recipe (solo-learn style): as byol without blur, solarize 0.0/0.1",
    ),
    "small": Recipe(
        (_SMALL_VIEW, replace(_SMALL_VIEW, solarize_p=0.1)),
        "cifar recipe with crop scale 0.25-1, for the 32x32 embedded datasets: a 0.08 crop "
        "(9x9 px) often cuts a shapes object down to an unrecognisable corner",
    ),
    "digits": Recipe(
        (replace(_SMALL_VIEW, flip_p=0.0), replace(_SMALL_VIEW, flip_p=0.0, solarize_p=0.1)),
        "small recipe without flips (a mirrored digit is not the same digit)",
    ),
    "shapes": Recipe(
        (_SHAPES_VIEW, replace(_SHAPES_VIEW, solarize_p=0.1)),
        "small recipe with crop scale 0.5-1, for the embedded shapes data: a shapes object covers "
        "9-18% of the image, and two views cut from a quarter of it often share too little of "
        "the object for a short CPU budget to learn from",
    ),
    "eval": Recipe((_EVAL_VIEW, _EVAL_VIEW), "no randomness: centre square resized, normalised"),
}


def _check_range(name: str, pair: Sequence[float], lo: float, hi: float) -> tuple[float, float]:
    a, b = (float(v) for v in pair)
    if not lo <= a <= b <= hi:
        raise ConfigError(f"augmentation {name}={pair} is invalid: "
                          f"need {lo} <= low <= high <= {hi}")
    return a, b


def _pair(values: Sequence[float]) -> tuple[float, float]:
    """A (low, high) tuple from any 2-sequence (configs may hold lists); ValueError otherwise."""
    low, high = values
    return low, high


def _validate(v: ViewRecipe) -> None:
    for name in ("flip_p", "jitter_p", "gray_p", "blur_p", "solarize_p"):
        _check_range(name, (0.0, getattr(v, name)), 0.0, 1.0)
    for name in ("brightness", "contrast", "saturation"):
        _check_range(name, (0.0, getattr(v, name)), 0.0, float("inf"))
    _check_range("hue", (0.0, v.hue), 0.0, 0.5)
    if v.crop_scale is not None:
        lo, _ = _check_range("crop_scale", v.crop_scale, 0.0, 1.0)
        if lo <= 0:
            raise ConfigError(f"augmentation crop_scale={v.crop_scale} is invalid: need low > 0")
    r_lo, _ = _check_range("crop_ratio", v.crop_ratio, 0.0, float("inf"))
    s_lo, _ = _check_range("blur_sigma", v.blur_sigma, 0.0, float("inf"))
    if r_lo <= 0 or s_lo <= 0:
        raise ConfigError("augmentation crop_ratio and blur_sigma must be positive")


class BatchAugment(torch.nn.Module):
    """One view's batched augmentation pipeline (see the module docstring for the op order).

    Args:
        image_size: side S of the square output.
        mean, std: per-channel normalisation (3 values each, on the [0, 1] scale).
        crop_scale: area fraction range of the random resized crop, or None for the
            deterministic centre square (evaluation).
        other arguments: as in :class:`ViewRecipe` (probabilities and jitter strengths as in
            torchvision: brightness b draws a factor in [max(0, 1 - b), 1 + b], hue h a shift in
            [-h, h] turns).
    """

    mean: Tensor  # buffers registered in __init__
    std: Tensor

    def __init__(self, *, image_size: int, mean: Sequence[float], std: Sequence[float],
                 crop_scale: tuple[float, float] | None = (0.08, 1.0),
                 crop_ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_p: float = 0.5,
                 jitter_p: float = 0.8, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.2, hue: float = 0.1, gray_p: float = 0.2,
                 blur_p: float = 0.0, blur_sigma: tuple[float, float] = (0.1, 2.0),
                 solarize_p: float = 0.0) -> None:
        super().__init__()
        self.recipe = ViewRecipe(
            crop_scale=None if crop_scale is None else _pair(crop_scale),
            crop_ratio=_pair(crop_ratio),
            flip_p=flip_p, jitter_p=jitter_p, brightness=brightness, contrast=contrast,
            saturation=saturation, hue=hue, gray_p=gray_p, blur_p=blur_p,
            blur_sigma=_pair(blur_sigma), solarize_p=solarize_p)
        _validate(self.recipe)
        if int(image_size) < 1 or len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ConfigError(f"augmentation needs image_size >= 1, 3 means and 3 positive "
                              f"stds, got image_size={image_size}, mean={mean}, std={std}")
        self.image_size = int(image_size)
        self.kernel_size = ops.blur_kernel_size(self.image_size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    @classmethod
    def from_recipe(cls, view: ViewRecipe, *, image_size: int, mean: Sequence[float],
                    std: Sequence[float]) -> BatchAugment:
        """Build the pipeline of one :class:`ViewRecipe`."""
        return cls(image_size=image_size, mean=mean, std=std, **asdict(view))

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}, {self.recipe}"

    # -- parameters ------------------------------------------------------------------------------

    def sample_params(self, batch: int, generator: torch.Generator | None, device: torch.device,
                      source_hw: tuple[int, int] | None = None) -> dict[str, Tensor]:
        """Draw every random parameter of a batch at once.

        Uniforms are drawn in one call on the generator's device (the default generator of
        ``device`` when None) and moved to ``device``. ``source_hw`` is the input (H, W), by
        default (image_size, image_size). Returns (B,)-shaped tensors: ``top, left, height,
        width`` (int64 crop box), ``flip, jitter, gray, blur, solarize`` (bool),
        ``brightness, contrast, saturation, hue, sigma`` (float32), and ``order`` (B, 4) int64.
        """
        r = self.recipe
        h, w = source_hw if source_hw is not None else (self.image_size, self.image_size)
        gen_device = generator.device if generator is not None else torch.device(device)
        u = torch.rand(batch, 2 * CROP_TRIES + 16, generator=generator, device=gen_device)
        u = u.to(device)
        t = 2 * CROP_TRIES
        if r.crop_scale is None:
            top, left, height, width = ops.centre_square_box(h, w, batch, u.device)
        else:
            top, left, height, width = ops.sample_crop_boxes(
                u[:, :CROP_TRIES], u[:, CROP_TRIES:t], u[:, t:t + 2], h, w, r.crop_scale,
                r.crop_ratio)

        def between(col: Tensor, lo: float, hi: float) -> Tensor:
            return lo + col * (hi - lo)

        return {
            "top": top, "left": left, "height": height, "width": width,
            "flip": u[:, t + 2] < r.flip_p,
            "jitter": u[:, t + 3] < r.jitter_p,
            "brightness": between(u[:, t + 4], max(0.0, 1 - r.brightness), 1 + r.brightness),
            "contrast": between(u[:, t + 5], max(0.0, 1 - r.contrast), 1 + r.contrast),
            "saturation": between(u[:, t + 6], max(0.0, 1 - r.saturation), 1 + r.saturation),
            "hue": between(u[:, t + 7], -r.hue, r.hue),
            "order": torch.argsort(u[:, t + 8:t + 12], dim=1),
            "gray": u[:, t + 12] < r.gray_p,
            "blur": u[:, t + 13] < r.blur_p,
            "sigma": between(u[:, t + 14], *r.blur_sigma),
            "solarize": u[:, t + 15] < r.solarize_p,
        }

    # -- application -----------------------------------------------------------------------------

    # Shadows nn.Module.apply(fn) on purpose (a public name, used by callers and tests): never
    # nest a BatchAugment in a module that is .apply(fn)-ed, as that recurses into children.
    def apply(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:  # type: ignore[override]
        """Apply fixed parameters (from :meth:`sample_params`) to a batch.

        On CPU the batch is processed in chunks of about ``CPU_CHUNK_BYTES`` of float pixels:
        small temporaries stay in the allocator's cache instead of being mapped and faulted in
        afresh for every op, which is several times faster on CPU; results agree to float
        rounding (~1e-6; vectorised and scalar tails of kernels round differently).

        Args:
            images: (B, 3, H, W) uint8, or float in [0, 1].
        Returns:
            (B, 3, S, S) float32, normalised with ``mean``/``std``, on ``images.device``.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        per_image = 12 * max(images.shape[-2] * images.shape[-1], self.image_size ** 2)
        chunk = max(1, CPU_CHUNK_BYTES // per_image)
        if images.device.type != "cpu" or images.shape[0] <= chunk:
            return self._augment(images, params)
        out = torch.empty((images.shape[0], 3, self.image_size, self.image_size))
        for i in range(0, images.shape[0], chunk):
            part = {k: v[i:i + chunk] for k, v in params.items()}
            out[i:i + chunk] = self._augment(images[i:i + chunk], part)
        return out

    def _augment(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        r, p = self.recipe, params
        # On CPU, skip an op when no sample of the (small) chunk needs it; on CUDA that test
        # would be a device sync, and a large batch almost always needs every op anyway.
        needed: Callable[[Tensor], bool] = (
            (lambda m: bool(m.any())) if images.device.type == "cpu" else (lambda m: True))
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        _, _, h, w = x.shape
        flip = p["flip"] if r.flip_p > 0 and needed(p["flip"]) else None
        if not (r.crop_scale is None and h == w == self.image_size):
            x = ops.resized_crop(x, p["top"], p["left"], p["height"], p["width"],
                                 self.image_size, flip)
        elif flip is not None:  # no crop to fold the mirror into
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        if r.jitter_p > 0 and needed(p["jitter"]):
            on = p["jitter"]
            one = torch.ones_like(p["brightness"])
            x = ops.color_jitter(
                x, torch.where(on, p["brightness"], one), torch.where(on, p["contrast"], one),
                torch.where(on, p["saturation"], one), torch.where(on, p["hue"], one - 1),
                p["order"])
        if r.gray_p > 0 and needed(p["gray"]):
            x = ops.grayscale(x, p["gray"])
        if r.blur_p > 0:
            rows = torch.nonzero(p["blur"]).squeeze(1)
            if rows.numel() == x.shape[0]:
                x = ops.gaussian_blur(x, p["sigma"], self.kernel_size)
            elif rows.numel():
                sigma = p["sigma"].index_select(0, rows)
                blurred = ops.gaussian_blur(x.index_select(0, rows), sigma, self.kernel_size)
                x = x.index_copy(0, rows, blurred)
        if r.solarize_p > 0 and needed(p["solarize"]):
            x = ops.solarize(x, p["solarize"])
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return (x - mean) / std

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """uint8 (B, 3, H, W) -> normalised float32 (B, 3, S, S), one random draw per sample."""
        params = self.sample_params(images.shape[0], generator, images.device,
                                    source_hw=(images.shape[-2], images.shape[-1]))
        return self.apply(images, params)


if tuple(RECIPES) != RECIPE_NAMES:  # the command line lists the names from there
    raise ImportError("sslbench.data.names.RECIPE_NAMES is out of step with the recipes: "
                      f"{', '.join(RECIPES)}")


def build_augment(recipe: str, *, image_size: int, mean: Sequence[float],
                  std: Sequence[float]) -> tuple[BatchAugment, BatchAugment]:
    """The two view pipelines of a named recipe (see :data:`RECIPES`)."""
    if recipe not in RECIPES:
        raise ConfigError(f"unknown augmentation recipe {recipe!r}: choose one of "
                          f"{', '.join(sorted(RECIPES))}")
    v1, v2 = RECIPES[recipe].views
    return (BatchAugment.from_recipe(v1, image_size=image_size, mean=mean, std=std),
            BatchAugment.from_recipe(v2, image_size=image_size, mean=mean, std=std))


def probe_view(augment: str, *, image_size: int, mean: Sequence[float],
               std: Sequence[float]) -> BatchAugment:
    """The view an offline probe trains on with ``augment`` (a key of
    :data:`PROBE_AUGMENT_SETTINGS`): its crop (or the centre square) and flip, nothing else."""
    crop_scale, flip_p = PROBE_AUGMENT_SETTINGS[augment]
    return BatchAugment(image_size=image_size, mean=mean, std=std, crop_scale=crop_scale,
                        flip_p=flip_p, jitter_p=0.0, gray_p=0.0)


def eval_transform(*, image_size: int, mean: Sequence[float],
                   std: Sequence[float]) -> Callable[[Tensor], Tensor]:
    """Deterministic evaluation transform: centre square resized to ``image_size``, normalised.

    uint8 (B, 3, H, W) -> float32 (B, 3, image_size, image_size) on the input's device; when the
    input is already ``image_size`` square this is only the normalisation.
    """
    return BatchAugment.from_recipe(_EVAL_VIEW, image_size=image_size, mean=mean, std=std)
