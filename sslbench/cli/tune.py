"""``sslbench tune``: an Optuna study over train options whose trials are runs in the store.

Everything the spec says is checked before the store is touched (its space, its objective, the
base options at the corners of the space), and a study that exists with another space is
refused before a trial is asked. The work is done in :mod:`sslbench.runs.tune`.
"""

from __future__ import annotations

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
    with_backend_defaults,
)
from sslbench.errors import ConfigError


@app.command()
def tune(
    file: str = typer.Argument(..., help="Tuning spec (TOML), or a shipped one "
                               "(see sslbench/runs/studies/)."),
    trials: int | None = typer.Option(None, "--trials", help="Trials the study holds when "
                                      "done, counting earlier runs of it [the spec's trials; "
                                      "grid: every point]."),
    timeout: float | None = typer.Option(None, "--timeout", help="Seconds after which no new "
                                         "trial starts (running ones finish)."),
    set_: list[str] | None = typer.Option(None, "--set", metavar="KEY=VALUE",
                                          help="Replace a [base] value (repeatable)."),
    devices: str | None = typer.Option(None, help="CUDA devices the scheduler owns, e.g. "
                                       "0,1 (default: CPU workers)."),
    per_device: int | None = typer.Option(None, help="Trials at once on each device [1]."),
    workers: int | None = typer.Option(None, help="CPU workers (trials at once) when there is "
                                       "no GPU [min(4, cores)]."),
    max_attempts: int | None = typer.Option(None, help="Attempts per run [3]."),
    retry_failed: bool = typer.Option(False, "--retry-failed",
                                      help="Re-run a trial's run that failed before."),
    backend: str = typer.Option("local", help="Where trials run (slurm: submitit job arrays; "
                                "submitit-local: the Slurm path on this machine).",
                                callback=BACKENDS.check),
    slurm: SlurmFlags = None,
    fmt: Format = "table",
) -> None:
    """Tune train options with Optuna; every trial is a run, a killed study resumes."""
    from sslbench.runs.tune import check_space, check_study
    from sslbench.runs.tunespec import load_tune

    spec = load_tune(file, set_ or [])
    size = _study_size(spec, trials)
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, got {timeout}")
    policy = retry_policy(spec, max_attempts, [])
    options = slurm_options(spec, backend, slurm)
    spec = with_backend_defaults(spec, backend, options)
    pool = device_pool(spec, backend, devices, per_device, workers, needed=True)
    check_space(spec)  # the base at the corners of the space: before the store is touched
    executor = None
    if backend != "local":
        from sslbench import paths
        from sslbench.runs.slurm import make_executor

        executor = make_executor(backend, paths.home() / "slurm" / f"tune-{spec.name}", options)
    store = open_store()
    check_study(spec, store.url)
    from sslbench.runs.control import reap

    reap(store)
    echo = typer.echo if fmt == "table" else (lambda _msg: None)
    if backend == "local":
        feed, stopped = _run_local(spec, store, pool, policy, size, timeout, echo, retry_failed)
    else:
        feed, stopped = _run_submitit(spec, store, executor, backend, policy, size, timeout,
                                      echo, retry_failed, per_device or 1,
                                      int(options.get("array_parallelism", 0)) or 4)
    _summarise(spec, feed, fmt, stopped)


def _study_size(spec: Any, trials: int | None) -> int:
    size = trials if trials is not None else spec.trials
    if spec.sampler == "grid":
        size = min(size or spec.grid_size(), spec.grid_size())
    if size is None:
        raise ConfigError(f"{spec.path}: how many trials? pass --trials N or put trials = N in "
                          "the spec")
    if size < 1:
        raise ConfigError(f"--trials must be >= 1, got {size}")
    return size


def _deadline(timeout: float | None) -> float | None:
    import time

    return None if timeout is None else time.monotonic() + timeout


def _run_local(spec: Any, store: Any, pool: Any, policy: Any, size: int, timeout: float | None,
               echo: Any, retry_failed: bool) -> tuple[Any, bool]:
    from sslbench.runs.scheduler import LocalScheduler
    from sslbench.runs.tune import StudyFeed, open_study

    scheduler = LocalScheduler(store, pool, policy=policy, echo=echo)
    feed = StudyFeed(spec, open_study(spec, store.url), store, trials=size,
                     deadline=_deadline(timeout), slots=pool.total_slots,
                     driver=scheduler.scheduler_id, max_attempts=policy.max_attempts,
                     command=command_line(), echo=echo, retry_failed=retry_failed)
    report = scheduler.run([], feed=feed)
    return feed, report.stopped


def _run_submitit(spec: Any, store: Any, executor: Any, backend: str, policy: Any, size: int,
                  timeout: float | None, echo: Any, retry_failed: bool,
                  per_device: int, slots: int) -> tuple[Any, bool]:
    from sslbench.runs.scheduler import new_scheduler_id
    from sslbench.runs.tune import StudyFeed, drive_submitit, open_study

    driver = new_scheduler_id(backend)
    feed = StudyFeed(spec, open_study(spec, store.url), store, trials=size,
                     deadline=_deadline(timeout), slots=slots, driver=driver,
                     max_attempts=policy.max_attempts, command=command_line(), echo=echo,
                     retry_failed=retry_failed)
    stopped = drive_submitit(feed, store, executor, driver=driver, backend=backend,
                             policy=policy, per_device=per_device, echo=echo)
    return feed, stopped


def _summarise(spec: Any, feed: Any, fmt: str, stopped: bool) -> None:
    from sslbench.runs.tune import best_trials, study_counts

    counts, best = study_counts(feed.study), best_trials(feed.study, limit=5)
    if fmt == "json":
        echo_json({"study": spec.name, "counts": counts, "told": feed.told,
                   "reused": feed.reused, "best": best, "stopped": stopped})
    else:
        text = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        typer.echo(f"study {spec.name}: {text} (this run told {sum(feed.told.values())}, "
                   f"{feed.reused} reused)")
        if best:
            top = best[0]
            params = ", ".join(f"{p.name}={top[p.name]}" for p in spec.space)
            typer.echo(f"best: trial {top['trial']}, {spec.metric} = {top['value']:.4g} "
                       f"({params}; run {top['run_id']})")
    if stopped:
        typer.echo("stopped: re-run the same tune to resume the study", err=True)
        raise typer.Exit(1)
