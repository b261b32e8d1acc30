"""Store -> normalized run frames for the paper reports (queries only, no formatting).

* :func:`pretrain_runs`: completed pretraining runs that pass the filters, one row each, with
  the columns every report keys on (dataset, backbone, epochs, method label, projector
  families, embedding dim, seed) and the requested summaries (``final.<m>`` / ``best.<m>``).
* :func:`latest_children`: for each pretraining run, its latest completed evaluation that has a
  given metric (evaluations link to their run by ``parent_id``, else their ``source_run``).
* :func:`baselines`: completed evaluations of randomly initialised networks.
* :func:`evaluated_runs`: each kept run with its latest evaluation holding some metrics, plus
  the random-init evaluations holding them (Table S4, spectra).

Everything reads the summaries table (final / best per run and metric); the metric history is
only read for series (spectra), run by run. Inside :func:`shared_queries` (``report all``, which
builds every report from one store) each distinct query runs once.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd

from sslbench.config import probe_augment_used
from sslbench.report.filters import ReportFilters
from sslbench.report.labels import (
    TUNED_RECIPE,
    embedding_dim,
    method_label,
    normalize_spec,
    projector_families,
)

if TYPE_CHECKING:
    from sslbench.db import Store

# Every param a report reads, so that all of them share one query under shared_queries().
PRETRAIN_PARAMS = ("projector", "dim", "backbone", "epochs", "seed", "augment", *TUNED_RECIPE,
                   "loss.sim_coeff", "loss.std_coeff", "loss.cov_coeff", "warmup_epochs")
#: Summaries every pretraining query fetches (the online probe's), for the same reason.
PRETRAIN_METRICS = ("online_top1",)
# How a linear probe was set up (EvalConfig fields); evaluations from before the augmentation and
# the standardisation were recorded lack those two.
PROBE_PARAMS = ("probe_augment", "probe_standardize", "linear_epochs", "batch_size", "lr")
EVAL_PARAMS = ("protocol", "random_init", "source_run", "backbone", "projector", "dim", "seed",
               *PROBE_PARAMS)


T = TypeVar("T")

_SHARED: contextvars.ContextVar[dict[Any, Any] | None] = contextvars.ContextVar(
    "sslbench_shared_queries", default=None)


@contextlib.contextmanager
def shared_queries() -> Iterator[None]:
    """Within the block, a query asked again returns the frame of the first time (the
    reports only read the frames they get)."""
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def shared(key: tuple[Any, ...], query: Callable[[], T]) -> T:
    """``query()``, or inside :func:`shared_queries` what it gave the first time ``key`` was
    asked."""
    memo = _SHARED.get()
    if memo is None:
        return query()
    if key not in memo:
        memo[key] = query()
    return memo[key]


def runs_frame(store: Store, *, params: Sequence[str] | None = None,
               summaries: Sequence[str] | None = None, **filters: Any) -> pd.DataFrame:
    """:meth:`Store.runs_frame`, shared inside :func:`shared_queries`."""
    key = ("runs", id(store), None if params is None else frozenset(params),
           None if summaries is None else frozenset(summaries), *sorted(filters.items()))
    return shared(key, lambda: store.runs_frame(params=params, summaries=summaries,
                                                **filters))


@functools.lru_cache(maxsize=4096)
def _families(spec: str, dim: Any) -> tuple[str, ...]:
    return projector_families(spec, dim)


@functools.lru_cache(maxsize=4096)
def _embedding_dim(spec: str, dim: Any) -> int | None:
    return embedding_dim(spec, dim)


def _hashable(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and value != value) else value


def normalize_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Adds the report columns to a ``runs_frame`` of pretraining runs (see the module doc)."""
    out = frame.copy()
    out["dataset"] = frame["dataset"].fillna("?").astype(str)
    out["backbone"] = frame["param.backbone"].fillna("?").astype(str)
    out["epochs"] = frame["param.epochs"].fillna(0).astype("int64")
    out["method_name"] = frame["method"].fillna("?").astype(str)
    # Lists, not the columns: a column of strings yields its values one call at a time.
    recipe = [dict(zip(TUNED_RECIPE, values)) for values in zip(
        *(frame[f"param.{key}"].tolist() for key in TUNED_RECIPE))]
    out["method"] = [method_label(m, r, tags) for m, r, tags in zip(
        out["method_name"].tolist(), recipe, frame["tags"].tolist())]
    specs = [normalize_spec(p) for p in frame["param.projector"].tolist()]
    dims = [_hashable(d) for d in frame["param.dim"].tolist()]
    out["projector"] = specs
    out["dim"] = pd.array([_embedding_dim(s, d) for s, d in zip(specs, dims)], dtype="Int64")
    out["families"] = [_families(s, d) for s, d in zip(specs, dims)]
    out["seed"] = frame["param.seed"] if "param.seed" in frame else None  # recipes: none
    return out


