"""Where sslbench keeps things: ``$SSLBENCH_HOME`` (default: the current directory)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("SSLBENCH_HOME") or ".").expanduser().resolve()


def runs_root() -> Path:
    return home() / "runs"


def run_dir(run_id: str) -> Path:
    return runs_root() / run_id
