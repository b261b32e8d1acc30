"""``tune``: what a tuning study (``sslbench tune``) found -- its best trials, how the search went
and which parameters mattered.

Optuna keeps the studies in the store's own database, so this report reads them there: the table
lists each study's completed trials best first (the trial's point, its objective value, the epochs
its run trained and the run id, which ``runs show`` opens), and the caption says how many trials
were pruned or failed and what the search spent in training epochs against running every trial
to the end. The figure has one row per study: the optimisation history (each completed trial's
value and the best so far, pruned trials as ticks on the axis) and the parameter importances
(Optuna's fANOVA evaluator, over the completed trials; it needs two of them).
"""

from __future__ import annotations

import json
import warnings
from typing import TYPE_CHECKING, Any

import pandas as pd

from sslbench.report.base import EmptyReportError, Report
from sslbench.report.filters import ReportFilters

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sslbench.db import Store

#: Optuna study attributes written by ``sslbench tune`` (sslbench.runs.tune): the spec's
#: signature and, per trial, its pretraining run. Repeated here: reports do not import ``runs``.
SPEC_ATTR, RUN_ATTR = "sslbench_spec", "run_id"


def _studies(store: Store, name: str | None) -> list[Any]:
    import optuna
    from sqlalchemy.exc import DBAPIError

    from sslbench.db.engine import connect_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:  # reading only: no Optuna table is created in a store that has none
        storage = optuna.storages.RDBStorage(connect_url(store.url), skip_table_creation=True,
                                             skip_compatibility_check=True)
        names = [s.study_name for s in optuna.study.get_all_study_summaries(storage)]
    except (DBAPIError, optuna.exceptions.StorageInternalError):  # no study was ever run here
        names = []
    if name is not None and name not in names:
        raise EmptyReportError(f"no tuning study {name!r} in the store (studies: "
                               f"{', '.join(names) or 'none'})")
    if not names:
        raise EmptyReportError("the store holds no tuning study: run `sslbench tune SPEC.toml`")
    return [optuna.load_study(study_name=n, storage=storage)
            for n in ([name] if name else names)]


def _spec(study: Any) -> dict[str, Any]:
    text = study.user_attrs.get(SPEC_ATTR)
    return json.loads(text) if isinstance(text, str) else {}


def _epochs_trained(store: Store, run_ids: list[str]) -> dict[str, int]:
    """Epochs each pretraining run has finished (its number of per-epoch metric rows)."""
    out: dict[str, int] = {}
    for run_id in run_ids:
        try:
            frame = store.metrics_frame(run_id, "online_top1")
        except Exception:  # noqa: BLE001 - a run deleted since: nothing trained that we know
            out[run_id] = 0
            continue
        out[run_id] = int(frame["epoch"].notna().sum())
    return out


