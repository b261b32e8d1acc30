"""Batched image operations with one parameter set per sample, for the augmentation pipeline.

Every function takes a float batch ``x`` of shape (B, 3, H, W) with values in [0, 1] and per-sample
parameters of shape (B,), and works on whatever device ``x`` lives on. None of them loops over the
samples in Python. Each one reproduces the matching ``torchvision.transforms.v2.functional`` op on
float tensors (the tests pin the tolerances):

- :func:`resized_crop` = ``resized_crop(..., antialias=True)`` (bilinear) followed by an optional
  ``horizontal_flip``. Up-scaling crops (the usual case) read two rows, then two columns, per
  output pixel (index_select / gather); a batch with a down-scaled crop uses ``Ry @ x @ Rx^T``
  with one resampling matrix per sample and axis, built from the triangle filter of PyTorch's
  antialiased bilinear resize. The flip only reverses the column taps (or the rows of ``Rx``).
- :func:`color_jitter` = torchvision's ``ColorJitter`` with a per-sample random order of the four
  ops. Brightness, contrast and saturation are all blends ``clamp(f x + (1 - f) ref)`` (ref = 0,
  the mean grey level, the grey image), so one "slot" applies whichever of the three each sample
  has at that position in a single vectorised blend; hue runs on the samples whose slot says hue.
- :func:`adjust_hue` is an exact HSV hue rotation (not a YIQ approximation).
- :func:`gaussian_blur` is a per-sample separable Gaussian (shifted multiply-adds), reflect
  padding, the same kernel as torchvision.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# Luma weights used by torchvision's tensor ``rgb_to_grayscale`` (ITU-R 601, rounded as there).
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)

# Jitter op codes, in the order used by ``order`` tensors.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


def _check_batch(x: Tensor, *params: Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
    for p in params:
        if p.shape[0] != x.shape[0]:
            raise ValueError(f"parameter of shape {tuple(p.shape)} for a batch of {x.shape[0]}")


# ----------------------------------------------------------------------------------------------
# Crop + resize + flip
# ----------------------------------------------------------------------------------------------


def resample_matrix(start: Tensor, length: Tensor, in_size: int, out_size: int) -> Tensor:
    """Per-sample 1-D resampling matrices for "crop [start, start+length) then resize to out_size".

    Row i of sample b holds the weights of input pixels for output pixel i: a triangle filter
    centred at ``start + (i + 0.5) * scale - 0.5`` (pixel-centre convention, ``scale =
    length / out_size``), widened by ``scale`` when down-scaling (antialiasing), restricted to the
    crop and renormalised to sum to one, i.e. PyTorch's ``interpolate(mode="bilinear",
    antialias=True)`` applied to the cropped signal.

    Args:
        start, length: (B,) integer crop offsets and lengths, ``0 <= start``,
            ``start + length <= in_size``, ``length >= 1``.
    Returns:
        (B, out_size, in_size) float32 matrix on ``start.device``.
    """
    dev = start.device
    start = start.to(torch.float64)[:, None, None]
    length = length.to(torch.float64)[:, None, None]
    scale = length / out_size
    support = torch.clamp(scale, min=1.0)  # filter half-width in input pixels
    centre = (torch.arange(out_size, device=dev, dtype=torch.float64)[None, :, None] + 0.5) * scale
    pix = torch.arange(in_size, device=dev, dtype=torch.float64)[None, None, :] - start
    weights = torch.clamp(1.0 - torch.abs(pix + 0.5 - centre) / support, min=0.0)
    weights = weights * ((pix >= 0) & (pix < length))
    return (weights / weights.sum(dim=2, keepdim=True)).to(torch.float32)


def _bilinear_taps(start: Tensor, length: Tensor, out_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Two-tap form of :func:`resample_matrix` when no sample is down-scaled (length <= out).

    With ``scale <= 1`` the triangle filter is plain bilinear interpolation whose source
    coordinate is clamped to the crop, so each output pixel reads two input pixels.
    Returns (B, out) global indices ``i0, i1`` and the weight ``w1`` of ``i1``.
    """
    scale = length.to(torch.float32)[:, None] / out_size
    out_idx = torch.arange(out_size, device=start.device, dtype=torch.float32)[None]
    pos = (out_idx + 0.5) * scale - 0.5
    last = (length - 1)[:, None].to(torch.float32)
    pos = torch.minimum(pos.clamp(min=0.0), last)
    i0 = torch.floor(pos)
    w1 = pos - i0
    i1 = torch.minimum(i0 + 1, last)
    return i0.long() + start[:, None], i1.long() + start[:, None], w1


