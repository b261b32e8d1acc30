"""Squared-Frobenius and log-determinant terms computed on either side of the duality.

Every regulariser of the paper is a function of the ``(M, M)`` "covariance" product ``aᵀb`` or of
the ``(N, N)`` Gram product ``abᵀ`` of two ``(N, M)`` embedding batches. Both products share their
spectrum, which gives two ways to compute the same number:

- ``‖aᵀb‖_F² = tr(bᵀa aᵀb) = ⟨a aᵀ, b bᵀ⟩_F`` (an M×M quantity from two N×N Grams),
- ``‖abᵀ‖_F² = ⟨aᵀa, bᵀb⟩_F`` (an N×N quantity from two M×M covariances),
- Sylvester: ``det(I_M + α zᵀz) = det(I_N + α z zᵀ)``.

This is Theorem 3.3's mechanism (``‖KᵀK‖_F = ‖KKᵀ‖_F``, §3; Theorem C.4) used as a fast path.

``impl`` selects the side:

- ``"direct"`` builds the product the formula names (what the official code does);
- ``"dual"`` builds the product on the other side;
- ``"auto"`` builds the smaller of the two (ties go to ``direct``).

Numerics: the dual of an *off-diagonal* norm is ``total − Σ diagonal²``. Its absolute float error is
of order ``eps × total`` instead of ``eps × off-diagonal``, which matters only when the diagonal
dominates by many orders of magnitude; the float64 tests pin value and gradient equality.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from sslbench.losses.names import IMPLS  # one list, also for the command line

Impl = Literal["auto", "direct", "dual"]


def resolve_impl(impl: str, direct_size: int, dual_size: int) -> Literal["direct", "dual"]:
    """Pick the side: ``auto`` takes ``dual`` only when its square matrix is strictly smaller.

    Args:
        impl: ``"auto" | "direct" | "dual"``.
        direct_size: side length of the matrix the direct formula builds.
        dual_size: side length of the matrix the dual formula builds.
    """
    if impl == "auto":
        return "dual" if dual_size < direct_size else "direct"
    if impl in ("direct", "dual"):
        return impl  # type: ignore[return-value]
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


def offdiag(a: Tensor) -> Tensor:
    """View of the n(n−1) off-diagonal entries of a square (n, n) matrix, shape (n−1, n+1)[:, 1:].

    Reading the flattened matrix from entry 1 in rows of n+1 puts every diagonal entry at the
    end of a row, so dropping the last column leaves exactly the off-diagonal entries (no copy).
    """
    n = a.shape[0]
    if a.dim() != 2 or a.shape[1] != n:
        raise ValueError(f"offdiag expects a square matrix, got shape {tuple(a.shape)}")
    return a.flatten()[1:].view(n - 1, n + 1)[:, :-1]


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"expected two (N, M) matrices of one shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")


def cov_sq_frobenius(a: Tensor, b: Tensor | None = None, impl: Impl = "auto") -> Tensor:
    """``‖aᵀb‖_F²`` for (N, M) inputs; direct builds aᵀb (M×M), dual builds a aᵀ and b bᵀ (N×N)."""
    b = a if b is None else b
    _check_pair(a, b)
    n, m = a.shape
    if resolve_impl(impl, m, n) == "direct":
        return (a.T @ b).pow(2).sum()
    ga = a @ a.T
    return ga.pow(2).sum() if b is a else (ga * (b @ b.T)).sum()


def offdiag_cov_sq_frobenius(a: Tensor, b: Tensor | None = None, impl: Impl = "auto") -> Tensor:
    """``‖aᵀb − diag(aᵀb)‖_F²``: squared off-diagonal of the (M, M) product of (N, M) inputs.

    With ``b = a`` and ``a = z`` this is the paper's L_nc (Definition 3.2, K = zᵀ); with centred,
    scaled inputs it is VICReg's covariance term, with standardised inputs Barlow Twins' redundancy
    term. The diagonal is ``diag(aᵀb)_j = Σ_n a_nj b_nj``.
    """
    b = a if b is None else b
    _check_pair(a, b)
    n, m = a.shape
    if resolve_impl(impl, m, n) == "direct":
        return offdiag(a.T @ b).pow(2).sum()
    diag = (a * a).sum(0) if b is a else (a * b).sum(0)
    return cov_sq_frobenius(a, b, "dual") - diag.pow(2).sum()


def offdiag_gram_sq_frobenius(a: Tensor, b: Tensor | None = None, impl: Impl = "auto") -> Tensor:
    """``‖abᵀ − diag(abᵀ)‖_F²``: squared off-diagonal of the (N, N) Gram product of (N, M) inputs.

    With ``b = a = z`` this is the paper's L_c (Definition 3.2); with two views it is the spectral
    contrastive regulariser. Direct builds abᵀ (N×N), dual builds aᵀa and bᵀb (M×M).
    """
    b = a if b is None else b
    _check_pair(a, b)
    return offdiag_cov_sq_frobenius(a.T, a.T if b is a else b.T, impl)


def logdet_eye_plus_cov(z: Tensor, alpha: float, impl: Impl = "auto") -> Tensor:
    """``log det(I_M + α zᵀz)`` for (N, M) ``z``; dual via Sylvester: ``log det(I_N + α z zᵀ)``.

    Both matrices are symmetric positive definite for α > 0, so a Cholesky factor gives the
    log-determinant as ``2 Σ log diag(L)``.
    """
    if z.dim() != 2:
        raise ValueError(f"expected an (N, M) matrix, got shape {tuple(z.shape)}")
    n, m = z.shape
    if resolve_impl(impl, m, n) == "direct":
        gram, size = z.T @ z, m
    else:
        gram, size = z @ z.T, n
    eye = torch.eye(size, dtype=z.dtype, device=z.device)
    chol = torch.linalg.cholesky(eye + alpha * gram)
    logdet: Tensor = 2.0 * chol.diagonal().log().sum()
    return logdet
