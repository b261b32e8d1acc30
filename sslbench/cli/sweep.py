"""``sslbench sweep``: a grid of pretraining runs and their evaluations, queued in the store and
run by the local scheduler or submitted to Slurm.

Bad input is caught before the store is touched: a bad sweep file, devices that do not exist,
runs of more devices than the scheduler owns (or than the Slurm partition holds, or on a backend
that cannot start them) or an unreachable store queue nothing. The work is done in
:mod:`sslbench.runs`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from sslbench.cli.common import (
    BACKENDS,
    Format,
    SlurmFlags,
    app,
    command_line,
    device_pool,
    echo_json,
    open_store,
    retry_policy,
    slurm_options,
    store_url,
    with_backend_defaults,
)
from sslbench.errors import ConfigError


@app.command()
def sweep(
    file: str = typer.Argument(..., help="Sweep TOML file, or a shipped sweep: demo, "
                               "table-s5 (see sslbench/runs/sweeps/)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; queue nothing."),
    retry_failed: bool = typer.Option(False, "--retry-failed",
                                      help="Re-run runs that failed before."),
    set_: list[str] | None = typer.Option(None, "--set", metavar="KEY=VALUE",
                                          help="Replace a fixed value or a grid axis "
                                          "(repeatable), e.g. --set data_root=/data."),
    devices: str | None = typer.Option(None, help="CUDA devices the scheduler owns, e.g. "
                                       "0,1,2,3 (default: CPU workers)."),
    per_device: int | None = typer.Option(None, help="Runs at once on each device [1]."),
    workers: int | None = typer.Option(None, help="CPU workers when there is no GPU "
                                       "[min(4, cores)]."),
    devices_per_run: int | None = typer.Option(
        None, "--devices-per-run", help="Processes each pretraining run is trained with "
        "(torchrun: CPU slots, or whole GPUs); the global batch is split across them and the "
        "run id does not change. Same as --set devices_per_run=N [1]."),
    max_attempts: int | None = typer.Option(None, help="Attempts per run [3]."),
    transient: list[str] | None = typer.Option(None, "--transient", metavar="REGEX",
                                               help="Also retry errors matching this "
                                               "(repeatable)."),
    backend: str = typer.Option("local", help="Where the runs execute (slurm: a submitit "
                                "job array; submitit-local: the Slurm path on this machine).",
                                callback=BACKENDS.check),
    queue_only: bool = typer.Option(False, "--queue-only", help="Queue the runs and exit "
                                    "(then `sslbench sweep FILE` on each host works on them)."),
    slurm: SlurmFlags = None,
    fmt: Format = "table",
) -> None:
    """Run a grid of pretraining runs and their evaluations; re-running skips what is done."""
    from sslbench.runs.plan import apply_plan, build_plan, plan_rows, with_statuses
    from sslbench.runs.sweepfile import load_sweep

    sets = [*(set_ or []), *([f"devices_per_run={devices_per_run}"]
                             if devices_per_run is not None else [])]
    spec = load_sweep(file, sets)
    policy = retry_policy(spec, max_attempts, transient or [])
    options = slurm_options(spec, backend, slurm)
    spec = with_backend_defaults(spec, backend, options)
    pool = device_pool(spec, backend, devices, per_device, workers,
                       needed=not (dry_run or queue_only))
    resolved = build_plan(spec)  # every cell is checked before the store is touched
    _check_processes(resolved.processes, backend, pool, options)
    if dry_run:
        plan = with_statuses(resolved, _store_for_dry_run(), retry_failed=retry_failed)
        _show_plan(plan, plan_rows(plan), fmt, _sbatch_lines(plan, backend, options))
        return
    executor = None
    if backend != "local" and not queue_only:  # what only the cluster can tell, checked first
        from sslbench.runs.slurm import make_executor

        executor = make_executor(backend, _folder(spec), options, hold=backend == "slurm",
                                 processes=resolved.processes.values())
    store = open_store()
    from sslbench.runs.control import reap

    reap(store)
    plan = with_statuses(resolved, store, retry_failed=retry_failed)
    _check_processes(plan.processes, backend, pool, options)  # the counts runs recorded

    def queue() -> list[str]:
        return apply_plan(plan, store, max_attempts=policy.max_attempts,
                          command=command_line())

    if executor is not None and plan.queue:
        _submit(plan, store, spec, executor, backend, queue, policy, per_device or 1, fmt,
                options)
        return
    queued = queue()
    _show_plan(plan, None, fmt)
    if queue_only or not queued:
        if fmt == "json":
            echo_json({"sweep": spec.name, "queued": queued, "counts": plan.counts()})
        return
    _run_local(store, pool, policy, queued, fmt, plan.processes)


def _folder(spec: Any) -> Path:
    """The sweep's Slurm folder (task files and logs)."""
    from sslbench import paths

    return paths.home() / "slurm" / spec.name


def _sbatch_lines(plan: Any, backend: str, options: dict[str, Any]) -> list[str] | None:
    """What the Slurm submission of ``plan`` would pass to sbatch (None on other backends)."""
    if backend != "slurm":
        return None
    from sslbench.runs.sbatch import sbatch_lines, task_shape
    from sslbench.runs.slurm import require_submitit, task_arrays

    require_submitit()
    arrays = task_arrays(plan)
    if len(arrays) == 1 and arrays[0][0] == 1:
        return sbatch_lines(options, _folder(plan.spec), len(arrays[0][1]))
    lines = []
    for processes, groups in arrays:  # one job array per task shape
        lines.append(f"# {len(groups)} task(s) of {processes} process(es):")
        lines += sbatch_lines(options, _folder(plan.spec), len(groups),
                              shape=task_shape(options, processes))
    return lines


