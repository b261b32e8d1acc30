"""Batched ops against torchvision.transforms.v2.functional, one sample at a time, fixed parameters.

Tolerances: float inputs agree to 2e-5 (different summation order; the crop path accumulates
over up to 224 taps); uint8 inputs, which torchvision rounds back to uint8, to 1/255.
"""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from sslbench.data import augment_ops as ops
from sslbench.data.augment import BatchAugment

ATOL = 2e-5


def _images(b: int, h: int, w: int, seed: int = 0, quantised: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if quantised:  # many exact ties between channels, grey pixels, 0 and 1
        return torch.randint(0, 4, (b, 3, h, w), generator=g).float() / 3
    return torch.rand(b, 3, h, w, generator=g)


def _boxes(b, h, w, lo, hi, seed=1):
    g = torch.Generator().manual_seed(seed)
    hh = torch.randint(max(1, int(lo * h)), int(hi * h) + 1, (b,), generator=g).clamp(max=h)
    ww = torch.randint(max(1, int(lo * w)), int(hi * w) + 1, (b,), generator=g).clamp(max=w)
    top = (torch.rand(b, generator=g) * (h - hh + 1)).long()
    left = (torch.rand(b, generator=g) * (w - ww + 1)).long()
    return top, left, hh, ww


@pytest.mark.parametrize("h,w,size,lo,hi", [
    (32, 32, 32, 0.1, 1.0),   # up-scaling only: the two-tap path
    (96, 80, 32, 0.3, 1.0),   # down-scaling: the antialiased matrix path
    (40, 40, 24, 0.2, 1.0),   # a mix in one batch
    (17, 23, 50, 0.05, 1.0),  # non-square source, large up-scaling
])
def test_resized_crop_and_flip_match_torchvision(h, w, size, lo, hi):
    x = _images(12, h, w)
    top, left, hh, ww = _boxes(12, h, w, lo, hi)
    flip = torch.arange(12) % 3 == 0
    out = ops.resized_crop(x, top, left, hh, ww, size, flip)
    for i in range(12):
        ref = TF.resized_crop(x[i], int(top[i]), int(left[i]), int(hh[i]), int(ww[i]), [size, size],
                              antialias=True)
        if flip[i]:
            ref = TF.horizontal_flip(ref)
        torch.testing.assert_close(out[i], ref, atol=ATOL, rtol=0)


def test_resized_crop_uint8_source_within_one_level():
    g = torch.Generator().manual_seed(4)
    x8 = torch.randint(0, 256, (6, 3, 48, 48), dtype=torch.uint8, generator=g)
    top, left, hh, ww = _boxes(6, 48, 48, 0.2, 1.0)
    out = ops.resized_crop(x8.float() / 255, top, left, hh, ww, 40)
    for i in range(6):
        ref = TF.resized_crop(x8[i], int(top[i]), int(left[i]), int(hh[i]), int(ww[i]), [40, 40],
                              antialias=True)
        assert (out[i] * 255 - ref.float()).abs().max() <= 1.0 + 1e-3  # fixed-point uint8 kernel


def test_two_tap_path_equals_dense_matrices():
    x = _images(5, 30, 30)
    top, left, hh, ww = _boxes(5, 30, 30, 0.1, 1.0)
    taps = ops._resized_crop_taps(x, top, left, hh, ww, 36, None)
    ry, rx = ops.resample_matrix(top, hh, 30, 36), ops.resample_matrix(left, ww, 30, 36)
    dense = ry[:, None] @ x @ rx[:, None].transpose(-1, -2)
    torch.testing.assert_close(taps, dense, atol=ATOL, rtol=0)


def test_resample_matrix_rows_are_convex_weights_inside_the_crop():
    start, length = torch.tensor([0, 5, 10]), torch.tensor([40, 7, 30])
    m = ops.resample_matrix(start, length, 40, 16)
    assert (m >= 0).all()
    torch.testing.assert_close(m.sum(2), torch.ones(3, 16))
    cols = torch.arange(40)
    outside = (cols[None] < start[:, None]) | (cols[None] >= (start + length)[:, None])
    assert (m.permute(0, 2, 1)[outside] == 0).all()


@pytest.mark.parametrize("quantised", [False, True])
def test_colour_ops_match_torchvision(quantised):
    x = _images(10, 9, 11, seed=2, quantised=quantised)
    g = torch.Generator().manual_seed(3)
    factor = torch.rand(10, generator=g) * 1.6
    shift = torch.rand(10, generator=g) - 0.5
    cases = [
        (ops.adjust_brightness(x, factor), TF.adjust_brightness, factor),
        (ops.adjust_contrast(x, factor), TF.adjust_contrast, factor),
        (ops.adjust_saturation(x, factor), TF.adjust_saturation, factor),
        (ops.adjust_hue(x, shift), TF.adjust_hue, shift),
    ]
    for out, ref_fn, p in cases:
        ref = torch.stack([ref_fn(x[i], float(p[i])) for i in range(10)])
        torch.testing.assert_close(out, ref, atol=ATOL, rtol=0, msg=ref_fn.__name__)


def test_grayscale_and_solarize_match_torchvision():
    x = _images(8, 7, 7, seed=5)
    mask = torch.tensor([1, 0, 1, 0, 0, 1, 1, 0], dtype=torch.bool)
    gray = ops.grayscale(x, mask)
    sol = ops.solarize(x, mask)
    for i in range(8):
        g_ref = TF.rgb_to_grayscale(x[i], num_output_channels=3) if mask[i] else x[i]
        s_ref = TF.solarize(x[i], 0.5) if mask[i] else x[i]
        torch.testing.assert_close(gray[i], g_ref, atol=ATOL, rtol=0)
        torch.testing.assert_close(sol[i], s_ref, atol=0, rtol=0)


@pytest.mark.parametrize("size,kernel", [(32, 3), (64, 7), (64, 23)])
def test_blur_matches_torchvision(size, kernel):
    x = _images(6, size, size, seed=6)
    sigma = torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0, 0.3])
    out = ops.gaussian_blur(x, sigma, kernel)
    for i in range(6):
        ref = TF.gaussian_blur(x[i], [kernel, kernel], [float(sigma[i])] * 2)
        torch.testing.assert_close(out[i], ref, atol=ATOL, rtol=0)
    assert ops.blur_kernel_size(224) == 23 and ops.blur_kernel_size(32) == 3


