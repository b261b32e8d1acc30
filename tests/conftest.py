"""Shared fixtures: an isolated SSLBENCH_HOME per test, and ways to run the real CLI."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# Keep each test process to one intra-op thread: pytest-xdist already uses both cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

@pytest.fixture(autouse=True, scope="session")
def _own_cache(tmp_path_factory):
    """Generated data cached for this session only (subprocesses inherit it)."""
    previous = os.environ.get("SSLBENCH_CACHE")
    os.environ["SSLBENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("SSLBENCH_CACHE", None)
    else:
        os.environ["SSLBENCH_CACHE"] = previous

# The smallest real pretraining: embedded shapes, 256 images, 2 epochs of 4 steps.
TINY_TRAIN = ["--dataset", "shapes", "--backbone", "small", "--projector", "64-d", "--dim", "16",
              "--epochs", "2", "--batch-size", "64", "--train-samples", "256", "--lr", "0.3",
              "--seed", "0", "--quiet"]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh SSLBENCH_HOME (store and runs/ inside it); SSLBENCH_DB unset."""
    monkeypatch.setenv("SSLBENCH_HOME", str(tmp_path))
    monkeypatch.delenv("SSLBENCH_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def cli(home: Path):
    """Runs `sslbench ARGS` in-process through Typer; returns the click Result."""
    from typer.testing import CliRunner

    from sslbench.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    return invoke


def run_cli(args: list[str], home: Path, *, timeout: float = 300,
            **kwargs) -> subprocess.CompletedProcess:
    """Runs `python -m sslbench ARGS` in a subprocess, as a user types it."""
    env = {**os.environ, "SSLBENCH_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env.pop("SSLBENCH_DB", None)
    return subprocess.run([sys.executable, "-m", "sslbench", *map(str, args)], cwd=home, env=env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def fork_context() -> mp.context.BaseContext:
    """fork where available: ~2 s instead of ~15 s with spawn (8 fresh interpreters importing
    SQLAlchemy and pandas on 2 cores). Safe for the store tests: the children open their own
    Store after the fork and touch nothing else the parent owns (no torch, no connections)."""
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def race(target, processes: int, *args) -> list[tuple]:
    """Starts ``processes`` children at once, each running ``target(*args, index, barrier,
    results)``, and returns the tuple each put on ``results`` (within 240 s)."""
    ctx: Any = fork_context()  # BaseContext's stub lacks Process
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, i, barrier, results))
             for i in range(processes)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=240) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    return outcomes
