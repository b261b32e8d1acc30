"""Shared fixtures: an isolated SSLBENCH_HOME per test, trained homes built once per session
(:func:`shared_home`), and ways to run the CLI, as a user types it or in-process."""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# Keep each test process to one intra-op thread: pytest-xdist already uses both cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups it adds
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with `slow` (end-to-end) tests first, the others after; each module's tests
    stay together and in order (module fixtures are set up once). pytest-xdist hands the tests
    out in this order, one or two at a time (``--maxschedchunk 1`` in pyproject.toml): the long
    tests are shared out first and the short ones even out the end, instead of one worker
    finishing a long module alone while the other waits.

    The tests on the real Slurm cluster run on one worker (``xdist_group``): each worker would
    start a cluster of its own, and two clusters on one machine number their jobs alike, so
    their task groups would meet at the same rendezvous port, and four nodes' worth of tasks
    would share two cores."""
    slow = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow)  # stable
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("slurm"))


def session_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of this test session that every pytest-xdist worker sees (the parent of the
    workers' own base folders), or this process's base folder without xdist."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def _session_lock(path: Path):
    """An exclusive lock shared by the xdist workers (held until the block ends)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(autouse=True, scope="session")
def _own_cache(tmp_path_factory):
    """Generated data cached for this session only (subprocesses inherit it), shared by the
    xdist workers: the cache writes each file atomically, so concurrent writers are harmless."""
    previous = os.environ.get("SSLBENCH_CACHE")
    cache = session_root(tmp_path_factory) / "cache"
    cache.mkdir(exist_ok=True)
    os.environ["SSLBENCH_CACHE"] = str(cache)
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


def invoke_in(home: Path, *args: str):
    """Runs `sslbench ARGS` in-process through Typer with ``home`` as SSLBENCH_HOME (and the
    working folder), for session fixtures, which cannot use the ``home`` fixture."""
    from unittest import mock

    from typer.testing import CliRunner

    from sslbench.cli import app

    cwd = Path.cwd()
    env = {"SSLBENCH_HOME": str(home)}
    with mock.patch.dict(os.environ, env):
        os.environ.pop("SSLBENCH_DB", None)
        os.chdir(home)
        try:
            return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
        finally:
            os.chdir(cwd)


