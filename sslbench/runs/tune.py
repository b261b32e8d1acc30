"""``sslbench tune``: an Optuna study whose trials are ordinary runs in the store.

The study lives in the store's own database (Optuna's RDB storage on the same SQLAlchemy URL, so
SQLite or PostgreSQL hold runs and studies together). Each trial is a point of the spec's space
laid over its ``[base]`` options: a pretraining run whose id is its config hash, plus the
evaluation that the objective names, planned exactly as a sweep cell is
(:func:`sslbench.runs.plan.build_plan`). Hence:

- a trial whose configuration was already run is *reused*: its stored value is told at once,
  with its per-epoch curve reported first so the pruner knows it;
- trials run through the local scheduler, as many at once as it has slots (the scheduler asks
  :class:`StudyFeed` for the next trial whenever one ends), or as Slurm job arrays;
- the pruner runs where the trial trains: after each epoch the worker reports the epoch's metric
  to the trial and stops the run as 'pruned' when the pruner says so (:func:`pruning_gate`), so
  it works the same on this machine and on Slurm nodes; a pruned run keeps its checkpoint;
- a killed ``tune`` loses nothing: its trials stay 'running' in the study, owned by a driver
  (the scheduler id) that is no longer alive, and the next ``tune`` of the study adopts them --
  resuming their runs from their checkpoints -- before it asks for new ones. Two live ``tune``
  processes share a study: each drives its own trials and counts the other's.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sslbench.db.models import TERMINAL_STATUSES, RunStatus
from sslbench.errors import ConfigError
from sslbench.runs.plan import Plan, apply_plan, build_plan, with_statuses
from sslbench.runs.sweepfile import SweepSpec
from sslbench.runs.tunespec import Param, TuneSpec

if TYPE_CHECKING:
    import optuna

#: The study user attribute that holds the spec's signature (see ``TuneSpec.signature``).
SPEC_ATTR = "sslbench_spec"
#: Trial user attributes: the pretraining run, the run whose metric is the objective, and the
#: driver (scheduler id) that sees the trial through.
RUN_ATTR, OBJECTIVE_ATTR, DRIVER_ATTR = "run_id", "objective_run", "driver"
TAG_PREFIX = "tune:"


# ------------------------------------------------------------------------ the study itself

def storage(url: str) -> Any:
    """Optuna's RDB storage on the store's database (quiet; SQLite waits for its lock).

    Opening it creates Optuna's tables where there are none, which two processes starting
    together would race on: under the store's own lock file for SQLite, and by trying again
    (the other process has created them by then) on a server."""
    import optuna
    from sqlalchemy.exc import DBAPIError

    from sslbench.db.engine import connect_url, file_lock, parse_url, sqlite_path

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = connect_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    path = sqlite_path(parse_url(url)) if url.startswith("sqlite") else None
    if path is not None:
        kwargs["connect_args"] = {"timeout": 60}
        with file_lock(path.with_name(path.name + ".lock")):
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except DBAPIError:
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def existing_signature(url: str, name: str) -> dict[str, Any] | None:
    """The spec signature of study ``name`` in the store, or None when there is no such study.
    Opening the storage creates Optuna's (empty) tables in a database that has none."""

    store = storage(url)
    try:
        study_id = store.get_study_id_from_name(name)
    except KeyError:
        return None
    text = store.get_study_user_attrs(study_id).get(SPEC_ATTR)
    return json.loads(text) if isinstance(text, str) else {}


def check_study(spec: TuneSpec, url: str) -> None:
    """Refuse a spec whose study exists with another space, objective or base (one line)."""
    found = existing_signature(url, spec.name)
    if found is None:
        return
    mine = _canonical(spec.signature())
    if found != mine:
        what = next((k for k in mine if mine[k] != found.get(k)), "spec")
        raise ConfigError(f"study {spec.name!r} already exists in the store with a different "
                          f"{what} ({json.dumps(found.get(what), sort_keys=True)}): give this "
                          "spec another name (name = \"...\"), or restore the study's spec")


def _canonical(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True))


def pruner_of(signature: dict[str, Any]) -> Any:
    """The Optuna pruner a spec (its signature's ``pruner``) asks for."""
    import optuna

    p = signature["pruner"]
    if p["name"] == "median":
        # Steps are epochs done (1, 2, ...), and Optuna may prune from step n_warmup_steps on.
        return optuna.pruners.MedianPruner(n_startup_trials=p["startup_trials"],
                                           n_warmup_steps=p["min_epochs"])
    if p["name"] == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=p["min_epochs"],
                                                      reduction_factor=p["reduction_factor"])
    return optuna.pruners.NopPruner()


