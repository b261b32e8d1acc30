"""Cross-process gather of embeddings for criteria that need whole-batch statistics.

``gather_with_grad(z)`` concatenates the (N_local, M) batches of all processes in rank order
(all-gather) and, in the backward pass, **sums** the incoming gradients over processes
(all-reduce SUM) before returning this process's slice. Summing is what makes the gradient right:
every process computes its loss from the same gathered tensor, so the gradient reaching a local
embedding is the sum of the gradients of every process's loss. The trap behind the paper's
footnote 1 (popular DDP SimCLR code) is a gather whose backward returns only the local gradient
(or divides by the world size), which silently scales the repulsion terms by 1/W.

Convention relied on by every criterion (tested with two gloo processes):

- each process's loss is a mean over its local anchors / a global batch statistic, so the mean of
  the per-process losses equals the single-process loss on the concatenated batch;
- the gradient each process gets for its local embeddings is W times the single-process gradient
  of that slice; DDP's 1/W averaging of parameter gradients turns it into exactly the
  single-process gradient.

When ``torch.distributed`` is not initialised, or the world size is 1, the gather is the identity.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """All-gather forward, all-reduce(SUM) backward, local slice returned."""

    @staticmethod
    def forward(ctx: Any, z: Tensor) -> Tensor:
        rank, world = dist_info()
        z = z.contiguous()
        parts = [torch.empty_like(z) for _ in range(world)]
        dist.all_gather(parts, z)
        ctx.rank, ctx.n = rank, z.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def gather_with_grad(z: Tensor) -> Tensor:
    """(N_local, M) -> (W * N_local, M), rank-ordered; identity when not distributed.

    Every process must call it with the same N_local (``drop_last=True`` in the data loader).
    """
    _, world = dist_info()
    if world == 1:
        return z
    gathered: Tensor = _GatherWithGrad.apply(z)
    return gathered


def local_rows(n_local: int) -> slice:
    """Rows of this process's embeddings inside a gathered (W * n_local, M) tensor."""
    rank, _ = dist_info()
    return slice(rank * n_local, (rank + 1) * n_local)
