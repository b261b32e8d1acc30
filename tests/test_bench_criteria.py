"""The criteria benchmark: row format, the default grid, and the memory-measurement method."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from sslbench.bench import criteria as bench
from sslbench.errors import ConfigError

KEYS = {"criterion", "impl", "n", "m", "fwd_bwd_ms", "peak_mem_mb", "input_grad_mb"}


def test_default_grid_has_the_two_required_shapes():
    assert (256, 8192) in bench.DEFAULT_GRID and (2048, 256) in bench.DEFAULT_GRID
    assert set(bench.DEFAULT_IMPLS) == {"direct", "dual", "auto"}


@pytest.fixture
def two_threads():
    """torch at 2 intra-op threads, a count that ``run(threads=1)`` changes; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


def test_rows_on_a_tiny_grid(two_threads):
    rows: list[dict[str, Any]] = bench.run(grid=[(16, 512), (64, 8)], repeats=1, threads=1)
    assert torch.get_num_threads() == two_threads  # the count from before the call is restored
    assert len(rows) == 2 * len(bench.DEFAULT_CRITERIA) * 3
    for row in rows:
        assert set(row) == KEYS
        assert row["fwd_bwd_ms"] > 0 and row["peak_mem_mb"] > 0
        assert row["input_grad_mb"] == pytest.approx(2 * row["n"] * row["m"] * 4 / 2**20, abs=1e-3)
    by = {(r["criterion"], r["impl"], r["n"]): r for r in rows}
    # N=16 < M=512: the direct VICReg builds two 512×512 covariances (1 MiB each), the dual none
    assert by[("vicreg", "direct", 16)]["peak_mem_mb"] > 1.0
    assert by[("vicreg", "dual", 16)]["peak_mem_mb"] < 0.5 * by[("vicreg", "direct", 16)][
        "peak_mem_mb"]
    assert by[("vicreg", "auto", 16)]["peak_mem_mb"] == by[("vicreg", "dual", 16)]["peak_mem_mb"]


def test_every_row_is_measured_at_the_requested_thread_count(two_threads, monkeypatch):
    seen = []
    monkeypatch.setattr(bench, "measure", lambda *args: seen.append(torch.get_num_threads()))
    bench.run(grid=[(4, 4), (8, 8)], criteria=("vicreg",), impls=("direct",), threads=1)
    assert seen == [1, 1] and torch.get_num_threads() == two_threads
    bench.run(grid=[(4, 4)], criteria=("vicreg",), impls=("direct",), threads=None)
    assert seen[-1] == two_threads  # None keeps torch's setting


class _Allocates(torch.nn.Module):
    """A fake criterion that holds a 4 MiB temporary while computing its loss."""

    def forward(self, z1, z2):
        tmp = torch.ones(1 << 20)
        return {"loss": z1.sum() + z2.sum() + tmp.sum() * 0}


def test_cpu_peak_measurement_sees_a_known_allocation():
    z1, z2 = torch.randn(4, 4, requires_grad=True), torch.randn(4, 4, requires_grad=True)
    peak = bench.peak_mem_mb(_Allocates(), z1, z2)
    assert 4.0 <= peak < 4.1
    assert z1.grad is None  # the measurement leaves no gradient behind


def test_criteria_without_impl_are_rejected(two_threads):
    with pytest.raises(ConfigError, match="no hyperparameter 'impl'"):
        bench.run(grid=[(4, 4)], criteria=("simclr",), repeats=1, threads=1)
    assert torch.get_num_threads() == two_threads  # restored on the error path too