def _trial_rows(store: Store, study: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    import optuna

    trials = study.get_trials(deepcopy=False)
    spec = _spec(study)
    runs = [t.user_attrs.get(RUN_ATTR) for t in trials if t.user_attrs.get(RUN_ATTR)]
    trained = _epochs_trained(store, sorted(set(runs)))
    base_epochs = spec.get("base", {}).get("epochs")
    rows = []
    for t in trials:
        if t.state != optuna.trial.TrialState.COMPLETE or t.value is None:
            continue
        run_id = t.user_attrs.get(RUN_ATTR, "")
        rows.append({"study": study.study_name, "trial": t.number, "value": float(t.value),
                     **t.params, "epochs": trained.get(run_id, 0), "run_id": run_id})
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.sort_values(["value", "trial"], ascending=[not maximize, True])
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    finished = [t for t in trials if t.state.is_finished() and t.user_attrs.get(RUN_ATTR)]
    spent = sum(trained.get(t.user_attrs[RUN_ATTR], 0) for t in finished)
    objective = spec.get("objective", {})
    notes = {"study": study.study_name, "direction": study.direction.name.lower(),
             "metric": objective.get("metric"), "protocol": objective.get("protocol"),
             "pruner": spec.get("pruner", {}).get("name"), "trials": counts,
             "epochs_trained": spent,
             "epochs_if_unpruned": base_epochs * len(finished) if base_epochs else None,
             "importances": importances(study)}
    return frame, notes


def _caption(notes: dict[str, Any]) -> str:
    metric = notes["metric"] or "?"
    source = f"of the {notes['protocol']} evaluation" if notes["protocol"] else \
        "of the pretraining run (final epoch)"
    counts = ", ".join(f"{n} {state}" for state, n in sorted(notes["trials"].items()))
    text = (f"study {notes['study']}: {notes['direction']} {metric} {source}; trials: {counts}; "
            f"pruner {notes['pruner']}")
    if notes["epochs_if_unpruned"]:
        share = notes["epochs_trained"] / notes["epochs_if_unpruned"]
        text += (f"; {notes['epochs_trained']} training epochs spent, "
                 f"{share:.0%} of the {notes['epochs_if_unpruned']} of running every finished "
                 "trial to the end")
    return text + "."


def tune_report(store: Store, *, select: str = "final",
                filters: ReportFilters | None = None, study: str | None = None) -> Report:
    """The completed trials of ``study`` (default: every study in the store), best first.
    ``select`` and ``filters`` do not apply: a study's trials are what it told."""
    studies = _studies(store, study)
    parts = [_trial_rows(store, s) for s in studies]
    frames = [f for f, _ in parts if not f.empty]
    if not frames:
        raise EmptyReportError("no trial of "
                               + (f"study {study}" if study else "any study")
                               + " has completed yet: run or resume `sslbench tune`")
    frame = pd.concat(frames, ignore_index=True)
    notes = {n["study"]: n for _, n in parts}
    title = (f"Tuning study {study}: completed trials, best first" if study else
             "Tuning studies: completed trials, best first")
    return Report(frame=frame, title=title,
                  caption=" ".join(_caption(n) for n in notes.values()),
                  notes=notes, name="tune", digits=4,
                  figure=lambda: tune_figure(studies, notes))


def importances(study: Any) -> dict[str, float] | None:
    """Optuna's fANOVA parameter importances of a study (seeded), or None when it cannot tell
    (fewer than two completed trials, or trials that do not differ)."""
    import optuna

    done = [t for t in study.get_trials(deepcopy=False)
            if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) < 2:
        return None
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna warns when few trials make it uncertain
            return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
    except (RuntimeError, ValueError):
        return None


def tune_figure(studies: list[Any], notes: dict[str, dict[str, Any]]) -> Figure:
    """Per study: the optimisation history and the parameter importances, side by side."""
    import optuna
    from matplotlib.ticker import MaxNLocator

    from sslbench.report.figures import new_figure, wrapped

    fig = new_figure(11, 3.6 * len(studies))
    axes = fig.subplots(len(studies), 2, squeeze=False)
    for (history, bars), study in zip(axes, studies):
        meta = notes[study.study_name]
        trials = study.get_trials(deepcopy=False)
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE
                and t.value is not None]
        xs, ys = [t.number for t in done], [float(t.value) for t in done]
        history.plot(xs, ys, "o", color="C0", label="completed trial")
        best, running = [], None
        pick = max if meta["direction"] == "maximize" else min
        for y in ys:
            running = y if running is None else pick(running, y)
            best.append(running)
        history.step(xs, best, where="post", color="C1", label="best so far")
        pruned = [t.number for t in trials if t.state == optuna.trial.TrialState.PRUNED]
        if pruned:
            history.plot(pruned, [0] * len(pruned), "|", color="C3", markersize=12,
                         transform=history.get_xaxis_transform(), clip_on=False,
                         label="pruned trial")
        history.xaxis.set_major_locator(MaxNLocator(integer=True))
        history.set_xlabel("trial")
        history.set_ylabel(meta["metric"] or "objective")
        history.set_title("\n".join(wrapped(f"{study.study_name}: optimisation history", 5.3,
                                            10)), fontsize=10)
        history.legend(fontsize=8)
        values = importances(study)
        if values:
            names = list(values)[::-1]
            bars.barh(names, [values[n] for n in names], color="C2")
            bars.set_xlabel("importance (fANOVA)")
            bars.set_xlim(0, max(1.0, max(values.values())))
        else:
            bars.text(0.5, 0.5, "not enough completed trials that differ\nto rank the parameters",
                      ha="center", va="center", transform=bars.transAxes)
            bars.set_axis_off()
        bars.set_title("\n".join(wrapped(f"{study.study_name}: parameter importances", 5.3, 10)),
                       fontsize=10)
    return fig