def sampler_of(spec: TuneSpec, drawn: int = 0) -> Any:
    """The sampler, seeded with the spec's seed plus the trials already ``drawn``: a resumed
    study draws new points instead of replaying the first run's. The grid is not a sampler
    here: its points are queued in the study (:func:`open_study`), so a random sampler only
    stands by."""
    import optuna

    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=spec.seed + drawn)
    return optuna.samplers.RandomSampler(seed=spec.seed + drawn)


def grid_points(spec: TuneSpec) -> list[dict[str, Any]]:
    """Every point of a grid spec, in an order shuffled by the spec's seed (as Optuna's
    ``GridSampler`` does). A pruner ranks each trial against those that reached its rung
    before it, and the first trials of a study pass every rung unopposed: in file order they
    would all share the first key's first value, whatever it is worth."""
    import itertools
    import random

    names = [p.name for p in spec.space]
    points = [dict(zip(names, combo))
              for combo in itertools.product(*(p.choices for p in spec.space))]
    random.Random(spec.seed).shuffle(points)
    return points


def open_study(spec: TuneSpec, url: str) -> optuna.Study:
    """Create the study, or load it (after :func:`check_study` said it matches). The spec's
    start points are queued first, then (grid sampler) every point of the grid, each once per
    study: Optuna hands queued points out one at a time, also to several ``tune`` processes."""
    import optuna

    study = optuna.create_study(study_name=spec.name, storage=storage(url),
                                direction=cast(Any, spec.direction),
                                pruner=pruner_of(spec.signature()),
                                load_if_exists=True)
    study.sampler = sampler_of(spec, drawn=len(study.get_trials(deepcopy=False)))
    if SPEC_ATTR not in study.user_attrs:
        study.set_user_attr(SPEC_ATTR, json.dumps(spec.signature(), sort_keys=True))
    points = [*spec.start, *(grid_points(spec) if spec.sampler == "grid" else [])]
    for point in points:
        study.enqueue_trial(point, skip_if_exists=True)
    return study


def suggest(trial: optuna.Trial, param: Param) -> Any:
    if param.kind == "choice":
        return trial.suggest_categorical(param.name, list(param.choices))
    if param.kind == "int":
        return trial.suggest_int(param.name, int(param.low or 0), int(param.high or 0),
                                 step=int(param.step or 1), log=param.log)
    return trial.suggest_float(param.name, float(param.low or 0.0), float(param.high or 0.0),
                               step=param.step, log=param.log)


# ------------------------------------------------------------------------- trials as runs

def as_sweep(spec: TuneSpec, params: dict[str, Any]) -> SweepSpec:
    """One trial as a one-cell sweep: the base options fixed, the trial's point as the cell."""
    return SweepSpec(name=spec.name, path=spec.path, description=spec.description,
                     fixed=dict(spec.base), grid={k: [v] for k, v in params.items()},
                     protocols=(spec.protocol,) if spec.protocol else (),
                     eval_options=dict(spec.eval_options), scheduler=dict(spec.scheduler),
                     slurm=dict(spec.slurm), kind="tune", defaults=dict(spec.defaults))


def check_space(spec: TuneSpec) -> None:
    """Resolve the corners of the space before anything is written, so a base that is wrong for
    every trial is refused now, not once per trial."""
    for corner in ("low", "high"):
        point = {p.name: (p.choices[0 if corner == "low" else -1] if p.kind == "choice"
                          else getattr(p, corner)) for p in spec.space}
        build_plan(as_sweep(spec, point))


def objective_value(store: Any, spec: TuneSpec, run_id: str) -> float | None:
    """The objective's value from the run that holds it (its final value), or None."""
    value = store.summary(run_id).get(spec.metric)
    return value if value is not None and math.isfinite(value) else None


def epoch_curve(store: Any, run_id: str, metric: str) -> list[tuple[int, float]]:
    """(epoch, value) of a pretraining run's per-epoch ``metric``, epoch order."""
    frame = store.metrics_frame(run_id, metric)
    if frame.empty or "epoch" not in frame:
        return []
    rows = frame.dropna(subset=["epoch", "value"]).sort_values("step")
    return [(int(e), float(v)) for e, v in zip(rows["epoch"], rows["value"])]


