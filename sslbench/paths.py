"""Where sslbench keeps things: ``$SSLBENCH_HOME`` (default: the current directory) for the store
and runs, and a cache of regenerable data (``$SSLBENCH_CACHE``, default
``$XDG_CACHE_HOME/sslbench`` or ``~/.cache/sslbench``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("SSLBENCH_HOME") or ".").expanduser().resolve()


def runs_root() -> Path:
    return home() / "runs"


def run_dir(run_id: str) -> Path:
    return runs_root() / run_id


def cache_root() -> Path:
    """Data that can be regenerated at any time (deleting it is always safe)."""
    explicit = os.environ.get("SSLBENCH_CACHE")
    if explicit:
        return Path(explicit).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser().resolve() / "sslbench"


@contextlib.contextmanager
def environ(values: Mapping[str, str | None]) -> Iterator[None]:
    """This process's environment (and so its children's) with ``values`` set for the block;
    a None value removes the variable. Restored afterwards."""
    old = {key: os.environ.get(key) for key in values}
    try:
        for key, value in values.items():
            _set(key, value)
        yield
    finally:
        for key, value in old.items():
            _set(key, value)


def _set(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value
