"""``sslbench runs watch``: the queue and the progress of live runs, refreshed in place.

The view is a query (:func:`watch_rows`, plain records) and a renderer (:func:`watch_table`,
a rich Table); :func:`watch` refreshes it with ``rich.live.Live`` until every watched run has
ended (or Ctrl-C). Progress is the ``epoch`` metric's final value against the run's ``epochs``,
read from the summaries table (never the metric history). A run submitted to Slurm shows its
task's job id (its latest ``slurm:`` tag) and the job's state as the controller reports it.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from sslbench.db.models import RunStatus
from sslbench.runs.slurm import job_states, slurm_job

LIVE = (RunStatus.QUEUED, RunStatus.RUNNING)


def _cell(config: dict[str, Any], kind: str) -> str:
    if kind == "eval":
        source = config.get("source_run") or "random-init"
        return f"{config.get('protocol', '?')} of {source}"
    return (f"{config.get('method', '?')} {config.get('projector', '')} "
            f"d={config.get('dim', '?')} seed={config.get('seed', 0)}")


def watch_rows(store: Any, *, sweep: str | None = None, everything: bool = False
               ) -> list[dict[str, Any]]:
    """One record per run: the runs of ``sweep`` (by tag), else the live runs (all runs with
    ``everything``)."""
    if sweep is not None:
        records = store.runs_tagged(f"sweep:{sweep}")
    else:
        records = [r for r in store.find_runs() if everything or r.status in LIVE]
    finals = store.final_summaries([r.run_id for r in records])
    devices = {a.run_id: a.device for a in store.live_attempts()}
    jobs = {r.run_id: job for r in records if (job := slurm_job(r.tags))}
    states = job_states(list(jobs.values()))
    now = datetime.now(timezone.utc)
    rows = []
    for r in records:
        summary = finals.get(r.run_id, {})
        epochs = r.config.get("epochs") if r.kind == "pretrain" else None
        done = summary.get("epoch")
        progress = f"{int(done)}/{epochs}" if epochs and done == done and done is not None \
            else (f"0/{epochs}" if epochs else "")
        beat = (now - r.heartbeat_at).total_seconds() if r.heartbeat_at and r.status == \
            RunStatus.RUNNING else None
        rows.append({"run_id": r.run_id, "kind": r.kind, "cell": _cell(r.config, r.kind),
                     "status": r.status, "attempts": r.attempts, "device": devices.get(r.run_id),
                     "progress": progress, "online_top1": summary.get("online_top1"),
                     "heartbeat_s": beat, "slurm_job": jobs.get(r.run_id),
                     "slurm_state": _job_state(states, jobs.get(r.run_id))})
    return rows


def status_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in rows:
        out[row["status"]] = out.get(row["status"], 0) + 1
    return out


def watch_table(rows: list[dict[str, Any]], *, title: str = "") -> Any:
    """The rows as a rich Table, live runs first."""
    from rich.table import Table

    counts = status_counts(rows)
    caption = "  ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "no runs"
    table = Table(title=title or None, caption=caption, show_edge=False)
    slurm = any(row.get("slurm_job") for row in rows)
    for column in ("run", "kind", "cell", "status", "try", "device", "epoch", "online top-1",
                   "beat", *(["slurm job"] if slurm else [])):
        table.add_column(column, no_wrap=column in ("run", "status"))
    order = {RunStatus.RUNNING: 0, RunStatus.QUEUED: 1}
    for row in sorted(rows, key=lambda r: order.get(r["status"], 2)):
        top1 = row["online_top1"]
        beat = row["heartbeat_s"]
        table.add_row(row["run_id"], row["kind"], row["cell"], row["status"],
                      str(row["attempts"]), row["device"] or "", row["progress"],
                      "" if top1 is None or top1 != top1 else f"{top1:.1f}",
                      "" if beat is None else f"{beat:.0f} s ago",
                      *([_job_cell(row)] if slurm else []))
    return table


def _job_state(states: dict[str, str] | None, job: str | None) -> str | None:
    """The job's state; 'ended' when Slurm no longer knows it; None when Slurm cannot say."""
    if job is None or states is None:
        return None
    return states.get(job, "ended")


def _job_cell(row: dict[str, Any]) -> str:
    return " ".join(v for v in (row.get("slurm_job"), row.get("slurm_state")) if v)


def watch(store: Any, *, sweep: str | None = None, interval: float = 2.0, once: bool = False,
          console: Any = None) -> list[dict[str, Any]]:
    """Show the table, refreshed every ``interval`` s until no watched run is queued or
    running (or just once). Returns the last rows."""
    from rich.console import Console
    from rich.live import Live

    if console is None:
        console = Console()
        if not console.is_terminal:  # a pipe or a log file: do not squeeze to 80 columns
            console = Console(width=160)
    title = f"sweep {sweep}" if sweep else "live runs"
    rows = watch_rows(store, sweep=sweep)
    if once:
        console.print(watch_table(rows, title=title))
        return rows
    with Live(watch_table(rows, title=title), console=console, refresh_per_second=4) as live:
        while any(r["status"] in LIVE for r in rows):
            time.sleep(interval)
            rows = watch_rows(store, sweep=sweep)
            live.update(watch_table(rows, title=title))
    return rows