def pretrain_runs(store: Store, filters: ReportFilters, *, metrics: Sequence[str] = (),
                  params: Sequence[str] = ()) -> pd.DataFrame:
    """Completed pretraining runs passing ``filters``, oldest first: the normalized columns of
    their recipes (:func:`sslbench.report.recipes.pretrain_recipes`, read and normalized once
    a recipe) with each run's ``run_id`` and summaries."""
    from sslbench.report.recipes import pretrain_recipes, recipe_rows

    return recipe_rows(*pretrain_recipes(store, filters, metrics, params))


def is_baseline(evals: pd.DataFrame) -> pd.Series:
    """Evaluations of a random-init network: ``random_init`` true, or (older records) neither a
    parent nor a source run; CKA comparisons (method ``cka``) are never baselines."""
    flag = evals["param.random_init"].map(lambda v: v is True or v == 1)
    orphan = (evals["param.random_init"].isna() & evals["parent_id"].isna()
              & evals["param.source_run"].isna())
    return (flag | orphan) & (evals["method"] != "cka")


def completed_evals(store: Store, metrics: Sequence[str], *, dataset: str | None = None,
                    params: Sequence[str] = ()) -> pd.DataFrame:
    """Completed evaluation runs with :data:`EVAL_PARAMS` (+ ``params``) and ``metrics``."""
    keys = tuple(dict.fromkeys((*EVAL_PARAMS, *params)))
    return runs_frame(store, kind="eval", status="completed", dataset=dataset, params=keys,
                      summaries=tuple(metrics))


def latest_children(evals: pd.DataFrame, parents: pd.Series, metric: str,
                    select: str = "final") -> pd.DataFrame:
    """One row per parent run id in ``parents`` with a completed evaluation holding ``metric``:
    the latest such evaluation (by end time), indexed by the parent id, with a ``value`` column
    (its ``select`` summary of ``metric``) and the child's own columns."""
    column = f"{select}.{metric}"
    if column not in evals.columns:
        return evals.iloc[0:0].assign(value=pd.Series(dtype="float64"))
    children = evals[~is_baseline(evals)]
    parent = children["parent_id"].fillna(children["param.source_run"])
    children = children.assign(parent=parent, value=children[column])
    # membership looked up among the evaluations, which are fewer than the runs
    evaluated = parents[parents.isin(children["parent"])]
    children = children[children["parent"].isin(evaluated)].dropna(subset=["value"])
    children = children.sort_values(["ended_at", "created_at", "run_id"], na_position="first")
    return children.drop_duplicates("parent", keep="last").set_index("parent")


