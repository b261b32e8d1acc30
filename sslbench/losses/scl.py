"""Spectral Contrastive Loss (HaoChen et al. 2021), official convention; eqs 18/32.

Embeddings are projected onto the ball of radius √µ (norms below √µ are kept; the main text's
radius, the official code's ``mu``), then with N the batch size:

    inv = −(2/N) Σ_i z1_iᵀ z2_i,
    reg = Σ_{i≠j} (z1_iᵀ z2_j)² / (N (N − 1)),       loss = (inv + reg) / µ.

``reg`` is the *cross-view* off-diagonal Gram norm ‖Z1 Z2ᵀ − diag(Z1 Z2ᵀ)‖_F² / (N(N−1)), as in the
official code. The paper's eq. 18 takes both factors from one branch, which makes it exactly
L_c (its eq 32, Appendix C); the two coincide when z1 = z2 and have the same expectation when
both branches share weights and augmentations (the argument of eq 34, Appendix C). Default µ = 1
(official default; the paper gives none).

``impl``: ``direct`` builds the N×N cross Gram, ``dual`` the two M×M covariances
(⟨Z1ᵀZ1, Z2ᵀZ2⟩_F − Σ_i (z1_iᵀz2_i)²); ``auto`` takes the dual when M < N.
Distributed: ``inv`` on the local batch, ``reg`` on the gathered batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sslbench.losses.gather import gather_with_grad, local_rows
from sslbench.losses.gram import Impl, offdiag_gram_sq_frobenius


def project_to_ball(z: Tensor, mu: float) -> Tensor:
    """(N, M) -> (N, M): rows with norm ≥ √µ rescaled to norm √µ, the others unchanged."""
    radius = math.sqrt(mu)
    norms = torch.linalg.vector_norm(z, dim=1, keepdim=True)
    scale: Tensor = radius / norms.clamp_min(radius)
    return z * scale


def scl(z1: Tensor, z2: Tensor, mu: float = 1.0, impl: Impl = "auto") -> dict[str, Tensor]:
    """Spectral contrastive loss (eq 18); unweighted ``inv``, ``reg``; ``loss = (inv + reg)/µ``."""
    n = z1.shape[0]
    q1, q2 = project_to_ball(gather_with_grad(z1), mu), project_to_ball(gather_with_grad(z2), mu)
    rows = local_rows(n)
    inv = -2.0 * (q1[rows] * q2[rows]).sum(dim=1).mean()
    n_all = q1.shape[0]
    reg = offdiag_gram_sq_frobenius(q1, q2, impl) / (n_all * (n_all - 1))
    return {"loss": (inv + reg) / mu, "inv": inv, "reg": reg}
