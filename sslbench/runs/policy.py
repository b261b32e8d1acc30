"""Retries by failure class: what a scheduler does after an attempt ends. Pure functions.

Failure classes (``attempts.failure_class``) and what follows them while attempts remain:

=============  =====================================================  ==========================
class          cause                                                  next
=============  =====================================================  ==========================
``oom``        the device ran out of memory                           retry alone on a device
``killed``     the worker died without recording an end (SIGKILL,     retry
               the kernel's OOM killer, a segfault)
``lost``       the reaper found the process gone (host reboot,        retry
               a scheduler killed with its workers)
``error``      an exception (a bug, a broken file)                    retry only if its text
                                                                      matches a ``transient``
                                                                      pattern
``nonfinite``  the loss became NaN/inf: deterministic                 never
``input``      a user error (missing data, bad option)                never
=============  =====================================================  ==========================

An interrupted run (``sslbench runs stop``, SIGTERM) is never retried by the scheduler: it was
asked to stop. Re-running the sweep resumes it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sslbench.db.models import RunStatus

#: Classes retried whatever their message (infrastructure, not the run's own fault).
RETRY_CLASSES = ("killed", "lost")
NEVER_RETRY = ("nonfinite", "input")


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` per run per sweep invocation; ``transient``: regexes marking errors
    worth another attempt."""

    max_attempts: int = 3
    transient: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")


@dataclass(frozen=True)
class Decision:
    action: str  # done, retry, retry-exclusive, give-up, stopped
    reason: str


def is_transient(error: str | None, patterns: Sequence[str]) -> bool:
    """Whether the error text matches one of the ``transient`` regexes."""
    return bool(error) and any(re.search(p, error or "") for p in patterns)


def decide(status: str, failure_class: str | None, error: str | None, *, attempts: int,
           attempt_limit: int, policy: RetryPolicy, stopping: bool = False) -> Decision:
    """What to do with a run whose attempt just ended in ``status``.

    ``attempts`` is how many attempts the run has had (this one included); the run may have
    another while ``attempts < attempt_limit`` and the scheduler is not ``stopping``.
    """
    if status == RunStatus.COMPLETED:
        return Decision("done", "completed")
    if status == RunStatus.INTERRUPTED:
        return Decision("stopped", "interrupted (asked to stop): re-run the sweep to resume it")
    if status == RunStatus.PRUNED:
        return Decision("done", "pruned by its tuning study")
    if status not in (RunStatus.FAILED, RunStatus.KILLED):
        return Decision("give-up", f"unexpected status {status!r} after the attempt")
    cls = failure_class or ("killed" if status == RunStatus.KILLED else "error")
    if cls in NEVER_RETRY:
        return Decision("give-up", f"failed ({cls}): not retried, fix the cause and re-run "
                                   "with --retry-failed")
    retryable = cls in RETRY_CLASSES or cls == "oom" or (
        cls == "error" and is_transient(error, policy.transient))
    if not retryable:
        return Decision("give-up", f"failed ({cls}): not marked transient, so not retried")
    if stopping:
        return Decision("give-up", f"{cls}: not retried while stopping")
    if attempts >= attempt_limit:
        return Decision("give-up", f"{cls}: out of attempts ({attempts} of {attempt_limit})")
    if cls == "oom":
        return Decision("retry-exclusive", "out of memory: retry alone on a device")
    return Decision("retry", f"{cls}: retry (attempt {attempts + 1} of {attempt_limit})")


def describe_exit(code: int | None) -> str:
    """``-9`` -> "signal 9 (SIGKILL)", ``1`` -> "exit code 1"."""
    import signal

    if code is None:
        return "no exit code"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown"
        return f"signal {-code} ({name})"
    return f"exit code {code}"
