"""``shapes``: a procedurally generated, seeded 32x32 RGB dataset of 10 shape classes.

Built so that self-supervised pretraining visibly matters:

- The label is the shape's identity only. Every class has the same distribution of area (the
  shape is scaled to a random target area), position, rotation (uniform), colours and textures,
  so neither mean colour, area nor position tells the classes apart, and raw pixels are a poor
  linear feature (about 20% accuracy for a logistic regression, chance is 10%).
- The label survives SSL augmentations: every shape has a mirror axis, so a horizontal flip is a
  rotation already in the data; foreground and background differ in luminance by >= 0.3, so
  the shape stays visible in grayscale and under colour jitter; shapes are large (9-18% of the
  image) and near the centre, so a crop of >= 25% of the image keeps most of it (recipe "small").

Per image: background colour with low-frequency colour noise, foreground colour, shape drawn
with 2x2 supersampling (antialiased edges), a multiplicative illumination gradient, pixel noise,
and with probability 1/2 a thin distractor line in a third colour.

Generation is vectorised in blocks of ``BLOCK`` images, each block seeded from (seed, split,
block index), so image i is the same whatever the total count (prefix-stable); labels are
consecutive random permutations of the 10 classes, so any prefix is balanced to within one.
Geometry is computed in float64 for bit-identical results across machines.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, overload

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

SIZE = 32
SUPERSAMPLE = 2
BLOCK = 250  # images per independently seeded block (a multiple of the class count)
CHUNK = 50  # images per vectorised geometry step inside a block (speed only)
AREA_RANGE = (0.15, 0.30)  # shape area as a fraction of the image
MAX_OFFSET = 3.0  # centre jitter in pixels (each axis)
MIN_LUMA_GAP = 0.3
LINE_P = 0.5  # probability of a distractor line
SPLIT_IDS = {"train": 0, "test": 1}

Mask = Callable[[Tensor, Tensor], Tensor]

# Shape parameters, in units of the shape's scale (its circumradius for most shapes).
CROSS_W = 0.3  # half-width of the cross's arms
RING_RHO = 0.55  # inner radius of the ring
STAR_RHO = 0.45  # inner radius of the star
RHOMBUS_Q = 0.6  # short half-diagonal of the rhombus
BAR_W = 0.3  # half-width of the bar
PAIR_RHO, PAIR_D = 0.45, 0.6  # radius and centre offset of each disk of the pair
HALF_DISK_SHIFT = 4 / (3 * math.pi)  # puts the half-disk's centroid at the origin


def _polygon(n: int) -> Mask:
    """Regular n-gon with circumradius 1 (a vertex on the +u axis)."""
    normals = [((2 * k + 1) * math.pi / n) for k in range(n)]
    inradius = math.cos(math.pi / n)

    def inside(u: Tensor, v: Tensor) -> Tensor:
        dist = torch.stack([u * math.cos(a) + v * math.sin(a) for a in normals]).amax(dim=0)
        return dist <= inradius
    return inside


def _star(u: Tensor, v: Tensor) -> Tensor:
    """Five-pointed star, outer radius 1 (tips at multiples of 72 deg), inner radius STAR_RHO."""
    sector = 2 * math.pi / 5
    phi = torch.remainder(torch.atan2(v, u), sector)
    phi = torch.abs(phi - sector / 2)  # 0 at an inner vertex, sector/2 at a tip
    r = torch.sqrt(u * u + v * v)
    qx, qy = r * torch.cos(phi), r * torch.sin(phi)
    ix, ox, oy = STAR_RHO, math.cos(sector / 2), math.sin(sector / 2)
    # Inside when on the origin's side of the edge from the inner vertex (ix, 0) to the tip.
    return (ox - ix) * qy - oy * (qx - ix) >= 0


def _disk(u: Tensor, v: Tensor) -> Tensor:
    return u * u + v * v <= 1.0


def _cross(u: Tensor, v: Tensor) -> Tensor:
    au, av = u.abs(), v.abs()
    return ((au <= 1) & (av <= CROSS_W)) | ((au <= CROSS_W) & (av <= 1))


def _ring(u: Tensor, v: Tensor) -> Tensor:
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= RING_RHO**2)


def _rhombus(u: Tensor, v: Tensor) -> Tensor:
    return u.abs() + v.abs() / RHOMBUS_Q <= 1.0


def _bar(u: Tensor, v: Tensor) -> Tensor:
    return (u.abs() <= 1) & (v.abs() <= BAR_W)


def _half_disk(u: Tensor, v: Tensor) -> Tensor:
    w = v + HALF_DISK_SHIFT
    return (u * u + w * w <= 1) & (w >= 0)


def _pair(u: Tensor, v: Tensor) -> Tensor:
    return torch.minimum((u - PAIR_D) ** 2, (u + PAIR_D) ** 2) + v * v <= PAIR_RHO**2


SHAPES: dict[str, tuple[Mask, float, float]] = {
    # name: (inside test in unit coordinates, area of the unit shape, max radius)
    "disk": (_disk, math.pi, 1.0),
    "square": (_polygon(4), 2.0, 1.0),
    "triangle": (_polygon(3), 1.5 * math.sin(2 * math.pi / 3), 1.0),
    "cross": (_cross, 8 * CROSS_W - 4 * CROSS_W**2, math.hypot(1, CROSS_W)),
    "ring": (_ring, math.pi * (1 - RING_RHO**2), 1.0),
    "star": (_star, 5 * STAR_RHO * math.sin(math.pi / 5), 1.0),
    "rhombus": (_rhombus, 2 * RHOMBUS_Q, 1.0),
    "bar": (_bar, 4 * BAR_W, math.hypot(1, BAR_W)),
    "half-disk": (_half_disk, math.pi / 2, math.hypot(1, HALF_DISK_SHIFT)),
    "pair": (_pair, 2 * math.pi * PAIR_RHO**2, PAIR_D + PAIR_RHO),
}
CLASS_NAMES = list(SHAPES)


def block_generator(seed: int, split: str, block: int) -> torch.Generator:
    """CPU generator for one block, seeded from a mix of (seed, split, block)."""
    state = np.random.SeedSequence([int(seed), SPLIT_IDS[split], int(block)]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _luma(c: Tensor) -> Tensor:
    return 0.299 * c[..., 0] + 0.587 * c[..., 1] + 0.114 * c[..., 2]


def _colours(n: int, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Background, foreground and distractor colours (n, 3); |luma(fg) - luma(bg)| >= 0.3."""
    cand = torch.rand(n, 16, 2, 3, generator=g, dtype=torch.float64)
    ok = (_luma(cand[:, :, 0]) - _luma(cand[:, :, 1])).abs() >= MIN_LUMA_GAP
    first = torch.argmax(ok.to(torch.int8), dim=1)
    pick = cand[torch.arange(n), first]  # (n, 2, 3)
    bg, fg = pick[:, 0], pick[:, 1]
    # Fallback (probability ~0.5%): black or white, whichever is farther from the background.
    far = torch.where(_luma(bg) > 0.5, 0.0, 1.0)[:, None].expand(n, 3)
    fg = torch.where(ok.any(dim=1)[:, None], fg, far)
    other = torch.rand(n, 3, generator=g, dtype=torch.float64)
    return bg, fg, other


