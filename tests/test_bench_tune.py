"""``sslbench bench tune`` on a smaller space: the record adds up, and a configuration that both
searches completed has the same value in both (runs are bit-identical per configuration)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_bench_tune_record(monkeypatch):
    from sslbench.bench import tune

    monkeypatch.setattr(tune, "LRS", (5e-4, 8e-3))
    monkeypatch.setattr(tune, "TEMPERATURES", (0.15, 0.5))
    record = tune.run(epochs=3, samples=256, workers=2)
    assert record["configurations"] == 4 and record["grid_epochs"] == 4 * 3
    assert 4 <= record["pruned_epochs"] <= record["grid_epochs"]
    assert record["epoch_ratio"] == round(record["pruned_epochs"] / record["grid_epochs"], 3)
    grid, pruned = record["grid_values"], record["pruned_values"]
    assert sorted(grid) == sorted(pruned) and len(grid) == 4
    assert all(isinstance(v, float) for v in grid.values())  # nothing pruned without a pruner
    both = [k for k, v in pruned.items() if isinstance(v, float)]
    assert both and all(pruned[k] == grid[k] for k in both)
    assert record["pruned_best"] == max(pruned[k] for k in both)
    assert record["gap"] == round(record["grid_best"] - record["pruned_best"], 2)
    assert record["pruned_trials"] == sum(isinstance(v, str) for v in pruned.values())