def test_color_jitter_follows_each_samples_order():
    x = _images(24, 8, 8, seed=7)
    g = torch.Generator().manual_seed(8)
    b, c, s = (0.6 + 0.8 * torch.rand(24, generator=g) for _ in range(3))
    h = 0.2 * torch.rand(24, generator=g) - 0.1
    order = torch.argsort(torch.rand(24, 4, generator=g), dim=1)
    out = ops.color_jitter(x, b, c, s, h, order)
    fns = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for i in range(24):
        ref = x[i]
        for op in order[i].tolist():
            ref = fns[op](ref, float([b, c, s, h][op][i]))
        torch.testing.assert_close(out[i], ref, atol=ATOL, rtol=0)


def test_whole_pipeline_matches_a_per_sample_torchvision_reference():
    aug = BatchAugment(image_size=24, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), blur_p=0.5,
                       solarize_p=0.5, gray_p=0.5, jitter_p=0.7)
    images = torch.randint(0, 256, (16, 3, 30, 36), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(9))
    p = aug.sample_params(16, torch.Generator().manual_seed(10), torch.device("cpu"), (30, 36))
    out = aug.apply(images, p)
    assert out.shape == (16, 3, 24, 24) and out.dtype == torch.float32
    fns = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    names = ["brightness", "contrast", "saturation", "hue"]
    for i in range(16):
        y = TF.resized_crop(images[i].float() / 255, int(p["top"][i]), int(p["left"][i]),
                            int(p["height"][i]), int(p["width"][i]), [24, 24], antialias=True)
        if p["flip"][i]:
            y = TF.horizontal_flip(y)
        if p["jitter"][i]:
            for op in p["order"][i].tolist():
                y = fns[op](y, float(p[names[op]][i]))
        if p["gray"][i]:
            y = TF.rgb_to_grayscale(y, num_output_channels=3)
        if p["blur"][i]:
            y = TF.gaussian_blur(y, [aug.kernel_size] * 2, [float(p["sigma"][i])] * 2)
        if p["solarize"][i]:
            y = TF.solarize(y, 0.5)
        y = TF.normalize(y, [0.4, 0.5, 0.6], [0.2, 0.25, 0.3])
        torch.testing.assert_close(out[i], y, atol=2e-4, rtol=0)  # errors scaled by 1/std


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(2, 1, 4, 4\)"):
        ops.adjust_hue(torch.rand(2, 1, 4, 4), torch.zeros(2))
    with pytest.raises(ValueError, match="batch of 2"):
        ops.adjust_brightness(torch.rand(2, 3, 4, 4), torch.ones(3))
