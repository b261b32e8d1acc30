"""Input checks shared by every criterion: shapes, batch size, finiteness, float32 math.

A criterion receives two embedding batches ``z1, z2`` of shape ``(N, M)``: N embeddings (rows) of
dimension M. In the paper's notation the embedding matrix is ``K = z.T`` of shape ``(M, N)``.

Errors:

- wrong rank / mismatched shapes are bugs in the caller (our training code) and raise
  :class:`EmbeddingShapeError` (a ``ValueError``) showing both shapes;
- a batch smaller than the criterion needs is a configuration problem (batch size 1, or a last
  partial batch of one sample) and raises :class:`sslbench.errors.ConfigError`;
- NaN/Inf embeddings (a diverged run) raise :class:`NonFiniteEmbeddingsError` (a
  ``FloatingPointError``) showing the shapes and how many entries are bad.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
from torch import Tensor

from sslbench.errors import ConfigError

#: dtypes that are cast up to float32 before any loss math (autocast / mixed precision outputs).
LOW_PRECISION = (torch.float16, torch.bfloat16)


# Whether check_pair tests finiteness (see deferred_finite_checks).
_CHECK_FINITE: contextvars.ContextVar[bool] = contextvars.ContextVar("check_finite", default=True)


@contextlib.contextmanager
def deferred_finite_checks() -> Iterator[None]:
    """Inside the block, criteria skip their per-call NaN/Inf check of the embeddings.

    That check reads a value back from the device, a host sync on every training step of a GPU.
    The training loop reads its loss terms every ``log_every`` steps and before every save and
    stops a diverged run there, so it defers the criteria's own check while it trains.
    """
    token = _CHECK_FINITE.set(False)
    try:
        yield
    finally:
        _CHECK_FINITE.reset(token)


class EmbeddingShapeError(ValueError):
    """Embedding batches that are not two (N, M) matrices of the same shape."""


class NonFiniteEmbeddingsError(FloatingPointError):
    """Embedding batches that contain NaN or Inf entries."""


def _shapes(z1: Tensor, z2: Tensor) -> str:
    return f"z1 {tuple(z1.shape)}, z2 {tuple(z2.shape)}"


def check_pair(z1: Tensor, z2: Tensor, name: str, min_batch: int = 2, min_dim: int = 1) -> None:
    """Validate two embedding batches for criterion ``name``.

    Args:
        z1, z2: (N, M) embeddings of the two views.
        name: criterion name, used in messages.
        min_batch: smallest N the criterion is defined for.
        min_dim: smallest M the criterion is defined for.

    The finiteness check costs one reduction per input (``z.sum()``); only when that sum is not
    finite is the element-wise count computed, to tell overflow of the sum from NaN/Inf entries.
    """
    if not (isinstance(z1, Tensor) and isinstance(z2, Tensor)):
        raise EmbeddingShapeError(f"{name}: z1 and z2 must be tensors, got {type(z1).__name__} "
                                  f"and {type(z2).__name__}")
    if z1.dim() != 2 or z2.dim() != 2 or z1.shape != z2.shape:
        raise EmbeddingShapeError(f"{name}: expected two (N, M) embedding batches of the same "
                                  f"shape, got {_shapes(z1, z2)}")
    if z1.device != z2.device:
        raise EmbeddingShapeError(f"{name}: z1 is on {z1.device} and z2 on {z2.device} "
                                  f"({_shapes(z1, z2)}); put both views on one device")
    if not (z1.is_floating_point() and z2.is_floating_point()):
        raise EmbeddingShapeError(f"{name}: embeddings must be floating point, got "
                                  f"{z1.dtype} and {z2.dtype} ({_shapes(z1, z2)})")
    n, m = z1.shape
    if n < min_batch:
        raise ConfigError(f"criterion '{name}' needs at least {min_batch} embeddings per batch, "
                          f"got {_shapes(z1, z2)}; use a larger batch size (and drop_last=True)")
    if m < min_dim:
        raise ConfigError(f"criterion '{name}' needs embedding dimension >= {min_dim}, got "
                          f"{_shapes(z1, z2)}; use a wider projector output")
    if not _CHECK_FINITE.get():
        return
    for label, z in (("z1", z1), ("z2", z2)):
        with torch.no_grad():
            total = z.sum(dtype=torch.float32) if z.dtype in LOW_PRECISION else z.sum()
            if bool(torch.isfinite(total)):
                continue
            bad = int((~torch.isfinite(z)).sum())
        if bad:
            raise NonFiniteEmbeddingsError(
                f"{name}: {label} has {bad} non-finite (NaN/Inf) entries ({_shapes(z1, z2)}); "
                "the run diverged: lower the learning rate or check the inputs")


def as_float(z: Tensor) -> Tensor:
    """Cast half / bfloat16 embeddings up to float32; float32 and float64 are kept as they are."""
    return z.float() if z.dtype in LOW_PRECISION else z
