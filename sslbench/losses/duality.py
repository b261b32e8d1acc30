"""The paper's generic criteria, Theorem 3.3 and Lemma 3.4 (§3, eqs 3-10, Table S4).

Orientation. Everything here takes an embedding batch ``z`` of shape (N, M): **row i of z is
embedding i** and column j is dimension j across the batch. The paper's embedding matrix is
``K = zᵀ ∈ R^{M×N}`` (columns = embeddings, rows = dimensions). Hence

- ``K_{·,i}`` (embedding i, a column of K)  = ``z[i, :]`` (a row of z),
- ``K_{j,·}`` (dimension j, a row of K)      = ``z[:, j]`` (a column of z),
- ``KᵀK`` (N×N Gram) = ``z zᵀ``;  ``KKᵀ`` (M×M) = ``zᵀz``.

Definitions (no centering, no scaling):

- ``l_c(z)  = ‖KᵀK − diag(KᵀK)‖_F² = ‖z zᵀ − diag‖_F²``   (sample-contrastive, Def. 3.2),
- ``l_nc(z) = ‖KKᵀ − diag(KKᵀ)‖_F² = ‖zᵀz − diag‖_F²``   (dimension-contrastive, Def. 3.2),
- ``l_reg(z) = Σ_i ‖K_{·,i}‖⁴ − Σ_j ‖K_{j,·}‖⁴``           (eq 9),
- Theorem 3.3: ``l_nc + Σ_j ‖K_{j,·}‖⁴ = l_c + Σ_i ‖K_{·,i}‖⁴``, i.e. ``l_nc = l_c + l_reg``.

``l_c`` and ``l_nc`` accept ``impl`` (see :mod:`sslbench.losses.gram`): each can be computed from
the N×N or the M×M product.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sslbench.losses.gram import Impl, offdiag_cov_sq_frobenius, offdiag_gram_sq_frobenius


def _check(z: Tensor) -> None:
    if z.dim() != 2:
        raise ValueError(f"expected an (N, M) embedding batch, got shape {tuple(z.shape)}")


def l_c(z: Tensor, impl: Impl = "auto") -> Tensor:
    """L_c = ‖KᵀK − diag(KᵀK)‖_F² for (N, M) z (K = zᵀ). Direct: N×N Gram; dual: M×M."""
    _check(z)
    return offdiag_gram_sq_frobenius(z, None, impl)


def l_nc(z: Tensor, impl: Impl = "auto") -> Tensor:
    """L_nc = ‖KKᵀ − diag(KKᵀ)‖_F² for (N, M) z (K = zᵀ). Direct: M×M; dual: N×N Gram."""
    _check(z)
    return offdiag_cov_sq_frobenius(z, None, impl)


def embedding_norms4(z: Tensor) -> Tensor:
    """Σ_i ‖K_{·,i}‖₂⁴: fourth powers of the N embedding norms (rows of z), summed."""
    return z.pow(2).sum(dim=1).pow(2).sum()


def dimension_norms4(z: Tensor) -> Tensor:
    """Σ_j ‖K_{j,·}‖₂⁴: fourth powers of the M dimension norms (columns of z), summed."""
    return z.pow(2).sum(dim=0).pow(2).sum()


def l_reg(z: Tensor) -> Tensor:
    """Eq 9: L_reg = Σ_i ‖K_{·,i}‖⁴ − Σ_j ‖K_{j,·}‖⁴ (embedding norms minus dimension norms)."""
    _check(z)
    return embedding_norms4(z) - dimension_norms4(z)


def theorem33_sides(z: Tensor, impl: Impl = "direct") -> tuple[Tensor, Tensor]:
    """Both sides of eq 3: ``(l_nc + Σ_j ‖K_{j,·}‖⁴, l_c + Σ_i ‖K_{·,i}‖⁴)``; equal for any z.

    With the default ``impl="direct"`` the left side comes from the M×M product and the right
    side from the N×N Gram, so their agreement is a real numerical check of the identity (the
    other impls compute both from one product).
    """
    _check(z)
    return l_nc(z, impl) + dimension_norms4(z), l_c(z, impl) + embedding_norms4(z)


def lemma34_bounds(n: int, m: int, a: float = 1.0) -> dict[str, float]:
    """Lemma 3.4 (eqs 4-5) for N embeddings of dimension M.

    - every embedding of norm a:  N²a⁴/M ≤ Σ_j ‖K_{j,·}‖⁴ ≤ N²a⁴  (``rows_*``: rows of K),
    - every dimension of norm a:  M²a⁴/N ≤ Σ_i ‖K_{·,i}‖⁴ ≤ M²a⁴  (``cols_*``: columns of K).
    """
    a4 = a**4
    return {"rows_lower": n * n * a4 / m, "rows_upper": n * n * a4,
            "cols_lower": m * m * a4 / n, "cols_upper": m * m * a4}


def corollary341_bounds(l_other: float, n: int, m: int, normalized: str) -> tuple[float, float]:
    """Corollary 3.4.1: bounds on one criterion given the other, under single-sided normalisation.

    ``normalized="embeddings"`` (unit embeddings): given L_nc, ``L_nc − N + N²/M ≤ L_c ≤ L_nc − N
    + N²`` (eq 6). ``normalized="dimensions"`` (unit dimensions): given L_c, ``L_c − M + M²/N ≤
    L_nc ≤ L_c − M + M²`` (eq 7).
    """
    if normalized == "embeddings":
        return l_other - n + n * n / m, l_other - n + n * n
    if normalized == "dimensions":
        return l_other - m + m * m / n, l_other - m + m * m
    raise ValueError(f"normalized must be 'embeddings' or 'dimensions', got {normalized!r}")


@torch.no_grad()
def duality_report(z: Tensor) -> dict[str, float]:
    """Table S4 analysis of one (N, M) batch of embeddings (rows = embeddings), in float64.

    L_c and L_nc are each computed from their own product (N×N and M×M), so the two sides of
    Theorem 3.3 are independent evaluations; cost O(N M max(N, M)), memory N² + M² doubles.

    Keys: ``n, m, l_c, l_nc, l_reg, thm33_lhs, thm33_rhs, thm33_rel_err`` on the raw batch, then:

    - ``sum_row4_colsnormalized``: Σ_j ‖K_{j,·}‖⁴ after scaling every *embedding* (column of K,
      row of z) to unit norm, with ``lemma34_rows_lower`` = N²/M, ``lemma34_rows_upper`` = N²
      and ``rows_ratio_to_lower`` (Table S4, columns 3-5);
    - ``sum_col4_rowsnormalized``: Σ_i ‖K_{·,i}‖⁴ after scaling every *dimension* (row of K,
      column of z) to unit norm, with ``lemma34_cols_lower`` = M²/N, ``lemma34_cols_upper`` = M²
      and ``cols_ratio_to_lower`` (Table S4, columns 6-8).
    """
    _check(z)
    zd = z.detach().to(torch.float64)
    n, m = zd.shape
    lnc, lc = l_nc(zd, "direct"), l_c(zd, "direct")
    lhs, rhs = lnc + dimension_norms4(zd), lc + embedding_norms4(zd)
    bounds = lemma34_bounds(n, m)
    rows4 = dimension_norms4(F.normalize(zd, dim=1)).item()
    cols4 = embedding_norms4(F.normalize(zd, dim=0)).item()
    return {
        "n": float(n), "m": float(m),
        "l_c": lc.item(), "l_nc": lnc.item(), "l_reg": l_reg(zd).item(),
        "thm33_lhs": lhs.item(), "thm33_rhs": rhs.item(),
        "thm33_rel_err": abs(lhs.item() - rhs.item()) / max(abs(lhs.item()), 1e-300),
        "sum_row4_colsnormalized": rows4,
        "lemma34_rows_lower": bounds["rows_lower"], "lemma34_rows_upper": bounds["rows_upper"],
        "rows_ratio_to_lower": rows4 / bounds["rows_lower"],
        "sum_col4_rowsnormalized": cols4,
        "lemma34_cols_lower": bounds["cols_lower"], "lemma34_cols_upper": bounds["cols_upper"],
        "cols_ratio_to_lower": cols4 / bounds["cols_lower"],
    }
