"""The paper's checkable claims as property tests (Theorem 3.3 / eq. 3, the remark on double
normalisation after it, Lemma 3.4 and Corollary 3.4.1 / eqs. 4-7, Proposition 3.1 / Lemma C.1,
eqs. 8, 10 and 18/32), and dual == direct for every duality fast path.

Orientation: z is (N, M) with embeddings as rows; the paper's K is zᵀ.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck

from sslbench.losses import build_criterion
from sslbench.losses.duality import (
    corollary341_bounds,
    dimension_norms4,
    duality_report,
    embedding_norms4,
    l_c,
    l_nc,
    l_reg,
    lemma34_bounds,
    theorem33_sides,
)
from sslbench.losses.gram import (
    cov_sq_frobenius,
    logdet_eye_plus_cov,
    offdiag,
    offdiag_cov_sq_frobenius,
    offdiag_gram_sq_frobenius,
    resolve_impl,
)
from sslbench.losses.vicreg import vicreg_terms
from sslbench.losses.vicreg_dual import VICRegDual

SETTINGS = settings(max_examples=25, deadline=None)
sizes = st.integers(min_value=1, max_value=11)
seeds = st.integers(min_value=0, max_value=2**31 - 1)


def _z(n, m, seed, scale=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, m, generator=g, dtype=dtype) * scale


# -------------------------------------------------------------- loop references for L_c, L_nc

def ref_l_c(z):
    n = z.shape[0]
    return sum(float(z[i] @ z[k]) ** 2 for i in range(n) for k in range(n) if i != k)


def ref_l_nc(z):
    m = z.shape[1]
    return sum(float(z[:, a] @ z[:, b]) ** 2 for a in range(m) for b in range(m) if a != b)


@SETTINGS
@given(n=sizes, m=sizes, seed=seeds)
def test_l_c_l_nc_match_loop_definitions_on_both_sides(n, m, seed):
    z = _z(n, m, seed)
    for impl in ("direct", "dual", "auto"):
        assert l_c(z, impl).item() == pytest.approx(ref_l_c(z), rel=1e-9, abs=1e-9)
        assert l_nc(z, impl).item() == pytest.approx(ref_l_nc(z), rel=1e-9, abs=1e-9)


# ------------------------------------------------------------------ Theorem 3.3 (eq. 3)

@SETTINGS
@given(n=sizes, m=sizes, seed=seeds, scale=st.floats(0.01, 100.0))
def test_theorem_33_identity_any_matrix(n, m, seed, scale):
    z = _z(n, m, seed, scale)
    lhs, rhs = theorem33_sides(z)
    assert lhs.item() == pytest.approx(rhs.item(), rel=1e-10)
    assert l_nc(z).item() == pytest.approx((l_c(z) + l_reg(z)).item(), rel=1e-9,
                                           abs=1e-9 * scale**4)
    # ‖KᵀK‖_F = ‖KKᵀ‖_F
    assert torch.linalg.norm(z @ z.T).item() == pytest.approx(torch.linalg.norm(z.T @ z).item(),
                                                              rel=1e-12)


def test_norm_sums_follow_paper_orientation():
    z = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]], dtype=torch.float64)  # N=2, M=3
    assert embedding_norms4(z).item() == 1 + 4      # ‖K_{·,i}‖⁴ = ‖row i of z‖⁴
    assert dimension_norms4(z).item() == 4 + 1 + 0  # ‖K_{j,·}‖⁴ = ‖column j of z‖⁴


# ---------------------------------------- double normalisation (remark after Theorem 3.3)

def test_doubly_normalised_square_matrix_has_equal_criteria():
    q, _ = torch.linalg.qr(_z(6, 6, 1))          # orthogonal: unit rows and unit columns
    assert (l_nc(q) - l_c(q)).item() == pytest.approx(6 - 6, abs=1e-10)
    perm = torch.eye(5, dtype=torch.float64)[torch.tensor([3, 0, 4, 1, 2])]
    assert (l_nc(perm) - l_c(perm)).item() == 0.0


@pytest.mark.parametrize("k, m, s", [(1, 4, 1.0), (3, 4, 0.7), (2, 5, 2.0)])
def test_constant_norms_general_form(k, m, s):
    """Stacked scaled orthogonal blocks: embedding norms a_c = s, dimension norms a_r = s√k."""
    blocks = [torch.linalg.qr(_z(m, m, i))[0] for i in range(k)]
    z = s * torch.cat(blocks)                      # (N = k·m, M = m)
    n, a_c, a_r = k * m, s, s * math.sqrt(k)
    assert torch.allclose(z.norm(dim=1), torch.full((n,), a_c, dtype=z.dtype))
    assert torch.allclose(z.norm(dim=0), torch.full((m,), a_r, dtype=z.dtype))
    assert (l_nc(z) - l_c(z)).item() == pytest.approx(n * a_c**4 - m * a_r**4, abs=1e-9)


# ---------------------------------------- Lemma 3.4 / Corollary 3.4.1 (eqs. 4-7)

@SETTINGS
@given(n=sizes, m=sizes, seed=seeds)
def test_lemma_34_bounds_hold_for_normalised_matrices(n, m, seed):
    z = _z(n, m, seed)
    b = lemma34_bounds(n, m)
    rows = dimension_norms4(torch.nn.functional.normalize(z, dim=1)).item()
    cols = embedding_norms4(torch.nn.functional.normalize(z, dim=0)).item()
    assert b["rows_lower"] * (1 - 1e-12) <= rows <= b["rows_upper"] * (1 + 1e-12)
    assert b["cols_lower"] * (1 - 1e-12) <= cols <= b["cols_upper"] * (1 + 1e-12)


@SETTINGS
@given(n=st.integers(2, 11), m=st.integers(2, 11), seed=seeds)
def test_corollary_341(n, m, seed):
    ze = torch.nn.functional.normalize(_z(n, m, seed), dim=1)   # unit embeddings
    lo, hi = corollary341_bounds(l_nc(ze).item(), n, m, "embeddings")
    assert lo - 1e-9 <= l_c(ze).item() <= hi + 1e-9
    zd = torch.nn.functional.normalize(_z(n, m, seed), dim=0)   # unit dimensions
    lo, hi = corollary341_bounds(l_c(zd).item(), n, m, "dimensions")
    assert lo - 1e-9 <= l_nc(zd).item() <= hi + 1e-9


def test_lemma_34_equality_cases_are_collapse():
    n, m, a = 6, 4, 1.5
    b = lemma34_bounds(n, m, a)
    const = torch.full((n, m), a / math.sqrt(m), dtype=torch.float64)   # embeddings of norm a
    assert dimension_norms4(const).item() == pytest.approx(b["rows_lower"])
    onehot = torch.zeros(n, m, dtype=torch.float64)
    onehot[:, 0] = a                                                    # all embeddings = a·e1
    assert dimension_norms4(onehot).item() == pytest.approx(b["rows_upper"])
    const_d = torch.full((n, m), a / math.sqrt(n), dtype=torch.float64)  # dimensions of norm a
    assert embedding_norms4(const_d).item() == pytest.approx(b["cols_lower"])
    single = torch.zeros(n, m, dtype=torch.float64)
    single[0, :] = a                                                     # one sample holds all
    assert embedding_norms4(single).item() == pytest.approx(b["cols_upper"])
    with pytest.raises(ValueError, match="normalized must be"):
        corollary341_bounds(1.0, n, m, "rows")


# ---------------------------------------------------------- Proposition 3.1 / Lemma C.1

def test_prop_31_uniform_dot_products_mean_zero_variance_one_over_m():
    scipy_stats = pytest.importorskip("scipy.stats")
    m, k = 16, 20000
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(k, m, generator=g, dtype=torch.float64), dim=1)
    y = torch.nn.functional.normalize(torch.randn(k, m, generator=g, dtype=torch.float64), dim=1)
    d = (x * y).sum(1).numpy()
    assert abs(d.mean()) < 4 * math.sqrt(1 / m / k)
    assert d.var() == pytest.approx(1 / m, rel=0.05)
    ks = scipy_stats.kstest((d + 1) / 2, "beta", args=((m - 1) / 2, (m - 1) / 2))
    assert ks.pvalue > 1e-3
    wrong = scipy_stats.kstest((d + 1) / 2, "beta", args=((m + 7) / 2, (m + 7) / 2))
    assert wrong.pvalue < 1e-6  # the test can tell a wrong dimension apart


# ------------------------------------------------------------------ eqs. 8, 10, 18/32

@SETTINGS
@given(n=sizes, m=sizes, seed=seeds)
def test_eq8_covariance_of_transpose_is_l_c(n, m, seed):
    z = _z(n, m, seed)
    assert l_nc(z.T).item() == pytest.approx(l_c(z).item(), rel=1e-10, abs=1e-10)


@SETTINGS
@given(n=st.integers(2, 10), m=st.integers(1, 10), seed=seeds)
def test_eq10_vicreg_covariance_rewritten_with_l_c_and_l_reg(n, m, seed):
    z1, z2 = _z(n, m, seed), _z(n, m, seed + 1)
    terms = vicreg_terms(z1, z2, "direct")
    rewritten = 0.0
    for z in (z1, z2):
        zc = (z - z.mean(0)) / math.sqrt(n - 1)      # VICReg's centring and 1/(N-1) scaling
        rewritten += ((l_c(zc) + l_reg(zc)) / m).item()
    assert terms["cov"].item() == pytest.approx(rewritten, rel=1e-9, abs=1e-12)


@SETTINGS
@given(n=st.integers(2, 10), m=sizes, seed=seeds)
def test_eq18_scl_regulariser_is_l_c(n, m, seed):
    z = _z(n, m, seed)
    out = build_criterion("scl", mu=1e6)(z, z.clone())   # radius 1000: no projection
    assert out["reg"].item() * n * (n - 1) == pytest.approx(l_c(z).item(), rel=1e-9, abs=1e-12)


def test_eq34_barlow_redundancy_is_l_nc_of_standardised_embeddings():
    z = _z(9, 5, 0)
    out = build_criterion("barlow")(z, z.clone())
    zn = (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)
    assert out["red"].item() * 9**2 == pytest.approx(l_nc(zn).item(), rel=1e-10)


# ------------------------------------------------------------------- dual == direct (values+grads)

def _value_and_grads(fn, *tensors):
    ts = [t.detach().clone().requires_grad_() for t in tensors]
    out = fn(*ts)
    grads = torch.autograd.grad(out, ts)
    return out.detach(), grads


@SETTINGS
@given(n=sizes, m=sizes, seed=seeds)
def test_gram_primitives_dual_equals_direct(n, m, seed):
    a, b = _z(n, m, seed), _z(n, m, seed + 1)
    prims = [lambda x, y, i: cov_sq_frobenius(x, y, i),
             lambda x, y, i: offdiag_cov_sq_frobenius(x, y, i),
             lambda x, y, i: offdiag_gram_sq_frobenius(x, y, i),
             lambda x, y, i: offdiag_cov_sq_frobenius(x, None, i) + y.sum(),
             lambda x, y, i: logdet_eye_plus_cov(x, 0.7, i) + y.sum()]
    for prim in prims:
        v_d, g_d = _value_and_grads(lambda x, y, prim=prim: prim(x, y, "direct"), a, b)
        v_u, g_u = _value_and_grads(lambda x, y, prim=prim: prim(x, y, "dual"), a, b)
        assert v_u.item() == pytest.approx(v_d.item(), rel=1e-9, abs=1e-9)
        for gd, gu in zip(g_d, g_u):
            torch.testing.assert_close(gu, gd, rtol=1e-9, atol=1e-9)


@SETTINGS
@given(name=st.sampled_from(["vicreg", "barlow", "scl", "tcr"]), n=st.integers(2, 12),
       m=st.integers(1, 12), seed=seeds, shift=st.floats(-5, 5))
def test_criteria_dual_equals_direct(name, n, m, seed, shift):
    z1, z2 = _z(n, m, seed) + shift, _z(n, m, seed + 1) * 0.3 + shift
    outs = {}
    for impl in ("direct", "dual"):
        crit = build_criterion(name, impl=impl)
        outs[impl] = _value_and_grads(lambda x, y, crit=crit: crit(x, y)["loss"], z1, z2)
    assert outs["dual"][0].item() == pytest.approx(outs["direct"][0].item(), rel=1e-8, abs=1e-9)
    for gd, gu in zip(outs["direct"][1], outs["dual"][1]):
        torch.testing.assert_close(gu, gd, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("n,m", [(64, 512), (300, 40)])
def test_vicreg_dual_equals_direct_in_float32(n, m):
    z1 = _z(n, m, 0, dtype=torch.float32) + 2.0
    z2 = z1 + 0.3 * _z(n, m, 1, dtype=torch.float32)
    outs = {}
    for impl in ("direct", "dual"):
        crit = build_criterion("vicreg", impl=impl)
        outs[impl] = _value_and_grads(lambda x, y, crit=crit: crit(x, y)["loss"], z1, z2)
    assert outs["dual"][0].item() == pytest.approx(outs["direct"][0].item(), rel=1e-5)
    for gd, gu in zip(outs["direct"][1], outs["dual"][1]):
        torch.testing.assert_close(gu, gd, rtol=1e-4, atol=1e-4 * gd.abs().max().item())


@pytest.mark.parametrize("n,m,scale", [(5, 4, 0.5), (3, 7, 0.5), (6, 3, 2.0), (4, 4, 1.0)])
def test_vicreg_dual_function_gradcheck(n, m, scale):
    g = torch.Generator().manual_seed(n * m)
    z1 = (torch.randn(n, m, generator=g, dtype=torch.float64) * scale + 1).requires_grad_()
    z2 = (torch.randn(n, m, generator=g, dtype=torch.float64) * scale).requires_grad_()
    assert gradcheck(VICRegDual.apply, (z1, z2))


def test_resolve_impl_picks_the_smaller_matrix():
    assert resolve_impl("auto", direct_size=8192, dual_size=256) == "dual"
    assert resolve_impl("auto", direct_size=256, dual_size=2048) == "direct"
    assert resolve_impl("auto", direct_size=64, dual_size=64) == "direct"
    assert resolve_impl("dual", 1, 100) == "dual"
    with pytest.raises(ValueError, match="impl must be one of"):
        resolve_impl("fast", 1, 2)


def test_offdiag_view_holds_exactly_the_off_diagonal_entries():
    a = torch.arange(16.0).view(4, 4)
    mask = ~torch.eye(4, dtype=torch.bool)
    assert sorted(offdiag(a).flatten().tolist()) == sorted(a[mask].tolist())
    with pytest.raises(ValueError, match="square"):
        offdiag(torch.zeros(2, 3))


# ------------------------------------------------------------------------- duality_report

REPORT_KEYS = {"n", "m", "l_c", "l_nc", "thm33_lhs", "thm33_rhs", "sum_row4_colsnormalized",
               "lemma34_rows_lower", "lemma34_rows_upper", "sum_col4_rowsnormalized",
               "lemma34_cols_lower", "lemma34_cols_upper"}


def test_duality_report_values_against_loops():
    z = _z(7, 5, 3, dtype=torch.float32)
    rep = duality_report(z)
    assert REPORT_KEYS <= set(rep) and all(isinstance(v, float) for v in rep.values())
    zd = z.double().numpy()
    assert rep["n"] == 7 and rep["m"] == 5
    assert rep["l_c"] == pytest.approx(ref_l_c(zd), rel=1e-10)
    assert rep["l_nc"] == pytest.approx(ref_l_nc(zd), rel=1e-10)
    assert rep["thm33_lhs"] == pytest.approx(rep["thm33_rhs"], rel=1e-12)
    unit_rows = zd / np.linalg.norm(zd, axis=1, keepdims=True)   # embeddings normalised
    assert rep["sum_row4_colsnormalized"] == pytest.approx(
        sum(np.linalg.norm(unit_rows[:, j]) ** 4 for j in range(5)), rel=1e-10)
    unit_cols = zd / np.linalg.norm(zd, axis=0, keepdims=True)   # dimensions normalised
    assert rep["sum_col4_rowsnormalized"] == pytest.approx(
        sum(np.linalg.norm(unit_cols[i]) ** 4 for i in range(7)), rel=1e-10)
    assert (rep["lemma34_rows_lower"], rep["lemma34_rows_upper"]) == (49 / 5, 49)
    assert (rep["lemma34_cols_lower"], rep["lemma34_cols_upper"]) == (25 / 7, 25)


def test_duality_report_random_batch_sits_near_lower_bounds_like_table_s4():
    rep = duality_report(_z(128, 512, 0, dtype=torch.float32))
    assert 1.0 <= rep["rows_ratio_to_lower"] < 3.0
    assert 1.0 <= rep["cols_ratio_to_lower"] < 3.0
    assert rep["thm33_rel_err"] < 1e-12


def test_duality_report_rejects_non_matrices():
    with pytest.raises(ValueError, match=r"\(3,\)"):
        duality_report(torch.zeros(3))
