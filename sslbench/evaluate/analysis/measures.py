"""Measures of representations and embeddings (the paper's Appendices F-J).

All functions take (N, D) matrices with samples as rows and return plain tensors or floats; they
never touch the store or the file system (figures are drawn in ``sslbench.report.figures``).
"""

from __future__ import annotations

from typing import TypedDict

import torch
import torch.nn.functional as F


class CosineHistogram(TypedDict):
    """Histogram of the negative-pair cosines: ``counts`` per bin, the ``bins + 1`` bin
    ``edges``, and the ``mean`` and ``var`` of the cosines themselves."""

    counts: list[float]
    edges: list[float]
    mean: float
    var: float


def singular_values(x: torch.Tensor, *, center: bool = True) -> torch.Tensor:
    """Singular values (descending) of the (optionally centred) matrix, as in Figure S5."""
    x = x.double()
    if center:
        x = x - x.mean(0, keepdim=True)
    values: torch.Tensor = torch.linalg.svdvals(x)
    return values


def effective_rank(s: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al. 2023): exp of the entropy of the normalised singular values.

    It equals k for k equal non-zero singular values and 1 for a rank-1 matrix.
    """
    p = s.double().abs() / (s.double().abs().sum() + eps) + eps
    return float(torch.exp(-(p * p.log()).sum()))


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019) between two (N, D1) and (N, D2) representations.

    CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with column-centred Xc, Yc; computed
    on the smaller side of each product (the duality trick: ||A^T A||_F = ||A A^T||_F).
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same samples in both: got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    x = x.double() - x.double().mean(0, keepdim=True)
    y = y.double() - y.double().mean(0, keepdim=True)
    cross = (y.T @ x).pow(2).sum()
    xx = _gram_norm(x)
    yy = _gram_norm(y)
    return float(cross / (xx * yy))


def _gram_norm(a: torch.Tensor) -> torch.Tensor:
    n, d = a.shape
    g = a @ a.T if n <= d else a.T @ a
    return g.pow(2).sum().sqrt()


def cka_matrix(features: list[torch.Tensor]) -> torch.Tensor:
    k = len(features)
    out = torch.eye(k, dtype=torch.float64)
    for i in range(k):
        for j in range(i + 1, k):
            out[i, j] = out[j, i] = linear_cka(features[i], features[j])
    return out


def negative_cosines(z: torch.Tensor) -> torch.Tensor:
    """Cosine similarities of all distinct pairs of rows (the negatives of Figure S4)."""
    zn = F.normalize(z.double(), dim=1)
    sims = zn @ zn.T
    i, j = torch.triu_indices(len(z), len(z), offset=1)
    return sims[i, j]


def cosine_histogram(z: torch.Tensor, bins: int = 81, lo: float = -1.0, hi: float = 1.0
                     ) -> CosineHistogram:
    values = negative_cosines(z)
    counts = torch.histc(values.float(), bins=bins, min=lo, max=hi)
    edges = torch.linspace(lo, hi, bins + 1)
    return {"counts": counts.tolist(), "edges": edges.tolist(),
            "mean": float(values.mean()), "var": float(values.var())}


def covariance(z: torch.Tensor) -> torch.Tensor:
    """Centred covariance of the dimensions, (D, D) (Figure S8, top)."""
    zc = z.double() - z.double().mean(0, keepdim=True)
    return zc.T @ zc / max(len(z) - 1, 1)


def gram(z: torch.Tensor) -> torch.Tensor:
    """Gram matrix of L2-normalised samples, (N, N) (Figure S8, bottom)."""
    zn = F.normalize(z.double(), dim=1)
    return zn @ zn.T
