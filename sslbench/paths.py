"""Where sslbench keeps things: ``$SSLBENCH_HOME`` (default: the current directory) for the store
and runs, and a cache of regenerable data (``$SSLBENCH_CACHE``, default
``$XDG_CACHE_HOME/sslbench`` or ``~/.cache/sslbench``)."""

from __future__ import annotations

import os
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