def _coverage(labels: Tensor, p: Tensor) -> Tensor:
    """Antialiased coverage (n, 32, 32) of each sample's shape; p holds per-sample
    (area_fraction, angle, cx, cy) in columns 0..3."""
    n, fine = labels.shape[0], SIZE * SUPERSAMPLE
    t = (torch.arange(fine, dtype=torch.float64) + 0.5) / SUPERSAMPLE  # sub-pixel centres, px
    dx = t[None, None, :] - p[:, 2, None, None]
    dy = t[None, :, None] - p[:, 3, None, None]
    cos, sin = torch.cos(p[:, 1])[:, None, None], torch.sin(p[:, 1])[:, None, None]
    mask = torch.zeros(n, fine, fine, dtype=torch.float64)
    for c, (inside, unit_area, _) in enumerate(SHAPES.values()):
        rows = torch.nonzero(labels == c).squeeze(1)
        if rows.numel() == 0:
            continue
        scale = torch.sqrt(p[rows, 0] * SIZE * SIZE / unit_area)[:, None, None]
        u = (cos[rows] * dx[rows] + sin[rows] * dy[rows]) / scale
        v = (-sin[rows] * dx[rows] + cos[rows] * dy[rows]) / scale
        mask[rows] = inside(u, v).to(torch.float64)
    return F.avg_pool2d(mask[:, None], SUPERSAMPLE)[:, 0]


def _line(p: Tensor) -> Tensor:
    """Coverage (n, 32, 32) of a 1-px line through (x0, y0) at angle a (p columns 0..2)."""
    fine = SIZE * SUPERSAMPLE
    t = (torch.arange(fine, dtype=torch.float64) + 0.5) / SUPERSAMPLE
    dist = ((t[None, None, :] - p[:, 0, None, None]) * torch.sin(p[:, 2])[:, None, None]
            - (t[None, :, None] - p[:, 1, None, None]) * torch.cos(p[:, 2])[:, None, None])
    return F.avg_pool2d((dist.abs() <= 0.5).to(torch.float64)[:, None], SUPERSAMPLE)[:, 0]