# ---------------------------------------------------------------------- the worker's side

def pruning_gate(store: Any, record: Any) -> Callable[[int, dict[str, float]], str | None] | None:
    """The pruner of every study that drives this run as a live trial, or None (no study).

    Called by the worker after each epoch: reports the epoch's metric to each trial and stops
    the run when every one of them should be pruned. The study is read from the store each
    time, so a trial told meanwhile (or a study deleted) just stops pruning."""
    names = [t[len(TAG_PREFIX):] for t in record.tags if t.startswith(TAG_PREFIX)]
    if not names:
        return None
    url, run_id = store.url, record.run_id

    def gate(epoch: int, metrics: dict[str, float]) -> str | None:
        import optuna

        verdicts: list[str] = []
        for name in names:
            try:
                study = optuna.load_study(study_name=name, storage=storage(url))
            except KeyError:
                continue
            signature = json.loads(study.user_attrs.get(SPEC_ATTR, "{}") or "{}")
            if not signature:
                continue
            metric = signature["pruner"]["metric"]
            value = metrics.get(metric)
            if value is None or not math.isfinite(value):
                return None
            study.pruner = pruner_of(signature)
            for frozen in study.get_trials(deepcopy=False,
                                           states=(optuna.trial.TrialState.RUNNING,)):
                if frozen.user_attrs.get(RUN_ATTR) != run_id:
                    continue
                trial = _live_trial(study, frozen)
                trial.report(value, epoch)
                if not trial.should_prune():
                    return None
                verdicts.append(f"study {name} trial {frozen.number}: {metric} {value:.4g} "
                                f"after epoch {epoch}")
        return ("pruned by " + "; ".join(verdicts)) if verdicts else None
    return gate


def _live_trial(study: Any, frozen: Any) -> Any:
    """A running trial of another process as a ``Trial`` this one can report to and tell.
    Optuna's distributed pattern; it names the trial by its storage id, which FrozenTrial keeps
    in a private field (there is no public accessor)."""
    import optuna

    return optuna.trial.Trial(study, frozen._trial_id)


# ------------------------------------------------------------------------ the driver's side

@dataclass
class _Live:
    """A trial this process sees through."""

    trial: Any  # optuna.Trial
    run_id: str
    objective_run: str


