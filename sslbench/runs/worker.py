"""One worker process: ``python -m sslbench runs exec RUN_ID`` runs one stored run.

The scheduler has already claimed the run (status 'running', attempt *n* open, device slot
reserved) and set this process's ``CUDA_VISIBLE_DEVICES`` and thread counts. The worker loads
the stored config with ``from_dict`` (its hash must still be the run id), calls ``pretrain`` or
``evaluate`` -- which adopt attempt *n* -- and heartbeats from a side thread meanwhile, so the
reaper can tell a live run on another host from a dead one. A failure that happens before
``pretrain``/``evaluate`` could record it (a missing dataset, a changed config format) is
recorded here. Exit codes: 0 completed, 1 failed, 3 interrupted (checkpointed, resumable),
4 pruned by a tuning study (checkpointed, resumable: see :mod:`sslbench.runs.tune`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from sslbench import paths
from sslbench.db.heartbeat import HEARTBEAT_S, Heartbeat
from sslbench.db.models import RunStatus
from sslbench.errors import ConfigError, SSLBenchError

EXIT_COMPLETED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_PRUNED = 0, 1, 3, 4


def worker_command(run_id: str) -> list[str]:
    """The command line of a worker for ``run_id`` (this Python, this sslbench)."""
    return [sys.executable, "-m", "sslbench", "runs", "exec", run_id]


def distributed_command(command: list[str], processes: int) -> list[str]:
    """``command`` (``python ARGS...``) started as ``processes`` processes on this host by
    torchrun's agent, which gives each its RANK / WORLD_SIZE / LOCAL_RANK. ``--standalone``:
    the agent binds its rendezvous to a free port itself (localhost:0), so two runs started at
    once cannot race for a port chosen beforehand. ``--max-restarts 0``: when one process ends
    badly the agent stops the others and exits; the scheduler decides about another attempt."""
    return [command[0], "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
            "--nproc-per-node", str(processes), "--max-restarts", "0", *command[1:]]


def child_pids(pid: int) -> list[int]:
    """The direct children of process ``pid`` (Linux /proc; [] elsewhere). torchrun starts
    each of its processes in a session of its own, so a signal to the agent's process group
    does not reach them: the scheduler signals them by pid."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()  # after "pid (comm) "
        if len(fields) > 1 and fields[1] == str(pid):
            out.append(int(stat.parent.name))
    return sorted(out)


