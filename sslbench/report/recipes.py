"""Seed statistics of the completed pretraining runs without a frame of every run: the store
groups the runs by recipe (config without its seed, method, dataset, tags; see
:func:`sslbench.db.queries.recipe_runs`), the report columns are computed once a recipe, and
only each run's recipe and summary values reach pandas.

The statistics are those of :func:`sslbench.report.frames.seed_stats` over the per-run cells of
:func:`sslbench.report.query.pretrain_runs`, to the bit: the same values, in the same order (by
group, then value: :func:`sslbench.report.frames.grouped_order`, so the order in which the store
returns the runs does not matter), through the same pandas aggregations. The filters on the
runs' dataset and creation day are applied by the query; the others, which read the recipe, to
the recipes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sslbench.report.filters import ReportFilters
from sslbench.report.frames import grouped_order
from sslbench.report.labels import LABEL_TAGS
from sslbench.report.query import PRETRAIN_METRICS, PRETRAIN_PARAMS, normalize_runs, shared

if TYPE_CHECKING:
    from sslbench.db import Store


def _midnight(day: dt.date | None, days: int = 0) -> dt.datetime | None:
    if day is None:
        return None
    return dt.datetime.combine(day + dt.timedelta(days=days), dt.time(), dt.timezone.utc)


def pretrain_recipes(store: Store, filters: ReportFilters, metrics: Sequence[str] = (),
                     params: Sequence[str] = (), *, run_ids: bool = True,
                     parts: tuple[str, ...] = ("final", "best")
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(recipes, runs)`` of the completed pretraining runs passing ``filters``: ``recipes``
    normalized (:func:`sslbench.report.query.normalize_runs`; ``runs`` counts the runs of
    each) with :data:`PRETRAIN_PARAMS` and ``params``, ``runs`` one row per run: ``recipe``
    (a row of ``recipes``), ``run_id`` (with ``run_ids``, the rows then oldest first; the
    statistics need neither ids nor order) and ``final.<m>`` / ``best.<m>`` (those of
    ``parts``) of the online probe's metric and ``metrics``. A recipe's ``tags`` are those of
    its runs that the reports read (:data:`sslbench.report.labels.LABEL_TAGS` and the filters'):
    the seeds of a recipe that several sweeps ran are one recipe here."""
    wanted = tuple(dict.fromkeys((*PRETRAIN_METRICS, *metrics)))
    keys = tuple(dict.fromkeys((*PRETRAIN_PARAMS, *params)))

    def query() -> tuple[pd.DataFrame, pd.DataFrame]:
        recipes, runs = store.recipe_runs(
            params=keys, summaries=wanted, kind="pretrain", status="completed",
            dataset=filters.dataset, since=_midnight(filters.since),
            before=_midnight(filters.until, days=1), run_ids=run_ids, parts=parts,
            tags=(*LABEL_TAGS, *filters.tags), parsed=shared(("parsed", id(store)), dict))
        recipes = normalize_runs(recipes)
        undated = dataclasses.replace(filters, since=None, until=None)
        kept = undated.keep(recipes).to_numpy()
        runs = runs[kept[runs["recipe"].to_numpy()]]
        return recipes[kept], runs

    return shared(("recipes", id(store), filters, wanted, keys, run_ids, parts), query)


def recipe_rows(recipes: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run of ``runs`` (from :func:`pretrain_recipes`): its recipe's columns, its
    ``run_id`` and its summaries; no seed (the reports group the seeds of a recipe)."""
    shared = recipes.drop(columns=["runs", "seed"])
    frame = shared.loc[runs["recipe"].to_numpy()].reset_index(drop=True)
    frame.insert(0, "run_id", runs["run_id"].to_numpy())
    summaries = [c for c in runs.columns if c not in ("recipe", "run_id")]
    return pd.concat([frame, runs[summaries].reset_index(drop=True)], axis=1)


def recipe_seed_stats(recipes: pd.DataFrame, runs: pd.DataFrame, value: str,
                      keys: Sequence[str]) -> tuple[pd.DataFrame, pd.Series]:
    """``seed_stats(cells, (*keys, "dim"))`` where the cells would be each run with its
    ``value`` column, once per projector family (``projector`` the family), runs without a
    value or an embedding dim left out; and, per recipe, how many of its runs have cells."""
    table, cells = _cell_codes(recipes, keys)
    codes = table[runs["recipe"].to_numpy()]
    values = runs[value].to_numpy(dtype="float64")
    codes[np.isnan(values)] = -1
    flat, repeated = codes.ravel(), np.repeat(values, codes.shape[1])
    used = flat >= 0
    # Number the cells as a groupby on their keys does, in the sorted order of the keys, and
    # order the rows as seed_stats does.
    present = sorted(np.flatnonzero(np.bincount(flat[used], minlength=len(cells))).tolist(),
                     key=lambda code: cells[code])
    rank = np.zeros(len(cells), dtype="int64")
    rank[present] = np.arange(len(present))
    groups, values = rank[flat[used]], repeated[used]
    order = grouped_order(groups, values)
    stats = pd.Series(values[order]).groupby(groups[order]).agg(mean="mean", std="std",
                                                                n="count")
    long = pd.DataFrame([cells[present[i]] for i in stats.index], columns=[*keys, "dim"])
    long = long.astype({"dim": "int64"})
    for column in ("mean", "std", "n"):
        long[column] = stats[column].to_numpy()
    valued = np.bincount(runs["recipe"].to_numpy(), weights=codes[:, 0] >= 0,
                         minlength=len(table))
    return long, pd.Series(valued[recipes.index].astype("int64"), index=recipes.index)


def _cell_codes(recipes: pd.DataFrame, keys: Sequence[str]
                ) -> tuple[np.ndarray, list[tuple[Any, ...]]]:
    """(table, cells): ``table[recipe, j]`` the cell of the recipe's j-th projector family
    (-1: none), ``cells[code]`` the keys of that cell (``keys`` hold ``projector``)."""
    width = max((len(f) for f in recipes["families"]), default=1)
    table = np.full((max(recipes.index, default=-1) + 1, width), -1, dtype="int64")
    index: dict[tuple[Any, ...], int] = {}
    at = list(keys).index("projector")
    # The keys before and after the projector, a tuple a recipe (zipped, not row by row).
    heads = list(zip(*(recipes[k].tolist() for k in keys[:at]))) or [()] * len(recipes)
    tails = list(zip(*(recipes[k].tolist() for k in keys[at + 1:]))) or [()] * len(recipes)
    for row, families, dim, head, tail in zip(recipes.index.tolist(),
                                              recipes["families"].tolist(),
                                              recipes["dim"].tolist(), heads, tails):
        if pd.isna(dim):
            continue
        for j, family in enumerate(families):
            table[row, j] = index.setdefault((*head, family, *tail, int(dim)), len(index))
    return table, list(index)