def _resized_crop_taps(x: Tensor, top: Tensor, left: Tensor, height: Tensor, width: Tensor,
                       size: int, flip: Tensor | None) -> Tensor:
    b, c, h, w = x.shape
    y0, y1, wy = _bilinear_taps(top, height, size)
    x0, x1, wx = _bilinear_taps(left, width, size)
    if flip is not None:
        f = flip[:, None]
        x0, x1, wx = (torch.where(f, t.flip(1), t) for t in (x0, x1, wx))
    # Vertical pass: whole rows, picked by global row index from a (B*C*H, W) view.
    plane = (torch.arange(b * c, device=x.device) * h).view(b, c, 1)
    flat = x.reshape(b * c * h, w)
    upper = flat.index_select(0, (plane + y0[:, None]).reshape(-1))
    lower = flat.index_select(0, (plane + y1[:, None]).reshape(-1))
    weight = wy.to(x.dtype)[:, None, :, None].expand(b, c, size, 1).reshape(-1, 1)
    x = torch.lerp(upper, lower, weight).view(b, c, size, w)
    # Horizontal pass: per-sample columns.
    cols = (b, c, size, size)
    left_cols = x.gather(3, x0[:, None, None, :].expand(cols))
    return torch.lerp(left_cols, x.gather(3, x1[:, None, None, :].expand(cols)),
                      wx.to(x.dtype)[:, None, None, :])


def resized_crop(x: Tensor, top: Tensor, left: Tensor, height: Tensor, width: Tensor,
                 size: int, flip: Tensor | None = None) -> Tensor:
    """Crop box (top, left, height, width) of each sample, resize to (size, size), maybe flip.

    Images no larger than the output (whose crops can only up-scale) take a two-tap gather
    path; larger images take the dense path
    ``Ry @ x @ Rx^T`` with antialiasing weights. Both equal torchvision's antialiased bilinear
    ``resized_crop`` of each sample.

    Args:
        x: (B, C, H, W) float images.
        top, left, height, width: (B,) integer crop boxes inside the image.
        flip: (B,) bool, mirror the output horizontally where True.
    Returns:
        (B, C, size, size) float images (convex combinations of input pixels).
    """
    _check_batch(x, top, left, height, width)
    b, c, h, w = x.shape
    # Decided from the image size, not from the boxes: reading the boxes back would be a host
    # sync on every training step (no crop of an image no larger than the output down-scales).
    if max(h, w) <= size:
        return _resized_crop_taps(x, top, left, height, width, size, flip)
    ry = resample_matrix(top, height, h, size).to(x.dtype)
    rx = resample_matrix(left, width, w, size).to(x.dtype)
    if flip is not None:
        rx = torch.where(flip[:, None, None], rx.flip(1), rx)
    # (B, size, H) @ (B, H, C*W): rows first, as one batched matmul over all channels.
    rows = torch.bmm(ry, x.permute(0, 2, 1, 3).reshape(b, h, c * w))
    rows = rows.reshape(b, size * c, w)
    out = torch.bmm(rows, rx.transpose(1, 2))  # (B, size*C, size)
    return out.reshape(b, size, c, size).permute(0, 2, 1, 3).contiguous()