class StudyFeed:
    """Feeds a study's trials to the scheduler (:class:`sslbench.runs.scheduler.Feed`).

    ``trials``: the study's size (finished trials of every driver, plus running ones, count);
    ``deadline``: a ``time.monotonic()`` after which no trial is asked; ``slots``: how many of
    this driver's trials run at once."""

    def __init__(self, spec: TuneSpec, study: Any, store: Any, *, trials: int,
                 deadline: float | None, slots: int, driver: str, max_attempts: int,
                 command: list[str], echo: Callable[[str], None] = lambda _m: None,
                 retry_failed: bool = False) -> None:
        self.spec, self.study, self.store = spec, study, store
        self.trials, self.deadline, self.slots = trials, deadline, slots
        self.driver, self.max_attempts, self.command = driver, max_attempts, command
        self.echo, self.retry_failed = echo, retry_failed
        self.live: dict[int, _Live] = {}
        self.plans: list[Plan] = []  # every plan queued (the Slurm driver submits them)
        self.told: dict[str, int] = {}  # outcome -> trials this process told
        self.reused = 0
        self._adopted = False
        self._no_more = False

    # ---------------------------------------------------------------------------- Feed

    @property
    def exhausted(self) -> bool:
        return self._no_more and not self.live

    def refill(self, pending: list[str]) -> None:
        if not self._adopted:
            self._adopted = True
            self._adopt_orphans(pending)
        while not self._no_more and len(self.live) < self.slots:
            if not self._may_ask():
                self._no_more = True
                break
            self._ask(pending)

    def ended(self, run_id: str, outcome: str) -> None:
        for number, live in list(self.live.items()):
            if run_id == live.objective_run or (run_id == live.run_id
                                                and outcome != RunStatus.COMPLETED):
                self._finish(number, live)

    # ------------------------------------------------------------------------- trials

    def _counts(self) -> tuple[int, int]:
        import optuna

        states = [t.state for t in self.study.get_trials(deepcopy=False)]
        running = sum(s == optuna.trial.TrialState.RUNNING for s in states)
        return len(states) - running - sum(s == optuna.trial.TrialState.WAITING for s in states), \
            running

    def _may_ask(self) -> bool:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return False
        done, running = self._counts()
        return done + running < self.trials

    def _ask(self, pending: list[str]) -> None:
        trial = self.study.ask()
        trial.set_user_attr(DRIVER_ATTR, self.driver)
        params = {p.name: suggest(trial, p) for p in self.spec.space}
        self._start(trial, params, pending, adopted=False)

    def _adopt_orphans(self, pending: list[str]) -> None:
        """Trials left running by a driver that is gone (a killed ``tune``): see them through."""
        import optuna

        live = {info.scheduler_id for info in self.store.schedulers()}
        for frozen in self.study.get_trials(deepcopy=False,
                                            states=(optuna.trial.TrialState.RUNNING,)):
            owner = frozen.user_attrs.get(DRIVER_ATTR)
            if owner == self.driver or owner in live:
                continue
            trial = _live_trial(self.study, frozen)
            trial.set_user_attr(DRIVER_ATTR, self.driver)
            self.echo(f"adopt  trial {frozen.number} (its driver {owner} is gone)")
            self._start(trial, dict(frozen.params), pending, adopted=True)

    def _start(self, trial: Any, params: dict[str, Any], pending: list[str], *,
               adopted: bool) -> None:
        try:
            plan = with_statuses(build_plan(as_sweep(self.spec, params)), self.store,
                                 retry_failed=self.retry_failed)
        except ConfigError as err:  # this point of the space cannot run (e.g. batch > data)
            self._tell(trial, "fail", f"does not resolve: {err}")
            return
        pretrain = plan.runs[0]
        objective = plan.runs[-1] if self.spec.protocol else pretrain
        trial.set_user_attr(RUN_ATTR, pretrain.run_id)
        trial.set_user_attr(OBJECTIVE_ATTR, objective.run_id)
        queue = apply_plan(plan, self.store, max_attempts=self.max_attempts,
                           command=self.command)
        self.plans.append(plan)
        live = _Live(trial, pretrain.run_id, objective.run_id)
        label = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
        if objective.run_id not in queue and pretrain.run_id not in queue:
            self.reused += objective.status == RunStatus.COMPLETED
            self.echo(f"trial {trial.number} [{label}]: run {pretrain.run_id} is "
                      f"{objective.status}, reused")
            self._report_curve(live)
            self._finish(trial.number, live)
            return
        if pretrain.status not in ("new", RunStatus.QUEUED):
            self._report_curve(live)  # a resumed run: its epochs so far
        self.echo(f"trial {trial.number} [{label}]: run {pretrain.run_id}"
                  + (" (adopted)" if adopted else ""))
        self.live[trial.number] = live
        pending.extend(run_id for run_id in queue if run_id not in pending)

    def _report_curve(self, live: _Live) -> None:
        metric = self.spec.prune_metric
        for epoch, value in epoch_curve(self.store, live.run_id, metric):
            try:
                live.trial.report(value, epoch)
            except Exception:  # noqa: BLE001 - a step reported before (an adopted trial)
                pass

    def _finish(self, number: int, live: _Live) -> None:
        self.live.pop(number, None)
        record = self.store.get_run(live.objective_run)
        pretrain = self.store.get_run(live.run_id)
        if pretrain.status == RunStatus.PRUNED:
            self._tell(live.trial, "pruned", pretrain.error or "pruned")
            self._drop_unrun_evaluation(live)
        elif record.status == RunStatus.COMPLETED:
            value = objective_value(self.store, self.spec, live.objective_run)
            if value is None:
                self._tell(live.trial, "fail", f"run {live.objective_run} stored no "
                                               f"{self.spec.metric}")
            else:
                self._tell(live.trial, "complete", f"{self.spec.metric} = {value:.4g}",
                           value=value)
        elif record.status in TERMINAL_STATUSES or pretrain.status in TERMINAL_STATUSES:
            failed = pretrain if pretrain.status != RunStatus.COMPLETED else record
            self._tell(live.trial, "fail", f"run {failed.run_id} is {failed.status}"
                       + (f": {_first_line(failed.error)}" if failed.error else ""))
        else:  # still queued or running (stopped before it ran): left for the next tune
            self.echo(f"trial {live.trial.number}: run {live.objective_run} is "
                      f"{record.status}; re-run the same tune to see it through")

    def _drop_unrun_evaluation(self, live: _Live) -> None:
        """The objective's evaluation of a pruned run will never run: its queued row goes, when
        only this study asked for it and it never started (else it would sit 'queued')."""
        if live.objective_run == live.run_id:
            return
        record = self.store.get_run(live.objective_run)
        if (record.status == RunStatus.QUEUED and record.attempts == 0
                and record.tags == [self.spec_tag]):
            self.store.delete_run(live.objective_run)

    @property
    def spec_tag(self) -> str:
        return f"{TAG_PREFIX}{self.spec.name}"

    def _tell(self, trial: Any, outcome: str, why: str, value: float | None = None) -> None:
        import optuna

        state = {"complete": optuna.trial.TrialState.COMPLETE,
                 "pruned": optuna.trial.TrialState.PRUNED,
                 "fail": optuna.trial.TrialState.FAIL}[outcome]
        try:
            self.study.tell(trial, value if outcome == "complete" else None, state=state)
        except ValueError as err:  # told meanwhile by another driver
            self.echo(f"trial {trial.number}: not told again ({err})")
            return
        self.told[outcome] = self.told.get(outcome, 0) + 1
        self.echo(f"trial {trial.number} {outcome}: {why}")


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ----------------------------------------------------------------------- summaries

