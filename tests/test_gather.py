"""Cross-process gather: two gloo CPU processes against one process on the concatenated batch.

Convention under test (sslbench/losses/gather.py): the mean of the per-process losses (and of each
term) equals the single-process value, and each process's gradient for its local embeddings is
W times the single-process gradient of that slice (DDP's 1/W averaging then gives exactly the
single-process gradient).
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sslbench.losses import CRITERIA, build_criterion
from sslbench.losses import gather as gather_module
from sslbench.losses.gather import dist_info, gather_with_grad, local_rows

WORLD, N_TOTAL, M = 2, 8, 5
CASES = [(name, impl) for name in CRITERIA
         for impl in (("direct", "dual") if "impl" in CRITERIA[name].defaults else (None,))]


def _global_batch():
    g = torch.Generator().manual_seed(1234)
    z1 = torch.randn(N_TOTAL, M, generator=g, dtype=torch.float64) + 0.5
    return z1, z1 + 0.4 * torch.randn(N_TOTAL, M, generator=g, dtype=torch.float64)


def _run(name, impl, z1, z2):
    z1, z2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    out = build_criterion(name, **({"impl": impl} if impl else {}))(z1, z2)
    out["loss"].backward()
    return {k: v.item() for k, v in out.items()}, z1.grad, z2.grad


class _NoSumGather(torch.autograd.Function):
    """The footnote 1 trap: all-gather forward, but the backward keeps only local gradients."""

    @staticmethod
    def forward(ctx, z):
        parts = [torch.empty_like(z) for _ in range(WORLD)]
        dist.all_gather(parts, z.contiguous())
        ctx.n = z.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        rank = dist.get_rank()
        return grad[rank * ctx.n:(rank + 1) * ctx.n]


WRONG_CASES = [("simclr", None), ("vicreg", "direct"), ("vicreg", "dual"), ("barlow", "dual")]


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        z1_all, z2_all = _global_batch()
        n = N_TOTAL // WORLD
        rows = slice(rank * n, (rank + 1) * n)
        results: dict[Any, Any] = {"info": (dist_info(), local_rows(n))}
        gathered = gather_with_grad(z1_all[rows].clone())
        results["gathered_equal"] = bool(torch.equal(gathered, z1_all))
        for name, impl in CASES:
            results[(name, impl)] = _run(name, impl, z1_all[rows], z2_all[rows])
        # Negative control: the trap's gather in place of the correct one.
        gather_module._GatherWithGrad = _NoSumGather  # type: ignore[misc, assignment]
        for name, impl in WRONG_CASES:
            results[("wrong", name, impl)] = _run(name, impl, z1_all[rows], z2_all[rows])
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def per_rank(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gather")
    ctx = mp.start_processes(_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.terminate()
            pytest.fail("distributed workers did not finish within 120 s")
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.slow
def test_workers_see_the_process_group(per_rank):
    for rank, res in enumerate(per_rank):
        assert res["info"] == ((rank, WORLD), slice(rank * 4, rank * 4 + 4))
        assert res["gathered_equal"]


@pytest.mark.slow
@pytest.mark.parametrize("name,impl", CASES)
def test_two_processes_match_one_process(per_rank, name, impl):
    z1, z2 = _global_batch()
    single, g1, g2 = _run(name, impl, z1, z2)
    ranks = [res[(name, impl)] for res in per_rank]
    for key, value in single.items():
        mean = sum(r[0][key] for r in ranks) / WORLD
        assert mean == pytest.approx(value, rel=1e-10, abs=1e-12), key
    assert _grads_match(ranks, g1, g2)


def _grads_match(ranks, g1, g2):
    return (torch.allclose(torch.cat([r[1] for r in ranks]) / WORLD, g1, rtol=1e-9, atol=1e-12)
            and torch.allclose(torch.cat([r[2] for r in ranks]) / WORLD, g2, rtol=1e-9,
                               atol=1e-12))


@pytest.mark.slow
@pytest.mark.parametrize("name,impl", WRONG_CASES)
def test_a_gather_without_gradient_sum_is_caught(per_rank, name, impl):
    z1, z2 = _global_batch()
    _, g1, g2 = _run(name, impl, z1, z2)
    assert not _grads_match([res[("wrong", name, impl)] for res in per_rank], g1, g2)


def test_gather_is_identity_without_process_group():
    z = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(z) is z
    assert dist_info() == (0, 1) and local_rows(3) == slice(0, 3)