def shared_home(tmp_path_factory: pytest.TempPathFactory, name: str,
                build: Callable[[Path], Any]) -> tuple[Path, Any]:
    """An SSLBENCH_HOME that ``build(home)`` fills once per test session, whichever xdist
    worker asks first (the others wait on a file lock, then find it built): the trained runs that
    several tests start from. Returns (home, what build returned, which must be JSON).

    Tests must not change it: they copy it (:func:`copy_home`) and work on the copy."""
    root = session_root(tmp_path_factory) / "shared-homes"
    root.mkdir(exist_ok=True)
    home, done = root / name, root / f"{name}.json"
    with _session_lock(root / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(home, ignore_errors=True)  # a build that failed in another worker
            home.mkdir()
            done.write_text(json.dumps({"built": build(home)}))
    return home, json.loads(done.read_text())["built"]


def copy_home(source: Path, to: Path) -> Path:
    """A copy of a shared home (its runs/ and its store) at ``to``, which may exist."""
    shutil.copytree(source, to, dirs_exist_ok=True)
    return to


def run_cli(args: list[str], home: Path, *, timeout: float = 300,
            env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Runs `python -m sslbench ARGS` in a subprocess, as a user types it (``env``: variables
    added to its environment)."""
    return subprocess.run([sys.executable, "-m", "sslbench", *map(str, args)], cwd=home,
                          env={**cli_env(home), **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def cli_env(home: Path) -> dict[str, str]:
    """The environment of a `python -m sslbench` subprocess with SSLBENCH_HOME ``home``."""
    env = {**os.environ, "SSLBENCH_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env.pop("SSLBENCH_DB", None)
    return env


def completed(result: Any, args: Any = ()) -> subprocess.CompletedProcess:
    """An in-process (CliRunner) result read as run_cli's, for checks written for both."""
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


#: The run every test that needs a completed pretraining starts from (one per session).
TINY_SIMCLR = ["train", "--method", "simclr", *TINY_TRAIN]


def assert_imports_none_of(code: str, *modules: str, timeout: float = 60) -> None:
    """Runs ``code`` in a fresh interpreter, which must succeed without importing ``modules``
    (what a command or a task pays for at start-up)."""
    checks = "".join(f"assert {m!r} not in sys.modules, {m!r}\n" for m in modules)
    done = subprocess.run([sys.executable, "-c", f"import sys\n{code}\n{checks}"],
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr


def tiny_simclr_sweep(*, epochs: int = 2, samples: int = 256, seeds: str = "[0]") -> str:
    """TINY_SIMCLR written as a sweep file (with the defaults, the same run: the tests that use
    it check that the ids agree)."""
    return f"""
name = "same"
[fixed]
method = "simclr"
dataset = "shapes"
backbone = "small"
projector = "64-d"
dim = 16
epochs = {epochs}
batch_size = 64
train_samples = {samples}
lr = 0.3
[grid]
seed = {seeds}
[eval]
protocols = []
"""


def _train_tiny_simclr(home: Path) -> None:
    # As from a user's shell, where torch would use every core (the tests' default is 1).
    from unittest import mock

    with mock.patch.dict(os.environ, {"OMP_NUM_THREADS": str(os.cpu_count() or 2)}):
        result = run_cli(TINY_SIMCLR, home)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="session")
def tiny_simclr(tmp_path_factory) -> Path:
    """A home holding the completed TINY_SIMCLR run (2 epochs: checkpoint.pt and
    checkpoint.prev.pt), trained once per session by `python -m sslbench`. Read-only: tests
    copy it (copy_home) before they run anything in it."""
    return shared_home(tmp_path_factory, "simclr-tiny", _train_tiny_simclr)[0]


def freeze_at_first_checkpoint(home: Path, proc: subprocess.Popen, timeout: float = 240) -> str:
    """SIGSTOPs the training ``proc`` (writing runs under ``home``) as soon as its first
    checkpoint appears, checks that the run is unfinished (its process alive, no
    ``backbone.pt``, store status ``running``) and returns its run id. A signal sent next, not
    the end of training, is then what stops the process."""
    import signal
    import time

    deadline, runs = time.time() + timeout, home / "runs"
    while not (found := list(runs.glob("*/checkpoint.pt")) if runs.exists() else []):
        if proc.poll() is not None:
            pytest.fail(f"training ended before its first checkpoint: {proc.communicate()[1]}")
        if time.time() > deadline:
            pytest.fail("no checkpoint appeared")
        time.sleep(0.01)
    proc.send_signal(signal.SIGSTOP)
    checkpoint = found[0]
    run_id = checkpoint.parent.name
    assert proc.poll() is None, "the run exited before it could be interrupted"
    assert not (checkpoint.parent / "backbone.pt").exists(), "the run completed before the signal"
    from sslbench.db import Store

    with Store.open(f"sqlite:///{home / 'db' / 'sslbench.sqlite'}", create=False) as store:
        assert store.get_run(run_id).status == "running"
    return run_id


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


@pytest.fixture(scope="session")
def _slurm_daemons():
    """A real one-node Slurm cluster (2 CPUs, no GPU) for this test process, started from
    Debian's slurm-wlm and munge by :mod:`sslbench.bench.slurm_cluster` (its SLURM_CONF is this
    process's, and so the subprocesses', while it runs); stopped by pid at the end. Skipped,
    saying why, only where it cannot start: not root, or the packages are missing."""
    from sslbench.bench import slurm_cluster as cluster_module

    why = cluster_module.unavailable()
    if why is not None:
        pytest.skip(f"real-Slurm tests: {why}")
    with cluster_module.running(cpus=2) as cluster:
        yield cluster


@pytest.fixture
def slurm_cluster(_slurm_daemons, tmp_path_factory):
    """The cluster, for one test at a time across the xdist workers: the tests find their
    workers among the machine's processes by run id, the same tiny runs in two tests at once
    would take each other's, and two clusters number their jobs alike (the same rendezvous
    port for two task groups)."""
    with _session_lock(session_root(tmp_path_factory) / "slurm.lock"):
        yield _slurm_daemons