def best_trials(study: Any, limit: int = 10) -> list[dict[str, Any]]:
    """The study's finished trials, best first: number, state, value, params, run ids."""
    import optuna

    done = [t for t in study.get_trials(deepcopy=False)
            if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    done.sort(key=lambda t: (sign * float(t.value), t.number))
    return [{"trial": t.number, "value": t.value, **t.params,
             "run_id": t.user_attrs.get(RUN_ATTR, "")} for t in done[:limit]]


def study_counts(study: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name.lower()] = out.get(t.state.name.lower(), 0) + 1
    return out


# --------------------------------------------------------------------- Slurm (submitit)

def drive_submitit(feed: StudyFeed, store: Any, executor: Any, *, driver: str, backend: str,
                   policy: Any, per_device: int, echo: Callable[[str], None],
                   poll_s: float = 2.0) -> bool:
    """Drive the study with submitit job arrays: each trial's runs are one array task, new
    trials are submitted as others end, and the store is polled for their ends (the tasks'
    workers prune on their own). Returns whether someone asked this driver to stop."""
    from sslbench import paths
    from sslbench.runs.plan import forget_unstarted
    from sslbench.runs.slurm import submit, tag_jobs

    store.register_scheduler(driver, backend=backend, slots=[])
    pending: list[str] = []
    submitted = 0
    try:
        while True:
            feed.refill(pending)
            for index, plan in enumerate(feed.plans[submitted:], start=submitted):
                try:
                    jobs = submit(plan, store.url, str(paths.home()), executor,
                                  max_attempts=policy.max_attempts, transient=policy.transient,
                                  per_device=per_device)
                except ConfigError:  # sbatch refused it: no run left queued without a job
                    for unsent in feed.plans[index:]:
                        forget_unstarted(unsent, store)
                    raise
                tag_jobs(store, plan, jobs)
                if jobs:
                    echo(f"submitted {', '.join(str(j.job_id) for j in jobs)}")
            submitted = len(feed.plans)
            if not pending and feed.exhausted:
                return False
            for run_id, outcome in _ended(store, pending):
                pending.remove(run_id)
                feed.ended(run_id, outcome)
            if store.scheduler_beat(driver):
                return True
            time.sleep(poll_s)
    finally:
        store.end_scheduler(driver)


def _ended(store: Any, pending: list[str]) -> list[tuple[str, str]]:
    """The pending runs that are over: terminal, or evaluations whose pretraining run ended
    without completing (they will never run: 'blocked')."""
    records = store.runs_by_id(pending)
    out = []
    for run_id in pending:
        record = records.get(run_id)
        if record is None:
            out.append((run_id, "missing"))
        elif record.status in TERMINAL_STATUSES:
            out.append((run_id, record.status))
        elif record.kind == "eval" and record.parent_id is not None:
            parent = records.get(record.parent_id) or store.get_run(record.parent_id)
            if parent.status in TERMINAL_STATUSES and parent.status != RunStatus.COMPLETED:
                out.append((run_id, "blocked"))
    return out
