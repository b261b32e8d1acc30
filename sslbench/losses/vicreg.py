"""VICReg (official convention), VICReg-exp and VICReg-ctr (the paper's Appendix L pseudocode).

All three return the *unweighted* terms ``inv``, ``var``, ``cov`` and
``loss = sim_coeff·inv + std_coeff·var + cov_coeff·cov`` (λ, µ, ν of eqs 10-13 / Table S6).
Inputs are (N, M): N embeddings of dimension M (the paper's K is zᵀ).

Distributed (official VICReg): ``inv`` uses the local batch, ``var`` and ``cov`` use the batch
gathered from all processes with :func:`~sslbench.losses.gather.gather_with_grad`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sslbench.losses.gather import gather_with_grad
from sslbench.losses.gram import Impl, offdiag, resolve_impl
from sslbench.losses.vicreg_dual import STD_EPS, vicreg_dual_terms


def _var_cov_direct(z: Tensor) -> tuple[Tensor, Tensor]:
    """Official per-view variance and covariance terms, covariance built as an (M, M) matrix."""
    n, m = z.shape
    zc = z - z.mean(dim=0)
    std = torch.sqrt(zc.var(dim=0) + STD_EPS)
    var = 0.5 * F.relu(1.0 - std).mean()
    cov = (zc.T @ zc) / (n - 1)
    return var, offdiag(cov).pow(2).sum() / m


def vicreg_terms(z1: Tensor, z2: Tensor, impl: Impl = "auto") -> dict[str, Tensor]:
    """Unweighted official VICReg terms of two (N, M) views (eqs 20-21, as facebookresearch/vicreg).

    - ``inv`` = mean over N×M of (z1 − z2)² (``F.mse_loss``);
    - ``var`` = Σ_views 0.5 · mean_j relu(1 − √(Var_j + 1e-4)), unbiased variance over the batch;
    - ``cov`` = Σ_views Σ_{i≠j} C_ij² / M, C the centred covariance divided by N − 1.

    ``cov`` is the paper's L_nc of the centred, 1/(N−1)-scaled embeddings divided by M.
    ``impl``: ``direct`` builds each M×M covariance (official code); ``dual`` computes all three
    terms from the N×N Grams with a fused, chunked backward (:mod:`vicreg_dual`); ``auto`` takes
    the dual when N < M (N of the gathered batch).
    """
    g1, g2 = gather_with_grad(z1), gather_with_grad(z2)
    n_all, m = g1.shape
    if resolve_impl(impl, m, n_all) == "dual":
        terms = vicreg_dual_terms(g1, g2)
        inv = terms[0] if g1 is z1 else F.mse_loss(z1, z2)
        return {"inv": inv, "var": terms[1], "cov": terms[2]}
    var1, cov1 = _var_cov_direct(g1)
    var2, cov2 = _var_cov_direct(g2)
    return {"inv": F.mse_loss(z1, z2), "var": var1 + var2, "cov": cov1 + cov2}


def _weighted(terms: dict[str, Tensor], sim: float, std: float, cov: float) -> dict[str, Tensor]:
    loss = sim * terms["inv"] + std * terms["var"] + cov * terms["cov"]
    return {"loss": loss, **terms}


def vicreg(z1: Tensor, z2: Tensor, sim_coeff: float = 25.0, std_coeff: float = 25.0,
           cov_coeff: float = 1.0, impl: Impl = "auto") -> dict[str, Tensor]:
    """VICReg, official convention and weights 25/25/1 (eq 20; terms in :func:`vicreg_terms`)."""
    return _weighted(vicreg_terms(z1, z2, impl), sim_coeff, std_coeff, cov_coeff)


def lse_offdiag_rows(c: Tensor, temperature: float) -> Tensor:
    """``mean_i log Σ_{j≠i} exp(c_ij/τ)`` of a square matrix (eq 11 with its 1/d as a mean)."""
    eye = torch.eye(c.shape[0], dtype=torch.bool, device=c.device)
    return torch.logsumexp((c / temperature).masked_fill(eye, float("-inf")), dim=1).mean()


def vicreg_exp_terms(z1: Tensor, z2: Tensor, temperature: float,
                     transpose: bool) -> dict[str, Tensor]:
    """Appendix L, Algorithms 1 (``transpose=False``) and 2 (``transpose=True``), literally.

    Per view k (N, D), after ``k = k.T`` when transposing:
    ``std = √(k.var(dim=0) + 1e-4)``, ``var += mean(relu(1 − std))/2``,
    ``k = k − k.mean(dim=0)``, ``C = kᵀk/(N − 1)`` (N the batch size in both algorithms),
    ``cov += mean_rows logsumexp(offdiag(C)/τ)/2``. ``inv`` = mse(z1, z2) before any transpose.
    """
    g1, g2 = gather_with_grad(z1), gather_with_grad(z2)
    n_batch = g1.shape[0]
    var = cov = z1.new_zeros(())
    for k in (g1, g2):
        k = k.T if transpose else k
        std = torch.sqrt(k.var(dim=0) + STD_EPS)
        var = var + F.relu(1.0 - std).mean() / 2
        kc = k - k.mean(dim=0)
        cov = cov + lse_offdiag_rows(kc.T @ kc / (n_batch - 1), temperature) / 2
    return {"inv": F.mse_loss(z1, z2), "var": var, "cov": cov}


def vicreg_exp(z1: Tensor, z2: Tensor, sim_coeff: float = 1.0, std_coeff: float = 1.0,
               cov_coeff: float = 2.0, temperature: float = 0.1) -> dict[str, Tensor]:
    """VICReg-exp (eqs 11-12), Appendix L Algorithm 1: LogSumExp over covariance rows.

    Follows the pseudocode: the LSE acts on the *signed* off-diagonal covariance entries divided
    by τ, averaged over the D rows (eq 11's 1/d), then halved per view. Table S6 weights 1/1/2,
    τ = 0.1. Matches Table 1 (dimension centering, dimension norm ≈ √N via the hinge).
    """
    terms = vicreg_exp_terms(z1, z2, temperature, transpose=False)
    return _weighted(terms, sim_coeff, std_coeff, cov_coeff)


def vicreg_ctr(z1: Tensor, z2: Tensor, sim_coeff: float = 1.0, std_coeff: float = 1.0,
               cov_coeff: float = 1.0, temperature: float = 0.15) -> dict[str, Tensor]:
    """VICReg-ctr (eq 13), Appendix L Algorithm 2: VICReg-exp on the transposed embeddings.

    Literal transpose semantics (Algorithm 2): after ``k = k.T`` (D, N) the hinge acts on each
    *embedding's* std across its D coordinates, centering removes each embedding's mean over its
    coordinates, and the LSE runs over the rows of the N×N Gram ``kᵀk/(N − 1)``, a DCL-like
    repulsion. Differs from Table 1, which ticks *dimension* centering and an embedding norm of
    exactly 1: here embeddings are centred across coordinates and their std is only hinged at
    ≥ 1 (norm ≳ √(D − 1)). Table S6 weights 1/1/1, τ = 0.15.
    """
    terms = vicreg_exp_terms(z1, z2, temperature, transpose=True)
    return _weighted(terms, sim_coeff, std_coeff, cov_coeff)
