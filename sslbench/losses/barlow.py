"""Barlow Twins (Zbontar et al. 2021) as facebookresearch/barlowtwins computes it; eqs 19/33-34.

Each view is batch-normalised over the batch without affine parameters (biased variance,
eps = 1e-5, as ``nn.BatchNorm1d(M, affine=False)`` in training mode), ``c = bn(z1)ᵀ bn(z2) / N``
(M, M), and

    inv = Σ_j (1 − c_jj)²,     red = Σ_{i≠j} c_ij²,     loss = inv + λ·red,   λ = 0.0051.

``red`` is the cross-view L_nc of the standardised embeddings divided by N²: the dimension-
contrastive regulariser of Prop. 3.2. ``impl="dual"`` evaluates it as ``⟨A Aᵀ, B Bᵀ⟩_F − Σ_j
(AᵀB)_jj²`` with two N×N Grams (:mod:`sslbench.losses.gram`); ``auto`` takes the dual when N < M.

Distributed: both views are gathered and the whole loss is computed on the global batch (the
official code all-reduces c and uses synchronised batch norm, which is the same number).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sslbench.losses.gather import gather_with_grad
from sslbench.losses.gram import Impl, offdiag, offdiag_cov_sq_frobenius, resolve_impl

BN_EPS = 1e-5


def batch_standardize(z: Tensor, eps: float = BN_EPS) -> Tensor:
    """(N, M) -> (N, M): each dimension centred and divided by √(biased variance + eps)."""
    zc = z - z.mean(dim=0)
    return zc / torch.sqrt(zc.pow(2).mean(dim=0) + eps)


def barlow(z1: Tensor, z2: Tensor, lambd: float = 0.0051, impl: Impl = "auto") -> dict[str, Tensor]:
    """Barlow Twins (eqs 19/33), official convention; unweighted ``inv``, ``red``, weighted loss."""
    a, b = batch_standardize(gather_with_grad(z1)), batch_standardize(gather_with_grad(z2))
    n, m = a.shape
    if resolve_impl(impl, m, n) == "direct":
        c = (a.T @ b) / n
        inv = (1.0 - c.diagonal()).pow(2).sum()
        red = offdiag(c).pow(2).sum()
    else:
        inv = (1.0 - (a * b).sum(dim=0) / n).pow(2).sum()
        red = offdiag_cov_sq_frobenius(a, b, "dual") / n**2
    return {"loss": inv + lambd * red, "inv": inv, "red": red}
