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
    # The first rung follows the demo's one-epoch warmup: nothing is pruned before epoch 2.
    assert record["first_rung"] == 2 and record["epochs_per_run"] == 3
    assert all(v.endswith(("after 2 epochs", "after 3 epochs"))
               for v in pruned.values() if isinstance(v, str))
    assert sorted(record["rank_correlation"]) == [1, 2, 3]
    assert all(r is None or -1 <= r <= 1 for r in record["rank_correlation"].values())


def test_rank_correlation_ranks_each_epoch_against_the_objective():
    from sslbench.bench.tune import rank_correlation

    trials = [({1: 10.0, 2: 30.0, 3: 5.0}, 1.0), ({1: 20.0, 2: 20.0, 3: 5.0}, 2.0),
              ({1: 30.0, 2: 10.0, 3: 5.0}, 3.0), ({1: 40.0, 2: 0.0}, 4.0)]
    # Epoch 1 ranks as the objective, epoch 2 the reverse, epoch 3 is constant (undefined).
    assert rank_correlation(trials) == {1: 1.0, 2: -1.0, 3: None}
    assert rank_correlation(trials[:2]) == {1: None, 2: None, 3: None}  # too few trials
