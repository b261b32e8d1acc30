"""SimCLR (NT-Xent / InfoNCE) and DCL criteria, their -sq / -abs variants and SimCLR scenarios A, B.

Convention (NT-Xent as in SimCLR's official code, solo-learn and lightly: real SimCLR rather than
the paper's same-branch negatives of §3): the 2N embeddings of both views are anchors; for each
anchor the other 2N − 2 embeddings of *both* branches are negatives and its other view is the
positive; the self-similarity is excluded. The loss is the mean over the 2N anchors of

    −f(s_pos)/τ + log Σ_{k ∈ D(a)} exp(f(s_ak)/τ)

computed as a masked log-sum-exp (the log-softmax / cross-entropy form, never an explicit exp),
where s are cosine similarities and:

- SimCLR (eqs 16-17): D(a) = all 2N − 1 others (positive included), f = identity;
- DCL (eq 15, Yeh et al. 2021): D(a) = the 2N − 2 negatives (positive removed);
- ``-sq`` / ``-abs`` (eqs 27-31): f(x) = x² or |x|, applied to *every* similarity including
  the positive.

Returned terms (unweighted): ``inv`` = mean of −f(s_pos)/τ, ``reg`` = mean log-sum-exp;
``loss = inv + reg``. Official DCL code sums the two one-way losses, i.e. reports 2× our value.

Defaults: τ = 0.15 for SimCLR, its -sq / -abs variants and scenarios A / B (Table S6
SimCLR-Tuned; the paper gives no separate value for the variants of eqs 27-31); τ = 0.1 for the
DCL family (the official DCL code's default; the paper does not train DCL).

Distributed (``gather.py``): anchors are this process's 2N_local embeddings, candidates are the
gathered 2N embeddings of all processes; batch statistics of scenarios A and B are taken over the
gathered batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from sslbench.losses.gather import gather_with_grad, local_rows

Prep = Literal["cosine", "center", "dimstd"]
SimFn = Callable[[Tensor], Tensor]

_F: dict[str, SimFn] = {"id": lambda s: s, "sq": lambda s: s * s, "abs": torch.abs}


def prepare(z: Tensor, prep: Prep) -> Tensor:
    """Normalise one view's (N, M) embeddings before taking dot products.

    - ``cosine``: L2-normalise each embedding (classical SimCLR, Table 1);
    - ``center``: centre each dimension over the batch, then L2-normalise each embedding
      (scenario A, "SimCLR w/ centering");
    - ``dimstd``: centre each dimension over the batch, then rescale it to L2 norm √(N/M), no
      embedding normalisation (scenario B, eq. 14; ‖K‖_F² = N as for unit embeddings).

    Centering statistics are per view (each branch's own K), like VICReg's.
    """
    if prep == "cosine":
        return F.normalize(z, dim=1)
    zc = z - z.mean(dim=0, keepdim=True)
    if prep == "center":
        return F.normalize(zc, dim=1)
    n, m = z.shape
    return F.normalize(zc, dim=0) * math.sqrt(n / m)


def info_nce_terms(z1: Tensor, z2: Tensor, temperature: float, f: str = "id",
                   decoupled: bool = False, prep: Prep = "cosine") -> dict[str, Tensor]:
    """Terms of the SimCLR / DCL family for two (N, M) views; see the module docstring.

    Args:
        z1, z2: (N, M) local embeddings of the two views.
        temperature: τ > 0.
        f: ``"id" | "sq" | "abs"``, applied to every similarity.
        decoupled: remove the positive from the denominator (DCL).
        prep: normalisation before the dot products, see :func:`prepare`.

    Returns:
        ``{"loss", "inv", "reg"}`` scalars.
    """
    n = z1.shape[0]
    g1, g2 = gather_with_grad(z1), gather_with_grad(z2)
    n_all = g1.shape[0]
    cand = torch.cat([prepare(g1, prep), prepare(g2, prep)])          # (2N_all, M)
    rows = local_rows(n)
    anchors = torch.cat([cand[rows], cand[n_all + rows.start:n_all + rows.stop]])  # (2N, M)
    logits = _F[f](anchors @ cand.T) / temperature                     # (2N, 2N_all)

    idx = torch.arange(rows.start, rows.stop, device=z1.device)
    self_idx = torch.cat([idx, idx + n_all])
    pos_idx = torch.cat([idx + n_all, idx])
    ar = torch.arange(2 * n, device=z1.device)
    pos = logits[ar, pos_idx]
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask[ar, self_idx] = True
    if decoupled:
        mask[ar, pos_idx] = True
    lse = torch.logsumexp(logits.masked_fill(mask, float("-inf")), dim=1)
    inv, reg = -pos.mean(), lse.mean()
    return {"loss": inv + reg, "inv": inv, "reg": reg}


def simclr(z1: Tensor, z2: Tensor, temperature: float = 0.15) -> dict[str, Tensor]:
    """SimCLR / NT-Xent (eqs 16-17), 2N − 2 negatives from both branches, cosine similarities."""
    return info_nce_terms(z1, z2, temperature)


def simclr_sq(z1: Tensor, z2: Tensor, temperature: float = 0.15) -> dict[str, Tensor]:
    """SimCLR-sq (eqs 30-31, f(x) = x²): sample-contrastive per Prop. 3.2."""
    return info_nce_terms(z1, z2, temperature, f="sq")


def simclr_abs(z1: Tensor, z2: Tensor, temperature: float = 0.15) -> dict[str, Tensor]:
    """SimCLR-abs (eqs 30-31, f(x) = |x|): sample-contrastive per Prop. 3.2."""
    return info_nce_terms(z1, z2, temperature, f="abs")


def dcl(z1: Tensor, z2: Tensor, temperature: float = 0.1) -> dict[str, Tensor]:
    """DCL (eq 15): SimCLR without the positive in the denominator (Yeh et al. 2021; τ = 0.1)."""
    return info_nce_terms(z1, z2, temperature, decoupled=True)


def dcl_sq(z1: Tensor, z2: Tensor, temperature: float = 0.1) -> dict[str, Tensor]:
    """DCL-sq (eq 27, f(x) = x²): sample-contrastive per Prop. 3.2."""
    return info_nce_terms(z1, z2, temperature, f="sq", decoupled=True)


def dcl_abs(z1: Tensor, z2: Tensor, temperature: float = 0.1) -> dict[str, Tensor]:
    """DCL-abs (eq 27, f(x) = |x|): sample-contrastive per Prop. 3.2."""
    return info_nce_terms(z1, z2, temperature, f="abs", decoupled=True)


def simclr_center(z1: Tensor, z2: Tensor, temperature: float = 0.15) -> dict[str, Tensor]:
    """SimCLR w/ centering (Table 1 scenario A): centre dimensions, then unit embeddings."""
    return info_nce_terms(z1, z2, temperature, prep="center")


def simclr_dimstd(z1: Tensor, z2: Tensor, temperature: float = 0.15) -> dict[str, Tensor]:
    """SimCLR w/ dim. std. (Table 1 scenario B, eq 14): dimensions centred to norm √(N/M)."""
    return info_nce_terms(z1, z2, temperature, prep="dimstd")