def _check_processes(processes: dict[str, int], backend: str, pool: Any,
                     options: dict[str, Any] | None = None) -> None:
    """Runs of several processes fit the backend and this scheduler's devices (ConfigError)."""
    most = max(processes.values(), default=1)
    if most == 1:
        return
    if backend == "slurm":
        from sslbench.runs.sbatch import task_shape

        for count in set(processes.values()):
            task_shape(options or {}, count)  # GPUs that fill whole nodes
        return
    if backend != "local":
        raise ConfigError(f"devices_per_run {most}: --backend {backend} starts one process "
                          "per task: use --backend slurm (one task per process) or local "
                          "(torchrun)")
    if pool is not None and most > pool.max_devices_per_run:
        owned = (f"{pool.total_slots} CPU slot(s) (--workers N)" if pool.is_cpu
                 else f"{len(pool.devices)} GPU(s) (--devices)")
        raise ConfigError(f"devices_per_run {most} is more than the {owned} this scheduler "
                          f"owns: run in fewer processes (--devices-per-run N) or give it more")


def _store_for_dry_run() -> Any:
    """The store if it exists; None for a missing SQLite file (a dry run creates no file; on a
    server it may create the schema of an empty database, which queues nothing)."""
    from sslbench.db import resolve_url
    from sslbench.db.engine import parse_url, sqlite_path

    parsed = parse_url(resolve_url(store_url()))
    if parsed.get_backend_name() != "sqlite":
        return open_store(create=True)
    path = sqlite_path(parsed)
    if path is not None and not Path(path).is_file():
        return None
    return open_store(create=False)


def _show_plan(plan: Any, rows: list | None, fmt: str,
               sbatch: list[str] | None = None) -> None:
    counts = plan.counts()
    if fmt == "json":
        if rows is not None:
            echo_json({"sweep": plan.spec.name, "counts": counts, "runs": rows,
                       **({"sbatch": sbatch} if sbatch is not None else {})})
        return
    if rows is not None:
        from sslbench.report.text import records_table

        typer.echo(records_table(rows))
    if sbatch is not None:
        typer.echo("sbatch options (submitted held, released once the runs are queued):")
        for line in sbatch:
            typer.echo(f"  {line}")
    text = ", ".join(f"{n} {a}" for a, n in sorted(counts.items()))
    typer.echo(f"sweep {plan.spec.name}: {len(plan.runs)} runs ({text})"
               + (" [dry run: nothing queued]" if rows is not None else ""))
    if counts.get("skip-failed"):
        typer.echo(f"{counts['skip-failed']} run(s) failed before and are skipped: add "
                   "--retry-failed to run them again")


def _run_local(store: Any, pool: Any, policy: Any, queue: list[str], fmt: str,
               processes: dict[str, int]) -> None:
    from sslbench.runs.scheduler import LocalScheduler

    echo = typer.echo if fmt == "table" else (lambda _msg: None)
    report = LocalScheduler(store, pool, policy=policy, echo=echo,
                            processes=processes).run(queue)
    if fmt == "json":
        echo_json({"outcomes": report.outcomes, "reasons": report.reasons,
                   "launched": report.launched, "retried": report.retried,
                   "wall_s": report.wall_s, "stopped": report.stopped})
    else:
        parts = [f"{n} {status}" for status, n in sorted(report.counts().items())]
        typer.echo(f"sweep done in {report.wall_s:.1f} s: {', '.join(parts)} "
                   f"({report.launched} attempts, {report.retried} retries)")
        for run_id, status in report.outcomes.items():
            if status != "completed":
                typer.echo(f"  {run_id} {status}: {report.reasons.get(run_id, '')}")
    if report.stopped:
        typer.echo("stopped: re-run the same sweep to resume", err=True)
    if any(status != "completed" for status in report.outcomes.values()):
        raise typer.Exit(1)


def _submit(plan: Any, store: Any, spec: Any, executor: Any, backend: str, queue: Any,
            policy: Any, per_device: int, fmt: str, options: dict[str, Any]) -> None:
    from sslbench.runs.slurm import submit_sweep

    jobs = submit_sweep(plan, store, executor, held=backend == "slurm", queue=queue,
                        max_attempts=policy.max_attempts, transient=policy.transient,
                        per_device=per_device, options=options)
    if backend == "slurm" and store.url.startswith("sqlite"):
        typer.echo(f"warning: the store {store.display_url} is a SQLite file: keep it off "
                   "network filesystems, or use PostgreSQL (--db postgresql+psycopg://...) "
                   "for tasks on many nodes", err=True)
    _show_plan(plan, None, fmt)
    ids = [job.job_id for job in jobs]
    folder = _folder(spec)
    if fmt == "json":
        echo_json({"sweep": spec.name, "jobs": ids, "folder": str(folder)})
    else:
        typer.echo(f"submitted {len(ids)} task(s): {', '.join(ids)} (logs in {folder}); "
                   f"follow them with `sslbench runs watch --sweep {spec.name}`")
