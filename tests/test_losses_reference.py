"""Every criterion against an independent reference written here from the paper's equation.

References are plain numpy float64 with Python loops over samples / dimensions, following the
conventions named in each criterion's docstring (official VICReg and Barlow Twins code, the
paper's Appendix L pseudocode, official SCL and NMCE code). Gradients are checked against central
finite differences of these references.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from sslbench.losses import CRITERIA, build_criterion

# ----------------------------------------------------------------------------- references


def _normalize_rows(z):
    return np.stack([row / np.linalg.norm(row) for row in z])


def _prepare(z, prep):
    n, m = z.shape
    if prep == "cosine":
        return _normalize_rows(z)
    zc = z - np.array([[sum(z[i, j] for i in range(n)) / n for j in range(m)]])
    if prep == "center":
        return _normalize_rows(zc)
    out = zc.copy()
    for j in range(m):
        out[:, j] = zc[:, j] / math.sqrt(sum(x * x for x in zc[:, j])) * math.sqrt(n / m)
    return out


def ref_nce(z1, z2, temperature, f="id", decoupled=False, prep="cosine"):
    """SimCLR / DCL with 2N - 2 negatives: loop over the 2N anchors (eqs 15-17, 27-31)."""
    fn = {"id": lambda x: x, "sq": lambda x: x * x, "abs": abs}[f]
    z = np.concatenate([_prepare(z1, prep), _prepare(z2, prep)])
    n2 = z.shape[0]
    n = n2 // 2
    inv = reg = 0.0
    for a in range(n2):
        pos = (a + n) % n2
        sims = [fn(float(z[a] @ z[k])) / temperature for k in range(n2)]
        denom = [k for k in range(n2) if k != a and not (decoupled and k == pos)]
        inv += -sims[pos]
        reg += math.log(sum(math.exp(sims[k]) for k in denom))
    return {"loss": (inv + reg) / n2, "inv": inv / n2, "reg": reg / n2}


def _var_unbiased_cols(z):
    n, m = z.shape
    mu = [sum(z[i, j] for i in range(n)) / n for j in range(m)]
    return [sum((z[i, j] - mu[j]) ** 2 for i in range(n)) / (n - 1) for j in range(m)], mu


def ref_vicreg(z1, z2, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0):
    """Official VICReg (facebookresearch/vicreg main_vicreg.py convention)."""
    n, m = z1.shape
    inv = sum((z1[i, j] - z2[i, j]) ** 2 for i in range(n) for j in range(m)) / (n * m)
    var = cov = 0.0
    for z in (z1, z2):
        v, mu = _var_unbiased_cols(z)
        var += 0.5 * sum(max(0.0, 1 - math.sqrt(x + 1e-4)) for x in v) / m
        for a in range(m):
            for b in range(m):
                if a != b:
                    c = sum((z[i, a] - mu[a]) * (z[i, b] - mu[b]) for i in range(n)) / (n - 1)
                    cov += c * c / m
    loss = sim_coeff * inv + std_coeff * var + cov_coeff * cov
    return {"loss": loss, "inv": inv, "var": var, "cov": cov}


def ref_vicreg_exp(z1, z2, sim_coeff, std_coeff, cov_coeff, temperature, transpose):
    """Appendix L Algorithms 1/2 as written, with N the batch size in the 1/(N - 1)."""
    n, m = z1.shape
    inv = sum((z1[i, j] - z2[i, j]) ** 2 for i in range(n) for j in range(m)) / (n * m)
    var = cov = 0.0
    for z in (z1, z2):
        k = z.T if transpose else z                  # (rows, cols); var over rows
        rows, cols = k.shape
        v, mu = _var_unbiased_cols(k)
        var += sum(max(0.0, 1 - math.sqrt(x + 1e-4)) for x in v) / cols / 2
        kc = k - np.array([mu])
        c = [[sum(kc[r, a] * kc[r, b] for r in range(rows)) / (n - 1) for b in range(cols)]
             for a in range(cols)]
        lse = [math.log(sum(math.exp(c[a][b] / temperature) for b in range(cols) if b != a))
               for a in range(cols)]
        cov += sum(lse) / cols / 2
    loss = sim_coeff * inv + std_coeff * var + cov_coeff * cov
    return {"loss": loss, "inv": inv, "var": var, "cov": cov}


def ref_barlow(z1, z2, lambd=0.0051):
    """Official Barlow Twins: BatchNorm1d(affine=False) (biased var, eps 1e-5), c = aᵀb / N."""
    n, m = z1.shape

    def bn(z):
        mu = z.mean(0)
        var = ((z - mu) ** 2).mean(0)
        return (z - mu) / np.sqrt(var + 1e-5)

    a, b = bn(z1), bn(z2)
    c = [[sum(a[i, p] * b[i, q] for i in range(n)) / n for q in range(m)] for p in range(m)]
    inv = sum((1 - c[p][p]) ** 2 for p in range(m))
    red = sum(c[p][q] ** 2 for p in range(m) for q in range(m) if p != q)
    return {"loss": inv + lambd * red, "inv": inv, "red": red}


def ref_scl(z1, z2, mu=1.0):
    """Official spectral contrastive loss (jhaochenz96/spectral_contrastive_learning)."""
    def proj(z):
        return np.stack([r if np.linalg.norm(r) < math.sqrt(mu)
                         else r / np.linalg.norm(r) * math.sqrt(mu) for r in z])

    p1, p2 = proj(z1), proj(z2)
    n = p1.shape[0]
    inv = -2.0 * sum(float(p1[i] @ p2[i]) for i in range(n)) / n
    reg = sum(float(p1[i] @ p2[j]) ** 2 for i in range(n) for j in range(n) if i != j)
    reg /= n * (n - 1)
    return {"loss": (inv + reg) / mu, "inv": inv, "reg": reg}


def ref_tcr(z1, z2, sim_coeff=100.0, eps=0.5):
    """NMCE: R(z) = ½ logdet(I_M + M/(N eps) zᵀz) on unit embeddings, −cos invariance."""
    n, m = z1.shape
    inv = -sum(float(z1[i] @ z2[i]) / np.linalg.norm(z1[i]) / np.linalg.norm(z2[i])
               for i in range(n)) / n
    rates = []
    for z in (_normalize_rows(z1), _normalize_rows(z2)):
        rates.append(0.5 * np.linalg.slogdet(np.eye(m) + m / (n * eps) * z.T @ z)[1])
    reg = -(rates[0] + rates[1]) / 2
    return {"loss": sim_coeff * inv + reg, "inv": inv, "reg": reg}


REFERENCES: dict[str, Callable[..., dict[str, Any]]] = {
    "simclr": lambda a, b, temperature=0.15: ref_nce(a, b, temperature),
    "simclr-sq": lambda a, b, temperature=0.15: ref_nce(a, b, temperature, "sq"),
    "simclr-abs": lambda a, b, temperature=0.15: ref_nce(a, b, temperature, "abs"),
    "dcl": lambda a, b, temperature=0.1: ref_nce(a, b, temperature, decoupled=True),
    "dcl-sq": lambda a, b, temperature=0.1: ref_nce(a, b, temperature, "sq", True),
    "dcl-abs": lambda a, b, temperature=0.1: ref_nce(a, b, temperature, "abs", True),
    "simclr-center": lambda a, b, temperature=0.15: ref_nce(a, b, temperature, prep="center"),
    "simclr-dimstd": lambda a, b, temperature=0.15: ref_nce(a, b, temperature, prep="dimstd"),
    "scl": lambda a, b, mu=1.0, impl=None: ref_scl(a, b, mu),
    "vicreg": lambda a, b, impl=None, **kw: ref_vicreg(a, b, **kw),
    "vicreg-exp": lambda a, b, sim_coeff=1.0, std_coeff=1.0, cov_coeff=2.0, temperature=0.1:
        ref_vicreg_exp(a, b, sim_coeff, std_coeff, cov_coeff, temperature, False),
    "vicreg-ctr": lambda a, b, sim_coeff=1.0, std_coeff=1.0, cov_coeff=1.0, temperature=0.15:
        ref_vicreg_exp(a, b, sim_coeff, std_coeff, cov_coeff, temperature, True),
    "barlow": lambda a, b, lambd=0.0051, impl=None: ref_barlow(a, b, lambd),
    "tcr": lambda a, b, sim_coeff=100.0, eps=0.5, impl=None: ref_tcr(a, b, sim_coeff, eps),
}

#: non-default hyperparameters, to check that every one reaches the formula.
OVERRIDES = {
    "simclr": {"temperature": 0.3}, "simclr-sq": {"temperature": 0.2},
    "simclr-abs": {"temperature": 0.5}, "dcl": {"temperature": 0.25},
    "dcl-sq": {"temperature": 0.4}, "dcl-abs": {"temperature": 0.7},
    "simclr-center": {"temperature": 0.2}, "simclr-dimstd": {"temperature": 0.35},
    "scl": {"mu": 2.5}, "vicreg": {"sim_coeff": 3.0, "std_coeff": 5.0, "cov_coeff": 0.5},
    "vicreg-exp": {"sim_coeff": 2.0, "std_coeff": 3.0, "cov_coeff": 0.7, "temperature": 0.3},
    "vicreg-ctr": {"sim_coeff": 0.5, "std_coeff": 2.0, "cov_coeff": 1.5, "temperature": 0.4},
    "barlow": {"lambd": 0.3}, "tcr": {"sim_coeff": 7.0, "eps": 0.2},
}

SHAPES = [(5, 3), (4, 7), (6, 6)]


def _inputs(n, m, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    z1 = rng.normal(size=(n, m)) * scale
    z2 = z1 + 0.7 * rng.normal(size=(n, m)) * scale  # correlated views, like augmentations
    return z1, z2


def _impls(name):
    return ["direct", "dual"] if "impl" in CRITERIA[name].defaults else [None]


def test_every_criterion_has_a_reference():
    assert set(REFERENCES) == set(CRITERIA)


@pytest.mark.parametrize("name", list(CRITERIA))
@pytest.mark.parametrize("n,m", SHAPES)
@pytest.mark.parametrize("defaults", [True, False])
def test_matches_reference(name, n, m, defaults):
    z1, z2 = _inputs(n, m, seed=n * 10 + m)
    hp = {} if defaults else OVERRIDES[name]
    want = REFERENCES[name](z1, z2, **hp)
    for impl in _impls(name):
        kw = dict(hp, **({"impl": impl} if impl else {}))
        got = build_criterion(name, **kw)(torch.from_numpy(z1), torch.from_numpy(z2))
        assert set(got) == {"loss", *CRITERIA[name].terms}
        for key, value in want.items():
            assert got[key].item() == pytest.approx(value, rel=1e-9, abs=1e-10), (key, impl)


@pytest.mark.parametrize("name", list(CRITERIA))
def test_gradient_matches_finite_differences_of_reference(name):
    n, m, h = 4, 3, 1e-6
    z1, z2 = _inputs(n, m, seed=3)
    hp = OVERRIDES[name]
    for impl in _impls(name):
        kw = dict(hp, **({"impl": impl} if impl else {}))
        t1 = torch.from_numpy(z1.copy()).requires_grad_()
        t2 = torch.from_numpy(z2.copy()).requires_grad_()
        build_criterion(name, **kw)(t1, t2)["loss"].backward()
        assert t1.grad is not None and t2.grad is not None
        for z, grad in ((z1, t1.grad.numpy()), (z2, t2.grad.numpy())):
            for idx in np.ndindex(z.shape):
                old = z[idx]
                z[idx] = old + h
                up = REFERENCES[name](z1, z2, **hp)["loss"]
                z[idx] = old - h
                down = REFERENCES[name](z1, z2, **hp)["loss"]
                z[idx] = old
                assert grad[idx] == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-6)


def test_simclr_reference_agrees_with_cross_entropy_form():
    """Independent check of the SimCLR reference itself: cross-entropy over masked logits."""
    z1, z2 = _inputs(6, 5, seed=11)
    z = torch.nn.functional.normalize(torch.from_numpy(np.concatenate([z1, z2])), dim=1)
    logits = (z @ z.T / 0.15).fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(6, 12), torch.arange(0, 6)])
    ce = torch.nn.functional.cross_entropy(logits, target).item()
    assert ref_nce(z1, z2, 0.15)["loss"] == pytest.approx(ce, rel=1e-12)


def test_barlow_reference_agrees_with_torch_batchnorm():
    """Independent check of the Barlow reference's normalisation against nn.BatchNorm1d."""
    z1, z2 = _inputs(7, 4, seed=5)
    bn = torch.nn.BatchNorm1d(4, affine=False).double().train()
    a, b = bn(torch.from_numpy(z1)), bn(torch.from_numpy(z2))
    c = a.T @ b / 7
    on = (torch.diagonal(c) - 1).pow(2).sum()
    off = (c - torch.diag(torch.diagonal(c))).pow(2).sum()
    assert ref_barlow(z1, z2, 0.0051)["loss"] == pytest.approx((on + 0.0051 * off).item(),
                                                               rel=1e-12)
