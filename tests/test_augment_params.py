"""Random parameters follow the configured probabilities and ranges; module-level behaviour."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms as T

from sslbench.data import RECIPES, BatchAugment, build_augment, eval_transform
from sslbench.data import augment as augment_module
from sslbench.errors import ConfigError

N = 20000
CPU = torch.device("cpu")


def _within(rate: torch.Tensor, p: float, n: int = N, z: float = 4.5) -> bool:
    """Observed rate within z standard errors of p (exact when p is 0 or 1)."""
    se = math.sqrt(p * (1 - p) / n)
    return abs(float(rate) - p) <= z * se + 1e-12


@pytest.fixture(scope="module")
def params():
    aug = BatchAugment(image_size=224, mean=(0.5,) * 3, std=(0.25,) * 3, flip_p=0.5, jitter_p=0.8,
                       gray_p=0.2, blur_p=0.1, solarize_p=0.2, brightness=0.4, contrast=0.4,
                       saturation=0.2, hue=0.1, blur_sigma=(0.1, 2.0))
    return aug.sample_params(N, torch.Generator().manual_seed(0), CPU)


def test_bernoulli_probabilities(params):
    for key, p in [("flip", 0.5), ("jitter", 0.8), ("gray", 0.2), ("blur", 0.1), ("solarize", 0.2)]:
        assert params[key].dtype == torch.bool and params[key].shape == (N,)
        assert _within(params[key].double().mean(), p), key
    # Independent draws: P(flip and gray) = 0.1.
    assert _within((params["flip"] & params["gray"]).double().mean(), 0.1)


@pytest.mark.parametrize("key,lo,hi", [("brightness", 0.6, 1.4), ("contrast", 0.6, 1.4),
                                       ("saturation", 0.8, 1.2), ("hue", -0.1, 0.1),
                                       ("sigma", 0.1, 2.0)])
def test_uniform_ranges(params, key, lo, hi):
    v = params[key].double()
    assert v.min() >= lo and v.max() <= hi
    # Uniform: each quarter of the range holds a quarter of the draws.
    counts = torch.histc(v, bins=4, min=lo, max=hi) / N
    assert all(_within(c, 0.25) for c in counts), counts


def test_jitter_order_is_a_uniform_permutation(params):
    order = params["order"]
    assert order.shape == (N, 4) and torch.equal(order.sort(1).values, torch.arange(4).expand(N, 4))
    for slot in range(4):
        freq = torch.bincount(order[:, slot], minlength=4).double() / N
        assert all(_within(f, 0.25) for f in freq)


def test_crop_boxes_respect_scale_ratio_and_bounds(params):
    top, left, h, w = (params[k] for k in ("top", "left", "height", "width"))
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 224).all() and (left + w <= 224).all()
    area = (h * w).double() / 224**2
    # Sides are rounded to integers: allow the rounding slack of one pixel per side.
    assert area.min() >= 0.08 * (1 - 2 / (0.08**0.5 * 224 * 0.85)) and area.max() <= 1
    aspect = w.double() / h.double()
    slack = 1 + 1.0 / h.double().clamp(min=1) + 1.0 / w.double().clamp(min=1)
    assert (aspect <= 4 / 3 * slack).all() and (aspect >= 3 / 4 / slack).all()
    # Positions are uniform over the valid range: mean relative offset ~ 1/2.
    rel = top.double() / (224 - h + 1).double()
    assert abs(rel.mean() - 0.5) < 0.02


def test_crop_distribution_matches_torchvision_get_params(params):
    torch.manual_seed(1)
    img = torch.zeros(3, 224, 224)
    ref = torch.tensor([T.RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3])
                        for _ in range(3000)], dtype=torch.float64)
    ref_area = ref[:, 2] * ref[:, 3] / 224**2
    ours = (params["height"] * params["width"]).double() / 224**2
    qs = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)
    assert (torch.quantile(ours, qs) - torch.quantile(ref_area, qs)).abs().max() < 0.04
    assert abs(ours.mean() - ref_area.mean()) < 4 * ref_area.std() / math.sqrt(3000)


def test_crop_fallback_matches_torchvision():
    # No candidate fits (aspect 3..4 needs a box wider than the image): the centre fallback.
    aug = BatchAugment(image_size=16, mean=(0,) * 3, std=(1,) * 3, crop_scale=(0.9, 1.0),
                       crop_ratio=(3.0, 4.0))
    p = aug.sample_params(50, torch.Generator().manual_seed(2), CPU, source_hw=(30, 30))
    expected = T.RandomResizedCrop.get_params(torch.zeros(3, 30, 30), [0.9, 1.0], [3.0, 4.0])
    for i in range(50):
        box = tuple(int(p[k][i]) for k in ("top", "left", "height", "width"))
        assert box == expected


def test_forward_shape_dtype_device_and_seeding():
    aug1, aug2 = build_augment("byol", image_size=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    x = torch.randint(0, 256, (10, 3, 20, 24), dtype=torch.uint8)
    out = aug1(x, torch.Generator().manual_seed(0))
    assert out.shape == (10, 3, 16, 16) and out.dtype == torch.float32 and out.device == x.device
    assert torch.isfinite(out).all()
    assert torch.equal(out, aug1(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, aug1(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(out, aug2(x, torch.Generator().manual_seed(0)))  # different recipe
    assert aug1(x).shape == (10, 3, 16, 16)  # default generator


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_with_a_cpu_generator():
    aug, _ = build_augment("byol", image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    x = torch.randint(0, 256, (64, 3, 40, 40), dtype=torch.uint8)
    cpu = aug(x, torch.Generator().manual_seed(0))
    gpu = aug.to("cuda")(x.cuda(), torch.Generator().manual_seed(0))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-3, rtol=0)
    assert aug(x.cuda(), torch.Generator(device="cuda").manual_seed(0)).device.type == "cuda"


def test_cpu_chunking_does_not_change_results(monkeypatch):
    aug, _ = build_augment("byol", image_size=24, mean=(0.5,) * 3, std=(0.25,) * 3)
    x = torch.randint(0, 256, (40, 3, 24, 24), dtype=torch.uint8)
    whole = aug(x, torch.Generator().manual_seed(3))
    monkeypatch.setattr(augment_module, "CPU_CHUNK_BYTES", 7 * 12 * 24 * 24)  # chunks of 7
    torch.testing.assert_close(aug(x, torch.Generator().manual_seed(3)), whole, atol=1e-5, rtol=0)


def test_eval_transform_is_deterministic_centre_crop():
    ev = eval_transform(image_size=8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = torch.randint(0, 256, (3, 3, 8, 12), dtype=torch.uint8)
    out = ev(x)
    torch.testing.assert_close(out, ev(x), atol=0, rtol=0)
    torch.testing.assert_close(out, x[..., 2:10].float() / 255 * 2 - 1, atol=1e-6, rtol=0)
    square = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    torch.testing.assert_close(ev(square), square.float() / 255 * 2 - 1, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(64, 3, 8, 8), (64, 3, 8, 12)])
def test_flip_without_a_crop_still_flips(shape):
    """crop_scale=None with flip_p > 0: the centre square, mirrored where the draw says so."""
    aug = BatchAugment(image_size=8, mean=(0.5,) * 3, std=(0.5,) * 3, crop_scale=None,
                       flip_p=0.5, jitter_p=0.0, gray_p=0.0)
    x = torch.randint(0, 256, shape, dtype=torch.uint8)
    params = aug.sample_params(len(x), torch.Generator().manual_seed(0), CPU,
                               source_hw=shape[-2:])
    centre = eval_transform(image_size=8, mean=(0.5,) * 3, std=(0.5,) * 3)(x)
    expected = torch.where(params["flip"][:, None, None, None], centre.flip(3), centre)
    torch.testing.assert_close(aug.apply(x, params), expected, atol=1e-6, rtol=0)
    assert 0 < int(params["flip"].sum()) < len(x)


def test_recipes_follow_table_s1_and_the_brief():
    v1, v2 = RECIPES["byol"].views
    for v in (v1, v2):
        assert v.crop_scale == (0.08, 1.0) and v.flip_p == 0.5 and v.jitter_p == 0.8
        assert (v.brightness, v.contrast, v.saturation, v.hue) == (0.4, 0.4, 0.2, 0.1)
        assert v.gray_p == 0.2 and v.blur_sigma == (0.1, 2.0)
    assert (v1.blur_p, v2.blur_p, v1.solarize_p, v2.solarize_p) == (1.0, 0.1, 0.0, 0.2)
    c1, c2 = RECIPES["cifar"].views
    assert c1.blur_p == c2.blur_p == 0 and (c1.solarize_p, c2.solarize_p) == (0.0, 0.1)
    assert all(v.flip_p == 0 for v in RECIPES["digits"].views)
    e1, e2 = RECIPES["eval"].views
    assert e1 == e2 and e1.crop_scale is None and e1.jitter_p == e1.gray_p == e1.flip_p == 0


def test_invalid_settings_are_config_errors():
    with pytest.raises(ConfigError, match="unknown augmentation recipe"):
        build_augment("simclr", image_size=32, mean=(0,) * 3, std=(1,) * 3)
    bad = [{"flip_p": 1.5}, {"crop_scale": (0.5, 0.2)}, {"crop_scale": (0.0, 1.0)}, {"hue": 0.7},
           {"blur_sigma": (0.0, 1.0)}, {"brightness": -0.1}, {"std": (1, 0, 1)}]
    for kw in bad:
        args = {"image_size": 8, "mean": (0,) * 3, "std": (1,) * 3, **kw}
        with pytest.raises(ConfigError):
            BatchAugment(**args)