def worker_environ(store_url: str, extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment plus what a worker needs: the store (in the environment, not
    on the command line, where a password would show in ``ps``), the home folder, an import path
    that finds this sslbench even when it is not installed, unbuffered logs, and ``extra``."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env.update(SSLBENCH_DB=store_url, SSLBENCH_HOME=str(paths.home()), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def attempt_log(run_id: str, attempt: int) -> Path:
    """``$SSLBENCH_HOME/runs/<run_id>/attempt-<n>.log``."""
    return paths.run_dir(run_id) / f"attempt-{attempt}.log"


def spawn(command: list[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen:
    """Start a worker in its own session (so a stop signals its whole process group and a
    terminal's Ctrl-C reaches only the scheduler), output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=dict(env), start_new_session=True)


def log_tail(path: str | Path | None, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file ("" if unreadable)."""
    if not path:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def root_cause_exit(log_path: str | Path, default: int | None) -> int | None:
    """The exit code of the process that failed first in a torchrun group, as its agent
    prints it at the end of the log ("Root Cause ... exitcode : -9"), else ``default``."""
    import re

    text = log_tail(log_path, lines=200)
    found = re.search(r"exitcode\s*:\s*(-?\d+)", text[text.rfind("Root Cause"):]) \
        if "Root Cause" in text else None
    return int(found.group(1)) if found else default


def end_process(code: int) -> NoReturn:
    """End this worker with ``code`` without the interpreter's teardown, which frees every
    module and object of torch one by one (about 1 s, on the critical path of every run: the
    scheduler starts the next run on this slot only once the worker has exited).

    Nothing is lost by it; the caller calls it only after ``exec_run`` returned, so the run's
    end is committed in the store and the store closed, the checkpoint and backbone files
    written and closed by their ``with`` blocks, the heartbeat and metrics threads joined. What
    the teardown would still do that matters is done here: the atexit handlers (logging's
    flush, multiprocessing's join of its children) and the flush of stdout and stderr (the
    attempt's log). Only a worker its scheduler started ends so (never a ``runs exec`` run in
    another program's process); one whose thread still runs, or a rank of a process group
    (whose peers and torch.distributed see it end), gets the ordinary exit instead."""
    alone = threading.main_thread() is threading.current_thread() and not any(
        t.is_alive() and not t.daemon for t in threading.enumerate()
        if t is not threading.current_thread())
    if (not alone or _claimed_attempt() is None
            or int(os.environ.get("WORLD_SIZE", "1")) > 1):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _load_config(record: Any) -> Any:
    from sslbench.config import EvalConfig, TrainConfig, from_dict

    cls = TrainConfig if record.kind == "pretrain" else EvalConfig
    cfg = from_dict(cls, record.config)
    if cfg.run_id != record.run_id:
        raise ConfigError(f"the stored config of run {record.run_id} now hashes to {cfg.run_id} "
                          "(this sslbench resolves configs differently): re-run its sweep or "
                          "train command to queue it under its new id")
    return cfg


def _is_main() -> bool:
    """Whether this process is rank 0 of its torchrun group (or runs alone)."""
    from sslbench.train.distributed import from_env

    return from_env().is_main


def _record_failure(store: Any, run_id: str, error: str, failure_class: str) -> None:
    """Record a failure that ``pretrain``/``evaluate`` did not (the run is still running);
    under torchrun only rank 0 writes the run."""
    if not _is_main():
        return
    record = store.get_run(run_id)
    if record.status == RunStatus.RUNNING and record.pid in (None, os.getpid()):
        store.end_attempt(run_id, record.attempts, RunStatus.FAILED, error=error,
                          failure_class=failure_class)


def _claimed_attempt() -> int | None:
    """The attempt this worker's scheduler claimed for it (``SSLBENCH_ATTEMPT``), if any: the
    one attempt of a running run this process may adopt instead of being refused."""
    text = os.environ.get("SSLBENCH_ATTEMPT", "")
    return int(text) if text.isdigit() else None


def exec_run(store: Any, run_id: str, *, command: list[str],
             heartbeat_s: float = HEARTBEAT_S) -> int:
    """Run (or resume, or reuse) one stored run in this process; returns the exit code."""
    # The run's own recorded thread count applies inside pretrain/evaluate (sslbench.numerics);
    # OMP_NUM_THREADS from the scheduler only bounds what this process starts with.
    # Slurm warns every process of a job step (SIGUSR2) before a timeout; the submitit task
    # above this worker handles it and asks this worker to checkpoint with SIGTERM.
    if hasattr(signal, "SIGUSR2"):
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    record = store.get_run(run_id)
    claim = _claimed_attempt()
    # Under torchrun rank 0 alone touches the run: the other ranks do not heartbeat.
    beating = Heartbeat(store.url, record.run_id, heartbeat_s) if _is_main() else \
        contextlib.nullcontext()
    with beating:
        try:
            cfg = _load_config(record)
            if record.kind == "pretrain":
                from sslbench.runs.tune import pruning_gate
                from sslbench.train.loop import pretrain

                status: str = pretrain(cfg, store, command=command, progress=False, claim=claim,
                                       after_epoch=pruning_gate(store, record)).status
            else:
                from sslbench.evaluate.run import evaluate

                status = evaluate(cfg, store, command=command, claim=claim).status
        except SSLBenchError as err:
            _record_failure(store, record.run_id, str(err), "input")
            raise
        except BaseException:
            _record_failure(store, record.run_id, traceback.format_exc(), "error")
            raise
    exits: dict[str, int] = {RunStatus.COMPLETED: EXIT_COMPLETED,
                             RunStatus.INTERRUPTED: EXIT_INTERRUPTED,
                             RunStatus.PRUNED: EXIT_PRUNED}
    return exits.get(status, EXIT_FAILED)
