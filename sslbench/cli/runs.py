"""``sslbench runs list|show|exec|stop|reap|watch``: the runs in the store and their lifecycle.

These commands open an existing store (``create=False``): inspecting or stopping runs never
creates an empty one. The work is done in :mod:`sslbench.runs` and :mod:`sslbench.report`.
"""

from __future__ import annotations

import typer

from sslbench.cli.common import Choices, Format, command_line, echo_json, open_store, runs_app


def _kinds() -> tuple[str, ...]:
    from sslbench.db import RUN_KINDS

    return RUN_KINDS


def _statuses() -> tuple[str, ...]:
    from sslbench.db import RUN_STATUSES

    return RUN_STATUSES


KINDS = Choices("--kind", _kinds)
STATUSES = Choices("--status", _statuses)


@runs_app.command("list")
def runs_list(
    kind: str | None = typer.Option(None, help="Only runs of this kind.", callback=KINDS.check),
    status: str | None = typer.Option(None, help="Only runs in this status.",
                                      callback=STATUSES.check),
    method: str | None = typer.Option(None, help="Only this method."),
    dataset: str | None = typer.Option(None, help="Only this dataset."),
    limit: int = typer.Option(100, help="Runs per page: the newest, listed oldest first (0: "
                              "every run)."),
    offset: int = typer.Option(0, help="Newest runs to skip (the page before: --offset 100)."),
    fmt: Format = "table",
) -> None:
    """The newest runs, a page at a time, with their status, main settings and final
    metrics."""
    from sslbench.config import require_positive
    from sslbench.errors import ConfigError
    from sslbench.report.runs import runs_list_frame, runs_list_json

    if limit:
        require_positive("limit", limit)
    if offset < 0:
        raise ConfigError(f"--offset must be >= 0, got {offset}")
    store = open_store(create=False)
    filters = dict(kind=kind, status=status, method=method, dataset=dataset)
    if fmt == "json":
        echo_json(runs_list_json(store, limit=limit or None, offset=offset, newest=True,
                                 **filters))
        return
    frame = runs_list_frame(store, limit=limit or None, offset=offset, newest=True, **filters)
    if frame.empty:
        typer.echo("no runs match: try `sslbench demo` or `sslbench train`" if not offset else
                   f"no runs before the newest {offset}: lower --offset")
        return
    from sslbench.report.render import render

    typer.echo(render(frame.set_index("run_id"), "table"))
    if limit and len(frame) == limit:
        total = store.count_runs(**filters)
        if total > offset + limit:
            typer.echo(f"runs {total - offset - limit + 1:,}-{total - offset:,} of {total:,}: "
                       f"the older ones with --offset {offset + limit}")


@runs_app.command("show")
def runs_show(
    run_id: str = typer.Argument(..., help="Run id (or a unique prefix)."),
    fmt: Format = "table",
) -> None:
    """One run: config, status, environment, final metrics, artifacts and evaluations."""
    from sslbench.report.runs import run_show_json

    data = run_show_json(open_store(create=False), run_id)
    if fmt == "json":
        echo_json(data)
    else:
        from sslbench.report.text import run_details

        typer.echo(run_details(data))


@runs_app.command("exec", hidden=True)
def runs_exec(run_id: str = typer.Argument(..., help="Run to execute.")) -> None:
    """Execute one stored run in this process (what a scheduler's worker runs)."""
    from sslbench.runs.worker import end_process, exec_run

    with open_store(create=False) as store:
        code = exec_run(store, run_id, command=command_line())
    end_process(code)


@runs_app.command("stop")
def runs_stop(
    run_ids: list[str] | None = typer.Argument(None, help="Only these runs (default: every "
                                               "scheduler and live run)."),
    wait: float = typer.Option(60.0, help="Seconds to wait for the runs to checkpoint."),
) -> None:
    """Stop schedulers and runs gracefully: they checkpoint and end as interrupted."""
    from sslbench.runs.control import stop

    store = open_store(create=False)
    ids = [store.resolve_run_id(r) for r in run_ids] if run_ids else None
    report = stop(store, run_ids=ids, wait_s=wait)
    typer.echo(f"asked {len(report.schedulers)} scheduler(s) to stop; sent SIGTERM to "
               f"{len(report.signalled)} run(s)")
    for run_id in report.elsewhere:
        typer.echo(f"  {run_id} runs on another host: run `sslbench runs stop {run_id}` there")
    if report.remaining:
        typer.echo(f"still running after {wait:g} s: {', '.join(report.remaining)}", err=True)
        raise typer.Exit(1)


@runs_app.command("reap")
def runs_reap(
    stale_after: float = typer.Option(300.0, help="Seconds without a heartbeat after which a "
                                      "run on another host is presumed dead."),
    fmt: Format = "table",
) -> None:
    """Find runs whose process died, mark them killed, re-queue those with attempts left."""
    from sslbench.runs.control import reap

    reaped = reap(open_store(create=False), stale_after_s=stale_after)
    if fmt == "json":
        echo_json([vars(r) for r in reaped])
        return
    if not reaped:
        typer.echo("no dead runs")
    for r in reaped:
        typer.echo(f"{r.run_id}: {r.reason}; "
                   f"{'re-queued' if r.requeued else 'out of attempts, left killed'}")


@runs_app.command("watch")
def runs_watch(
    sweep_name: str | None = typer.Option(None, "--sweep", help="Only this sweep's runs "
                                          "(default: every queued or running run)."),
    interval: float = typer.Option(2.0, help="Seconds between refreshes."),
    once: bool = typer.Option(False, "--once", help="Print the table once and exit."),
) -> None:
    """The queue and the progress of live runs, refreshed until they have all ended."""
    from sslbench.runs.watch import watch

    try:
        watch(open_store(create=False), sweep=sweep_name, interval=interval, once=once)
    except KeyboardInterrupt:
        pass
