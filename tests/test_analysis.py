import numpy as np
import pytest
import torch

from sslbench.evaluate.analysis.measures import (
    cka_matrix,
    cosine_histogram,
    effective_rank,
    linear_cka,
    negative_cosines,
    singular_values,
)


def _cka_reference(x, y):
    """CKA through HSIC with explicit N x N kernels and centring matrix (Kornblith eq. 3)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    kx, ky = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h)  # noqa: E731
    return hsic(kx, ky) / np.sqrt(hsic(kx, kx) * hsic(ky, ky))


def test_cka_identical_and_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 12, generator=g)
    y = x @ torch.randn(12, 7, generator=g) + 0.5 * torch.randn(50, 7, generator=g)
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, y) == pytest.approx(_cka_reference(x, y), rel=1e-9)
    # N > D and N < D take different sides of the duality; same value
    wide = torch.randn(10, 40, generator=g)
    assert linear_cka(wide, wide[:, :5]) == pytest.approx(_cka_reference(wide, wide[:, :5]))


def test_cka_invariances():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 16, generator=g, dtype=torch.float64)
    y = torch.randn(64, 9, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    base = linear_cka(x, y)
    assert linear_cka(x @ q, y) == pytest.approx(base, rel=1e-9)
    assert linear_cka(3.7 * x, y) == pytest.approx(base, rel=1e-9)
    assert linear_cka(x + 5.0, y) == pytest.approx(base, rel=1e-9)


def test_cka_matrix_symmetric_unit_diagonal():
    g = torch.Generator().manual_seed(2)
    feats = [torch.randn(30, d, generator=g) for d in (4, 8, 16)]
    m = cka_matrix(feats)
    assert torch.allclose(m, m.T) and torch.allclose(m.diag(), torch.ones(3, dtype=m.dtype))


def test_effective_rank_known_spectra():
    assert effective_rank(torch.ones(10)) == pytest.approx(10.0, rel=1e-5)
    assert effective_rank(torch.tensor([5.0, 0, 0, 0])) == pytest.approx(1.0, rel=1e-5)
    s = 0.5 ** torch.arange(20, dtype=torch.float64)
    p = s / s.sum()
    assert effective_rank(s) == pytest.approx(float(torch.exp(-(p * p.log()).sum())), rel=1e-4)
    # identity matrix: all singular values equal
    assert effective_rank(singular_values(torch.eye(8), center=False)) == pytest.approx(8, rel=1e-5)


def test_singular_values_rank_one():
    u = torch.randn(40, 1)
    s = singular_values(u @ torch.randn(1, 6), center=False)
    assert s[0] > 0 and torch.all(s[1:] < 1e-6 * s[0])


def test_negative_cosines_and_histogram():
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    assert sorted(negative_cosines(z).tolist()) == pytest.approx([-1.0, 0.0, 0.0])
    g = torch.Generator().manual_seed(3)
    hist = cosine_histogram(torch.randn(400, 64, generator=g))
    assert sum(hist["counts"]) == 400 * 399 / 2
    assert hist["mean"] == pytest.approx(0.0, abs=0.01)
    assert hist["var"] == pytest.approx(1 / 64, rel=0.1)  # Prop. 3.1: Var = 1/M
