"""The names of the criteria and of the Frobenius implementations, without importing torch.

The command line lists and checks them in ``--help`` and while parsing, which must stay fast;
:mod:`sslbench.losses.registry` builds its registry in this order and refuses to load when the
two disagree.
"""

from __future__ import annotations

#: Every registered criterion, in registry order (``sslbench methods`` lists them so).
CRITERION_NAMES: tuple[str, ...] = (
    "simclr",
    "simclr-sq",
    "simclr-abs",
    "dcl",
    "dcl-sq",
    "dcl-abs",
    "simclr-center",
    "simclr-dimstd",
    "scl",
    "vicreg",
    "vicreg-exp",
    "vicreg-ctr",
    "barlow",
    "tcr",
)

#: How squared-Frobenius terms are computed: through the smaller of the N x N Gram and the M x M
#: covariance, always the covariance, or always the Gram (Theorem 3.3).
IMPLS: tuple[str, ...] = ("auto", "direct", "dual")
