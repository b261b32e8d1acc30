"""VICReg's three terms on the dual (N×N Gram) side, with a hand-written backward.

For centred embeddings ``zc = z − 1μᵀ`` (N, M) with per-dimension unbiased variances
``v_j = ‖zc_{·,j}‖²/(N−1)`` and Gram ``G = zc zcᵀ`` (N, N), VICReg's covariance term is

    c(z) = Σ_{i≠j} C_ij² / M,  C = zcᵀzc/(N−1)
         = (‖G‖_F²/(N−1)² − Σ_j v_j²) / M            (‖zcᵀzc‖_F = ‖zc zcᵀ‖_F, Thm 3.3)

and its gradient is ``∂c/∂z = (4/M) [G zc/(N−1)² − zc diag(v)/(N−1)]`` (no centering correction is
needed: G 1 = 0, so both parts already have zero column sums). The variance hinge
``0.5·mean_j relu(1 − s_j)``, ``s_j = √(v_j + 1e-4)``, has gradient
``−(0.5/M)·1[s_j < 1]·zc_{·,j} / (s_j (N−1))`` and the invariance ``‖z1 − z2‖²/(NM)`` has
``±2(z1 − z2)/(NM)``.

Why a custom ``autograd.Function``: composed from autograd ops, the dual would still materialise
several (N, M) temporaries (centred copies, squared differences, their gradients). Here the
forward streams column chunks of both views through one reused ~1 MiB scratch buffer and the
backward writes every part of the gradient in place into its output, so the only full-size
allocations are the two input gradients; the working set is two N×N Grams plus O(M) vectors.
At N = 256, M = 8192 that is about 1 MiB against about 1.3 GiB for the direct M×M formulation.

The function is differentiable once (``once_differentiable``); double backward raises.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

STD_EPS = 1e-4
_CHUNK_ELEMS = 1 << 18  # elements per (N, chunk) temporary: 1 MiB in float32


def _chunks(n: int, m: int) -> list[slice]:
    width = max(1, min(m, _CHUNK_ELEMS // max(n, 1)))
    return [slice(s, min(s + width, m)) for s in range(0, m, width)]


def _buffer(z: Tensor, cols: slice, flat: Tensor) -> Tensor:
    """A contiguous (N, len(cols)) view into the reusable scratch buffer ``flat``."""
    return flat[: z.shape[0] * (cols.stop - cols.start)].view(z.shape[0], -1)


def dual_stats(z1: Tensor, z2: Tensor) -> tuple[Tensor, tuple[Tensor, ...], tuple[Tensor, ...]]:
    """‖z1 − z2‖_F² and, per view, mean μ (M,), unbiased variance v (M,), centred Gram G (N, N).

    Column chunks of both views go through one reused ~1 MiB scratch buffer, so no (N, M)
    temporary is allocated (fresh allocations also cost page faults on CPU).
    """
    n, m = z1.shape
    chunks = _chunks(n, m)
    flat = z1.new_empty(n * (chunks[0].stop - chunks[0].start))
    sq_dist = z1.new_zeros(())
    stats = []
    for z in (z1, z2):
        mu, var, gram = z.mean(dim=0), z.new_empty(m), z.new_zeros(n, n)
        for cols in chunks:
            zc = torch.sub(z[:, cols], mu[cols], out=_buffer(z, cols, flat))
            torch.linalg.vector_norm(zc, dim=0, out=var[cols])
            gram.addmm_(zc, zc.T)
        stats.append((mu, var.square_().div_(n - 1), gram))
    for cols in chunks:
        diff = torch.sub(z1[:, cols], z2[:, cols], out=_buffer(z1, cols, flat))
        sq_dist = sq_dist + torch.linalg.vector_norm(diff).square()
    return sq_dist, stats[0], stats[1]


def var_term(var: Tensor) -> Tensor:
    """Official per-view variance hinge ``0.5 · mean_j relu(1 − √(v_j + 1e-4))``."""
    return 0.5 * torch.relu(1.0 - torch.sqrt(var + STD_EPS)).mean()


def cov_term(gram: Tensor, var: Tensor) -> Tensor:
    """Official per-view covariance term from the dual side: (‖G‖²/(N−1)² − Σ v²)/M."""
    n, m = gram.shape[0], var.shape[0]
    return (gram.pow(2).sum() / (n - 1) ** 2 - var.pow(2).sum()) / m


def _view_grad(z: Tensor, mu: Tensor, var: Tensor, gram: Tensor, g_var: Tensor, g_cov: Tensor,
               other: Tensor, g_inv: Tensor) -> Tensor:
    """Gradient for one view, ``c_G·G zc + zc·diag(b) + a·(z − other)``, in one (N, M) buffer.

    ``G zc = G z − (G 1) μᵀ``: the product is taken with z itself and the rank-one term (zero in
    exact arithmetic, kept so rounding matches the centred formula) is subtracted in place.
    Every step writes into the output, so the gradient is the only (N, M) allocation.
    """
    n, m = z.shape
    std = torch.sqrt(var + STD_EPS)
    hinge = (std < 1.0).to(z.dtype)
    b = -g_var * (0.5 / m) * hinge / (std * (n - 1)) - g_cov * 4.0 * var / (m * (n - 1))
    gram_scaled = gram * (g_cov * 4.0 / (m * (n - 1) ** 2))
    a = g_inv * (2.0 / (n * m))  # d‖z − other‖²/dz = 2(z − other), for either view
    out = torch.mm(gram_scaled, z)
    out.addr_(gram_scaled.sum(dim=1), mu, alpha=-1.0)
    out.addcmul_(z, b)
    out.sub_(mu * b)
    out.addcmul_(z, a)
    out.addcmul_(other, -a)
    return out


class VICRegDual(torch.autograd.Function):
    """``(z1, z2) -> stack([inv, var, cov])``: VICReg's unweighted official terms, dual side."""

    @staticmethod
    def forward(ctx: Any, z1: Tensor, z2: Tensor) -> Tensor:
        n, m = z1.shape
        sq_dist, (mu1, var1, gram1), (mu2, var2, gram2) = dual_stats(z1, z2)
        inv = sq_dist / (n * m)
        var = var_term(var1) + var_term(var2)
        cov = cov_term(gram1, var1) + cov_term(gram2, var2)
        ctx.save_for_backward(z1, z2, mu1, var1, gram1, mu2, var2, gram2)
        return torch.stack([inv, var, cov])

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        z1, z2, mu1, var1, gram1, mu2, var2, gram2 = ctx.saved_tensors
        g_inv, g_var, g_cov = grad[0], grad[1], grad[2]
        d1 = d2 = None
        if ctx.needs_input_grad[0]:
            d1 = _view_grad(z1, mu1, var1, gram1, g_var, g_cov, z2, g_inv)
        if ctx.needs_input_grad[1]:
            d2 = _view_grad(z2, mu2, var2, gram2, g_var, g_cov, z1, g_inv)
        return d1, d2


def vicreg_dual_terms(z1: Tensor, z2: Tensor) -> Tensor:
    """(N, M) × 2 -> (3,) tensor ``[inv, var, cov]`` computed with :class:`VICRegDual`."""
    if z1.shape[0] < 2:
        raise ValueError(f"VICReg needs N >= 2, got z1 {tuple(z1.shape)}")
    terms: Tensor = VICRegDual.apply(z1, z2)
    return terms