def centre_square_box(h: int, w: int, batch: int, device: torch.device) -> tuple[Tensor, ...]:
    """(top, left, height, width) of the largest centred square, repeated for a batch."""
    side = min(h, w)
    full = torch.full((batch,), side, dtype=torch.long, device=device)
    top = torch.full((batch,), (h - side) // 2, dtype=torch.long, device=device)
    left = torch.full((batch,), (w - side) // 2, dtype=torch.long, device=device)
    return top, left, full, full.clone()


def sample_crop_boxes(u_area: Tensor, u_ratio: Tensor, u_pos: Tensor, h: int, w: int,
                      scale: tuple[float, float], ratio: tuple[float, float]) -> tuple[Tensor, ...]:
    """Random-resized-crop boxes, torchvision's ``RandomResizedCrop.get_params`` for a batch.

    Each sample gets ``T`` candidate (area, log-aspect) draws; the first candidate whose rounded
    box fits in the image is used, and samples with none fall back to the centre crop clamped to
    the ratio range, exactly as torchvision does with T = 10 tries.

    Args:
        u_area, u_ratio: (B, T) uniforms in [0, 1) for the area fraction and log aspect ratio.
        u_pos: (B, 2) uniforms for the top and left offsets.
    Returns:
        top, left, height, width: (B,) int64.
    """
    area = h * w
    target = area * (scale[0] + u_area * (scale[1] - scale[0]))
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + u_ratio * (log_hi - log_lo))
    cw = torch.round(torch.sqrt(target * aspect))
    ch = torch.round(torch.sqrt(target / aspect))
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = torch.argmax(ok.float(), dim=1, keepdim=True)  # first True (0 if none)
    any_ok = ok.any(dim=1)
    cw = cw.gather(1, first).squeeze(1)
    ch = ch.gather(1, first).squeeze(1)
    # Fallback: the whole image, or its centre clamped to the aspect-ratio range.
    in_ratio = w / h
    if in_ratio < min(ratio):
        fw, fh = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(h * max(ratio))), h
    else:
        fw, fh = w, h
    cw = torch.where(any_ok, cw, torch.full_like(cw, fw)).long()
    ch = torch.where(any_ok, ch, torch.full_like(ch, fh)).long()
    top = torch.floor(u_pos[:, 0] * (h - ch + 1)).long().clamp(max=h - ch)
    left = torch.floor(u_pos[:, 1] * (w - cw + 1)).long().clamp(max=w - cw)
    top = torch.where(any_ok, top, (h - ch) // 2)
    left = torch.where(any_ok, left, (w - cw) // 2)
    return top, left, ch, cw


# ----------------------------------------------------------------------------------------------
# Colour
# ----------------------------------------------------------------------------------------------


def to_gray(x: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma with torchvision's weights."""
    r, g, b = x.unbind(dim=1)
    gray = r.mul(GRAY_WEIGHTS[0]).add_(g, alpha=GRAY_WEIGHTS[1]).add_(b, alpha=GRAY_WEIGHTS[2])
    return gray[:, None]


def blend(x: Tensor, ref: Tensor, factor: Tensor) -> Tensor:
    """``clamp(f x + (1 - f) ref, 0, 1)`` with a per-sample factor (B,); ref broadcasts to x."""
    _check_batch(x, factor)
    f = factor.to(x.dtype)[:, None, None, None]
    return torch.lerp(ref.expand_as(x), x, f).clamp_(0.0, 1.0)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """Scale intensities by ``factor`` (B,) and clip."""
    return blend(x, torch.zeros((), dtype=x.dtype, device=x.device), factor)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with its mean grey level (one scalar per image)."""
    return blend(x, to_gray(x).mean(dim=(1, 2, 3), keepdim=True), factor)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with its own grey version."""
    return blend(x, to_gray(x), factor)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the HSV hue of each image by ``shift`` (B,) turns, in [-0.5, 0.5].

    HSV hue rotation keeps each pixel's max and min channel (value and chroma), so the result is
    written directly from the shifted hue h (in sixths of a turn): channel n in (R: 5, G: 3,
    B: 1) is ``max - chroma * clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + h) mod 6``.
    """
    _check_batch(x, shift)
    r, g, b = x.unbind(dim=1)
    vmax = torch.maximum(torch.maximum(r, g), b)
    chroma = vmax - torch.minimum(torch.minimum(r, g), b)
    inv = torch.where(chroma > 0, chroma, torch.ones_like(chroma)).reciprocal_()
    # Hue sector by the max channel; ties resolve to red, then green, as HSV code does. Grey
    # pixels (chroma 0) get some finite hue, which the final product with chroma cancels.
    h6 = torch.where(vmax == r, (g - b) * inv,
                     torch.where(vmax == g, (b - r) * inv + 2.0, (r - g) * inv + 4.0))
    h6 += 6.0 * shift.to(x.dtype)[:, None, None]
    n = 5.0 - 2.0 * torch.arange(3, dtype=x.dtype, device=x.device)[None, :, None, None]
    k = torch.remainder(h6[:, None] + n, 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return vmax[:, None] - chroma[:, None] * ramp


def color_jitter(x: Tensor, brightness: Tensor, contrast: Tensor, saturation: Tensor,
                 hue: Tensor, order: Tensor) -> Tensor:
    """torchvision ``ColorJitter`` with per-sample factors and per-sample op order.

    Args:
        x: (B, 3, H, W) float in [0, 1].
        brightness, contrast, saturation: (B,) blend factors (1 = identity).
        hue: (B,) hue shift in turns (0 = identity).
        order: (B, 4) int64, a permutation of (BRIGHTNESS, CONTRAST, SATURATION, HUE) per sample.
    """
    _check_batch(x, brightness, contrast, saturation, hue, order)
    factors = torch.stack([brightness, contrast, saturation], dim=1).to(x.dtype)  # (B, 3)
    for slot in range(4):
        op = order[:, slot]
        is_blend = op != HUE
        factor = torch.where(is_blend, factors.gather(1, op.clamp(max=2)[:, None]).squeeze(1),
                             torch.ones_like(brightness, dtype=x.dtype))
        gray = to_gray(x)
        w_c = (op == CONTRAST).to(x.dtype)[:, None, None, None]
        w_s = (op == SATURATION).to(x.dtype)[:, None, None, None]
        ref = w_c * gray.mean(dim=(1, 2, 3), keepdim=True) + w_s * gray
        x = blend(x, ref, factor)
        rows = torch.nonzero((op == HUE) & (hue != 0)).squeeze(1)
        if rows.numel():
            shifted = adjust_hue(x.index_select(0, rows), hue.index_select(0, rows))
            x = x.index_copy(0, rows, shifted)
    return x


def grayscale(x: Tensor, mask: Tensor) -> Tensor:
    """Replace the samples where ``mask`` (B,) is True by their 3-channel grey version."""
    _check_batch(x, mask)
    return torch.where(mask[:, None, None, None], to_gray(x).expand_as(x), x)


def solarize(x: Tensor, mask: Tensor, threshold: float = 0.5) -> Tensor:
    """Invert pixels ``>= threshold`` in the samples where ``mask`` (B,) is True."""
    _check_batch(x, mask)
    return torch.where(mask[:, None, None, None] & (x >= threshold), 1.0 - x, x)


# ----------------------------------------------------------------------------------------------
# Blur
# ----------------------------------------------------------------------------------------------


def blur_kernel_size(image_size: int) -> int:
    """Odd kernel size of about 10% of the image side (23 at 224, as in BYOL; 3 at 32)."""
    return max(3, int(0.1 * image_size) // 2 * 2 + 1)


def gaussian_kernels(sigma: Tensor, kernel_size: int) -> Tensor:
    """(B,) sigmas -> (B, kernel_size) normalised 1-D Gaussians ``exp(-t^2 / (2 sigma^2))``."""
    t = torch.arange(kernel_size, dtype=sigma.dtype, device=sigma.device) - (kernel_size - 1) / 2
    k = torch.exp(-(t[None, :] ** 2) / (2.0 * sigma[:, None] ** 2))
    return k / k.sum(dim=1, keepdim=True)


def _conv_axis(x: Tensor, k: Tensor, dim: int) -> Tensor:
    """Correlate (B, C, H, W) ``x`` with per-sample kernels ``k`` (B, K) along ``dim`` (2 or 3),
    reflect padding, as K shifted multiply-adds (no grouped convolution: on CPU a convolution
    with one group per image is many times slower than these elementwise passes)."""
    size, half = x.shape[dim], k.shape[1] // 2
    pad = (0, 0, half, half) if dim == 2 else (half, half, 0, 0)
    xp = F.pad(x, pad, mode="reflect")
    out = torch.zeros_like(x)
    for j in range(k.shape[1]):
        out.addcmul_(xp.narrow(dim, j, size), k[:, j, None, None, None])
    return out


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur with a per-sample sigma (B,), reflect padding (torchvision's)."""
    _check_batch(x, sigma)
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    if kernel_size // 2 >= min(x.shape[-2:]):
        raise ValueError(f"kernel_size {kernel_size} too large for {tuple(x.shape[-2:])} images")
    k = gaussian_kernels(sigma.to(x.dtype), kernel_size)
    return _conv_axis(_conv_axis(x, k, 2), k, 3)