def with_children(runs: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``runs`` that have an evaluation in ``chosen`` (from
    :func:`latest_children`), the only ones a value can be mapped to."""
    return runs[runs["run_id"].isin(chosen.index)]


def probe_columns(runs: pd.DataFrame, chosen: pd.DataFrame) -> dict[str, pd.Series]:
    """The probe settings of ``chosen`` (from :func:`latest_children`) aligned with ``runs``:
    ``{"eval.probe_augment": ..., "eval.probe_standardize": ...}``."""
    def column(name: str) -> pd.Series:
        if f"param.{name}" not in chosen.columns:
            return pd.Series(index=runs.index, dtype=object)
        return runs["run_id"].map(chosen[f"param.{name}"])
    return {f"eval.{name}": column(name) for name in PROBE_PARAMS}


def probe_text(cells: pd.DataFrame, metric: str) -> str:
    """How the linear probes behind ``metric`` in ``cells`` (with :func:`probe_columns`) were
    set up, for a caption, e.g. ``"epochs 3; batch 256; base lr 0.25; training images flip;
    representations standardised"``; "" for other metrics. Settings no evaluation recorded
    are left out, except the two added later: evaluations from before them are described as
    they ran (offline probes with crop-flip on raw representations, fast probes without flips
    on standardised ones)."""
    if metric not in ("linear_top1", "fast_linear_top1"):
        return ""
    offline = metric == "linear_top1"
    protocol = "linear" if offline else "fast-linear"
    parts = [f"{name} {values}" for name, key in (("epochs", "linear_epochs"),
                                                  ("batch", "batch_size"), ("base lr", "lr"))
             if (values := _distinct(cells, f"eval.{key}", _number_text, NOT_RECORDED))
             and values != NOT_RECORDED]
    parts += [
        "training images " + _distinct(cells, "eval.probe_augment",
                                       lambda v: probe_augment_used(protocol, str(v)),
                                       "crop-flip" if offline else "none"),
        "representations " + _distinct(cells, "eval.probe_standardize",
                                       lambda v: _STANDARDISED[bool(v)],
                                       _STANDARDISED[not offline])]
    return "; ".join(parts)


_STANDARDISED = {True: "standardised", False: "not standardised"}
NOT_RECORDED = "not recorded"


def _number_text(value: Any) -> str:
    return f"{float(value):g}"


def _distinct(cells: pd.DataFrame, column: str, names: Callable[[Any], str],
              unknown: str) -> str:
    """The distinct values of ``column``, named, ``", "``-joined, "(mixed)" when several;
    missing values (and a missing column) are ``unknown``."""
    found = sorted({names(v) if pd.notna(v) else unknown
                    for v in cells.get(column, pd.Series([None] * len(cells), dtype=object))})
    return ", ".join(found) + (" (mixed)" if len(found) > 1 else "")


def offline_probe_differences(cells: pd.DataFrame) -> list[str]:
    """The settings in which the offline probes of ``cells`` (with :func:`probe_columns`) are
    not known to be the paper's (Appendix E: 100 epochs, batch 1024, crop-flip, raw
    representations), e.g. ``["epochs 3 (paper 100)"]``; [] when they all are."""
    from sslbench.report.published import PAPER_OFFLINE_PROBE as paper

    out = []
    for name, key, show in (("epochs", "linear_epochs", _number_text),
                            ("batch", "batch_size", _number_text),
                            ("training images", "probe_augment", str),
                            ("representations", "probe_standardize",
                             lambda v: _STANDARDISED[bool(v)])):
        column = cells.get(f"eval.{key}", pd.Series(index=cells.index, dtype=object))
        column = column.astype(object)  # an all-missing column reads as float64
        if key == "probe_augment":  # recorded later; before, the offline probe used crop-flip
            column = column.fillna("crop-flip")
        elif key == "probe_standardize":
            column = column.fillna(False)
        wanted = show(paper[key])
        seen = sorted({show(v) if pd.notna(v) else NOT_RECORDED for v in column})
        if seen != [wanted]:
            out.append(f"{name} {', '.join(seen)} (paper {wanted})")
    return out


def baselines(evals: pd.DataFrame, filters: ReportFilters, metric: str,
              select: str = "final") -> pd.DataFrame:
    """Random-init evaluations with ``metric``: dataset, backbone, projector, dim, value."""
    column = f"{select}.{metric}"
    if column not in evals.columns:
        return pd.DataFrame(columns=["run_id", "dataset", "backbone", "projector", "dim", "value"])
    random = evals[is_baseline(evals)].assign(value=lambda f: f[column])
    random = random.dropna(subset=["value"]).assign(
        dataset=lambda f: f["dataset"].fillna("?").astype(str),
        backbone=lambda f: f["param.backbone"].fillna("?").astype(str),
        projector=lambda f: [normalize_spec(p) for p in f["param.projector"]])
    random = random.assign(dim=[_embedding_dim(s, _hashable(d))
                                for s, d in zip(random["projector"], random["param.dim"])])
    return random[filters.keep_baselines(random)].reset_index(drop=True)


def evaluated_runs(store: Store, filters: ReportFilters, metrics: Sequence[str], *,
                   with_baselines: bool = True) -> pd.DataFrame:
    """One row per evaluated network: each kept pretraining run with its latest completed
    evaluation holding ``metrics[0]``, plus (``with_baselines``) the random-init evaluations
    holding it (method ``Random``, epochs 0). Columns: the normalized run columns,
    ``eval_id`` and ``final.<metric>`` for each metric."""
    runs = pretrain_runs(store, filters)
    evals = completed_evals(store, metrics, dataset=filters.dataset)
    finals = [f"final.{m}" for m in metrics]
    children = latest_children(evals, runs["run_id"], metrics[0])
    children = children[["run_id", *finals]].rename(columns={"run_id": "eval_id"})
    trained = with_children(runs, children).drop(
        columns=[c for c in finals if c in runs.columns]).merge(children, left_on="run_id",
                                                                right_index=True)
    if not with_baselines or evals.empty:
        return trained.reset_index(drop=True)
    random = evals[is_baseline(evals)].dropna(subset=[finals[0]])
    specs = [normalize_spec(p) for p in random["param.projector"]]
    dims = [_hashable(d) for d in random["param.dim"]]
    random = pd.DataFrame({
        "run_id": random["run_id"], "eval_id": random["run_id"],
        "created_at": random["created_at"], "tags": random["tags"],
        "dataset": random["dataset"].fillna("?").astype(str),
        "backbone": random["param.backbone"].fillna("?").astype(str), "epochs": 0,
        "method_name": "random", "method": "Random", "projector": specs,
        "dim": pd.array([_embedding_dim(s, d) for s, d in zip(specs, dims)], dtype="Int64"),
        "families": [_families(s, d) for s, d in zip(specs, dims)],
        "seed": random["param.seed"], **{c: random[c] for c in finals}})
    random = random[filters.keep_baselines(random)]
    if random.empty:
        return trained.reset_index(drop=True)
    if trained.empty:
        return random.reset_index(drop=True)
    return pd.concat([trained, random], ignore_index=True)


def random_beside_trained(nets: pd.DataFrame) -> pd.DataFrame:
    """Random-init networks (method ``Random``, epochs 0, from :func:`evaluated_runs`)
    repeated with the epochs of each trained setting of their dataset and backbone, as the
    paper lists its Random row with its trained networks (epochs 0 where there is none)."""
    random = nets["method"] == "Random"
    trained = nets.loc[~random, ["dataset", "backbone", "epochs"]].drop_duplicates()
    if not random.any() or trained.empty:
        return nets
    placed = nets[random].drop(columns="epochs").merge(trained, on=["dataset", "backbone"],
                                                       how="left")
    placed["epochs"] = placed["epochs"].fillna(0).astype("int64")
    return pd.concat([nets[~random], placed], ignore_index=True)


def augment_text(runs: pd.DataFrame) -> str:
    """``"; pretraining augmentations small (paper: BYOL's, Table S1)"`` when some run did not
    use the paper's recipe, else ``""``."""
    used = sorted({str(v) for v in runs.get("param.augment",
                                            pd.Series(dtype=object)).dropna().unique()})
    if not used or used == ["byol"]:
        return ""
    return f"; pretraining augmentations {', '.join(used)} (paper: BYOL's, Table S1)"


def settings_text(runs: pd.DataFrame) -> str:
    """``"shapes, small, 3 epochs"`` for each distinct (dataset, backbone, epochs) of ``runs``,
    joined by ``"; "``."""
    if runs.empty:
        return "no runs"
    combos = runs[["dataset", "backbone", "epochs"]].drop_duplicates().sort_values(
        ["dataset", "backbone", "epochs"])
    return "; ".join(f"{d}, {b}, {e} epochs" for d, b, e in combos.itertuples(index=False))
