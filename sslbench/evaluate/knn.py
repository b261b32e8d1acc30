"""Weighted k-NN classification on cosine similarity (Wu et al. 2018; Bardes et al. 2021).

Each test sample votes with its k nearest training samples, weighted by exp(similarity / T).
The paper sweeps k in {1, 5, 10, 20, 50, 200} and T in {0.05, 0.07, 0.1, 0.2, 0.5, 1} and
reports the best cell. Neighbours are found once, for the largest k, in memory-bounded chunks of
test samples; every (k, T) cell then reuses them. The number of classes is passed explicitly, so
a split lacking a class or a test set smaller than one chunk is handled correctly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

PAPER_KS = (1, 5, 10, 20, 50, 200)
PAPER_TEMPERATURES = (0.05, 0.07, 0.1, 0.2, 0.5, 1.0)


@torch.no_grad()
def knn_sweep(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
              test_y: torch.Tensor, num_classes: int, *, ks: Sequence[int] = PAPER_KS,
              temperatures: Sequence[float] = PAPER_TEMPERATURES,
              chunk_size: int = 1024) -> dict[tuple[int, float], float]:
    """Top-1 (percent) for every (k, T) cell. Unlabelled training samples (label < 0) are
    dropped."""
    keep = train_y >= 0
    train_x, train_y = F.normalize(train_x[keep].float(), dim=1), train_y[keep]
    test_x = F.normalize(test_x.float(), dim=1)
    kmax = min(max(ks), len(train_x))
    correct = {(k, t): 0 for k in ks for t in temperatures}
    for start in range(0, len(test_x), chunk_size):
        sims, idx = (test_x[start:start + chunk_size] @ train_x.T).topk(kmax, dim=1)
        neighbours = train_y[idx]                              # (B, kmax)
        truth = test_y[start:start + chunk_size]
        one_hot = F.one_hot(neighbours, num_classes).float()    # (B, kmax, C)
        for t in temperatures:
            weighted = one_hot * (sims / t).exp().unsqueeze(-1)
            cumulative = weighted.cumsum(dim=1)                 # votes of the first k neighbours
            for k in ks:
                votes = cumulative[:, min(k, kmax) - 1]
                correct[(k, t)] += int((votes.argmax(1) == truth).sum())
    n = max(len(test_x), 1)
    return {cell: 100.0 * c / n for cell, c in correct.items()}


def best_cell(grid: dict[tuple[int, float], float]) -> tuple[tuple[int, float], float]:
    cell = max(grid, key=lambda c: (grid[c], -c[0], c[1]))
    return cell, grid[cell]
