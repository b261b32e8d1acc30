"""sslbench.bench.augment: row format, and the PIL reference implementing the same recipe."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from sslbench.bench.augment import BENCH_MEAN, BENCH_STD, pil_view, run
from sslbench.data import RECIPES


def test_run_returns_two_rows_per_size():
    rows = run(sizes=(16, 24), batch_size=8, repeats=1, recipe="cifar")
    assert [(r["size"], r["pipeline"]) for r in rows] == [
        (16, "batched"), (16, "pil"), (24, "batched"), (24, "pil")]
    for fast, slow in zip(rows[::2], rows[1::2]):
        assert fast["images_per_s"] > 0 and slow["images_per_s"] > 0 and slow["speedup"] == 1.0
        assert fast["speedup"] == pytest.approx(fast["images_per_s"] / slow["images_per_s"])
        assert fast["recipe"] == "cifar" and fast["batch_size"] == 8 and fast["device"] == "cpu"
    with pytest.raises(ValueError):
        run(sizes=(16,), batch_size=2, recipe="nope")
    threads = torch.get_num_threads()
    assert run(sizes=(8,), batch_size=2, repeats=1, threads=1)[0]["threads"] == 1
    assert torch.get_num_threads() == threads  # restored


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_pil_reference_builds_every_recipe(recipe):
    image = Image.fromarray(torch.randint(0, 256, (20, 28, 3), dtype=torch.uint8).numpy())
    for view in RECIPES[recipe].views:
        out = pil_view(view, 16)(image)
        assert out.shape == (3, 16, 16) and out.dtype == torch.float32


def test_pil_reference_uses_the_recipe_probabilities():
    """With everything forced off but grayscale, the PIL view is the grey image (normalised)."""
    from dataclasses import replace

    view = replace(RECIPES["eval"].views[0], gray_p=1.0)
    arr = torch.randint(0, 256, (16, 16, 3), dtype=torch.uint8)
    out = pil_view(view, 16)(Image.fromarray(arr.numpy()))
    pixels = out * torch.tensor(BENCH_STD)[:, None, None] + torch.tensor(BENCH_MEAN)[:, None, None]
    assert torch.allclose(pixels[0], pixels[1], atol=1e-5)
    assert torch.allclose(pixels[1], pixels[2], atol=1e-5)
    assert not torch.allclose(pixels[0], arr[..., 0].float() / 255, atol=1e-2)  # it did change
