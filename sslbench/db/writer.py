"""What a running run writes about itself: the :class:`RunWriter` protocol.

The pretraining loop and an evaluation, once their run is open and owned, only record what
happens to it (status, metrics, series, files, liveness) and read back its summary. They write
through a ``RunWriter`` rather than the whole :class:`~sslbench.db.store.Store` so that a process
that must not write -- a non-zero rank under torchrun -- can be handed a writer that drops
everything (:class:`sslbench.train.distributed.NullStore`) and the type checker still sees every
call. A Protocol, not a base class: ``Store`` satisfies it by its own methods (each write done
when it returns), so does :class:`sslbench.db.buffered.BufferedWriter` (writes buffered and
written by a background thread: what rank 0 trains with), and
``tests/test_store_protocol.py`` checks both implementations method by method, signature by
signature. Creating a run and taking ownership of it (``upsert_run``, ``set_status(...,
RUNNING, pid=, claim=)``, ``adopt_numerics``) stay on ``Store``: that is the owner's job, done
before a writer is handed out.

Torch-free, like the rest of ``sslbench.db``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from sslbench.db.models import RunStatus


@runtime_checkable
class RunWriter(Protocol):
    """The store methods training and evaluation call on the run they are executing."""

    def set_status(self, run_id: str, status: RunStatus | str, *, error: str | None = None,
                   failure_class: str | None = None) -> None:
        """Move the run to ``status`` (a terminal status closes the attempt, with ``error`` and
        ``failure_class``, see ``sslbench.runs.policy``)."""
        ...

    def log_metrics(self, run_id: str, step: int, metrics: Mapping[str, Any], *,
                    epoch: int | None = None) -> None:
        """Record ``metrics`` at ``step`` (a replay overwrites)."""
        ...

    def log_series(self, run_id: str, key: str, values: Iterable[Any], *,
                   start: int = 0) -> None:
        """Record one metric at consecutive steps (a spectrum, a histogram)."""
        ...

    def log_artifact(self, run_id: str, kind: str, path: str, *, size: int | None = None,
                     sha256: str | None = None) -> None:
        """Record a file the run produced."""
        ...

    def heartbeat(self, run_id: str) -> None:
        """Record that the run's process is alive now."""
        ...

    def flush(self) -> None:
        """Return once everything recorded so far is in the store (a checkpoint waits on it)."""
        ...

    def truncate_metrics(self, run_id: str, after_step: int) -> None:
        """Delete the run's metric points past ``after_step`` (a resume recomputes them)."""
        ...

    def summary(self, run_id: str) -> dict[str, float]:
        """Final value of every metric of the run."""
        ...
