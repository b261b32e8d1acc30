"""Total Coding Rate criterion (Li et al. 2022b, NMCE; eqs 22/37).

Embeddings are L2-normalised (TCR normalises embeddings: the paper's "Influence of
normalization"). For one view z (N, M):

    R(z) = ½ log det(I_M + α zᵀz),    α = M / (N ε²)          (the MCR² / NMCE scaling)

and the criterion, as in NMCE's self-supervised training script, is

    inv = −mean_i cos(z1_i, z2_i),    reg = −(R(z1) + R(z2)) / 2,    loss = sim_coeff·inv + reg.

Hyperparameters: ``eps`` is ε² (NMCE's "eps squared", default 0.5) and ``sim_coeff`` the weight of
the cosine invariance (NMCE's ``z_weight``, default 100). ``impl``: ``direct`` factorises the M×M
matrix, ``dual`` the N×N one via Sylvester's identity det(I_M + α zᵀz) = det(I_N + α z zᵀ);
``auto`` takes the dual when N < M. Distributed: ``inv`` local, ``reg`` on the gathered batch.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from sslbench.losses.gather import gather_with_grad
from sslbench.losses.gram import Impl, logdet_eye_plus_cov


def coding_rate(z: Tensor, eps: float, impl: Impl = "auto") -> Tensor:
    """R(z) = ½ log det(I_M + M/(N·eps) zᵀz) for (N, M) ``z`` (eq 22 with α = M/(N·eps))."""
    n, m = z.shape
    return 0.5 * logdet_eye_plus_cov(z, m / (n * eps), impl)


def tcr(z1: Tensor, z2: Tensor, sim_coeff: float = 100.0, eps: float = 0.5,
        impl: Impl = "auto") -> dict[str, Tensor]:
    """TCR (eq 22) with a cosine invariance; unweighted ``inv``, ``reg``, weighted ``loss``."""
    inv = -F.cosine_similarity(z1, z2, dim=1).mean()
    q1 = F.normalize(gather_with_grad(z1), dim=1)
    q2 = F.normalize(gather_with_grad(z2), dim=1)
    reg = -(coding_rate(q1, eps, impl) + coding_rate(q2, eps, impl)) / 2
    return {"loss": sim_coeff * inv + reg, "inv": inv, "reg": reg}