def _block(seed: int, split: str, block: int) -> tuple[Tensor, Tensor, Tensor]:
    """One block: uint8 images (BLOCK, 3, 32, 32), int64 labels, float64 shape coverage."""
    g = block_generator(seed, split, block)
    n = BLOCK
    labels = torch.argsort(torch.rand(n // 10, 10, generator=g), dim=1).reshape(-1)
    u = torch.rand(n, 10, generator=g, dtype=torch.float64)
    area = AREA_RANGE[0] + u[:, 0] * (AREA_RANGE[1] - AREA_RANGE[0])
    centre = SIZE / 2 + (2 * u[:, 2:4] - 1) * MAX_OFFSET
    shape_p = torch.stack([area, 2 * math.pi * u[:, 1], centre[:, 0], centre[:, 1]], dim=1)
    # Geometry in small chunks: float64 temporaries stay small (and in the allocator's cache).
    cover = torch.cat([_coverage(labels[i:i + CHUNK], shape_p[i:i + CHUNK])
                       for i in range(0, n, CHUNK)])[:, None]  # (n, 1, 32, 32)
    bg, fg, other = _colours(n, g)
    low = torch.randn(n, 3, 4, 4, generator=g, dtype=torch.float64) * 0.06
    low = F.interpolate(low, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    img = cover * fg[:, :, None, None] + (1 - cover) * (bg[:, :, None, None] + low)
    line_p = torch.stack([u[:, 4] * SIZE, u[:, 5] * SIZE, math.pi * u[:, 6]], dim=1)
    line = torch.cat([_line(line_p[i:i + CHUNK]) for i in range(0, n, CHUNK)])
    line = line[:, None] * (u[:, 7] < LINE_P)[:, None, None, None]
    img = line * other[:, :, None, None] + (1 - line) * img
    # Illumination: a linear ramp of random direction and strength (up to +-30%).
    t = (torch.arange(SIZE, dtype=torch.float64) + 0.5 - SIZE / 2) / (SIZE / 2)
    ang = 2 * math.pi * u[:, 8]
    ramp = (torch.cos(ang)[:, None, None] * t[None, None, :]
            + torch.sin(ang)[:, None, None] * t[None, :, None])
    img = img * (1 + 0.3 * u[:, 9, None, None, None] * ramp[:, None])
    noise_sd = 0.01 + 0.04 * torch.rand(n, 1, 1, 1, generator=g, dtype=torch.float64)
    img = img + noise_sd * torch.randn(n, 3, SIZE, SIZE, generator=g).to(torch.float64)
    images = torch.round(img.clamp(0, 1) * 255).to(torch.uint8)
    return images, labels, cover[:, 0]


@overload
def generate_shapes(num_samples: int, seed: int = ..., split: str = ...,
                    return_coverage: Literal[False] = ...) -> tuple[Tensor, Tensor]: ...
@overload
def generate_shapes(num_samples: int, seed: int = ..., split: str = ..., *,
                    return_coverage: Literal[True]) -> tuple[Tensor, Tensor, Tensor]: ...
@overload
def generate_shapes(num_samples: int, seed: int = ..., split: str = ...,
                    return_coverage: bool = ...) -> (tuple[Tensor, Tensor]
                                                     | tuple[Tensor, Tensor, Tensor]): ...
def generate_shapes(num_samples: int, seed: int = 0, split: str = "train",
                    return_coverage: bool = False) -> (tuple[Tensor, Tensor]
                                                       | tuple[Tensor, Tensor, Tensor]):
    """Generate ``num_samples`` images of ``split`` ("train" or "test": disjoint streams).

    Returns uint8 images (N, 3, 32, 32) and int64 labels (N,); with ``return_coverage`` also the
    float64 (N, 32, 32) antialiased coverage of each image's shape (for tests and analyses).
    """
    if split not in SPLIT_IDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_IDS)}, got {split!r}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small ops: threading only adds barrier stalls on a busy CPU
    try:
        blocks = [_block(seed, split, b) for b in range(math.ceil(num_samples / BLOCK))]
    finally:
        torch.set_num_threads(threads)
    images = torch.cat([b[0] for b in blocks])[:num_samples]
    labels = torch.cat([b[1] for b in blocks])[:num_samples]
    if return_coverage:
        return images, labels, torch.cat([b[2] for b in blocks])[:num_samples]
    return images, labels
