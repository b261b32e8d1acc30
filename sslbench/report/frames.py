"""Pure pandas steps shared by the paper reports: per-run cells -> seed statistics -> a wide
stat frame (see :mod:`sslbench.report.render`) -> the paper's values in rows of their own, and
Δ rows where our setting is the paper's -> agreement with the paper.

No store access and no formatting here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from sslbench.report.labels import family_key, method_key
from sslbench.report.published import PAPER_SETTING
from sslbench.report.render import DELTA, OURS, PAPER, SETTING_LEVELS, SOURCE, STATS, column_labels

#: Row levels with a non-alphabetical order.
_LEVEL_KEYS: dict[str, Callable[[Any], Any]] = {
    "method": method_key, "projector": family_key,
    "probe": lambda p: ({"online": 0, "offline": 1}.get(p, 2), p),
    SOURCE: lambda s: ({OURS: 0, PAPER: 1, DELTA: 2}.get(s, 3), s),
}


def seed_stats(cells: pd.DataFrame, keys: Sequence[str], value: str = "value") -> pd.DataFrame:
    """``keys`` + ``mean``, ``std`` (sample, ddof = 1; NaN for one seed) and ``n`` of ``value``
    over the rows of each group (typically one row per run, i.e. per seed).

    The rows are aggregated group by group, each group's values ascending, whatever their
    order (:func:`grouped_order`): the same runs give the same bits however a store returned
    them (see :func:`sslbench.report.recipes.recipe_seed_stats`)."""
    number = cells.groupby(list(keys), dropna=False).ngroup().to_numpy()
    ordered = cells.iloc[grouped_order(number, cells[value].to_numpy(dtype="float64"))]
    stats = ordered.groupby(list(keys), dropna=False)[value].agg(mean="mean", std="std",
                                                                n="count")
    return stats.reset_index()


def grouped_order(groups: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The order of the rows by group number, then value (NaN last): a floating-point sum
    depends on the order of its terms, and pandas' grouped sums on the sequence of group
    numbers too (the sorted one takes a path of its own).

    The rows are sorted by group (stably), then each group's by value: for the few hundred
    groups of a million rows a report has, half the time of sorting every value first; with
    more than a group per hundred rows, every value is sorted first, then the groups."""
    keys = groups
    if len(keys) and 0 <= keys.min() and keys.max() < 2**16:
        keys = keys.astype(np.uint16)  # NumPy's stable sort of 16-bit keys is a radix sort
    order = np.argsort(keys, kind="stable")
    ordered = groups[order]
    cuts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    if len(cuts) > len(groups) // 100:
        by_value = np.argsort(values)  # equal values are interchangeable: no need of stability
        return by_value[np.argsort(keys[by_value], kind="stable")]
    for rows, part in zip(np.split(order, cuts), np.split(values[order], cuts)):
        rows[:] = rows[np.argsort(part)]  # a view of order: sorted in place
    return order


def row_key(levels: Sequence[str]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """Sort key for index tuples: methods and projector families in the paper's order, the
    other levels by value."""
    keys: list[Callable[[Any], Any]] = [_LEVEL_KEYS.get(level, lambda v: (0, v))
                                        for level in levels]
    return lambda row: tuple(k(v) for k, v in zip(keys, row))


def wide(stats: pd.DataFrame, rows: Sequence[str], column: str, *,
         extra_rows: Iterable[tuple[Any, ...]] = (), extra_columns: Iterable[Any] = (),
         column_order: Sequence[Any] | None = None) -> pd.DataFrame:
    """Long stats (``rows`` + ``column`` + mean/std/n) -> a stat frame: index ``rows`` (sorted
    by :func:`row_key`), columns ``(column value, stat)`` (sorted, or the present ones of
    ``column_order`` first in that order); ``extra_rows`` / ``extra_columns`` are added empty
    (n = 0) so that missing cells show."""
    rows = list(rows)
    by_row: dict[tuple[Any, ...], dict[tuple[Any, str], float]] = {}
    for rec in stats.to_dict("records"):
        key = tuple(rec[level] for level in rows)
        by_row.setdefault(key, {}).update({(rec[column], s): rec[s] for s in STATS})
    for key in extra_rows:
        by_row.setdefault(tuple(key), {})
    labels = sorted(set(stats[column]) | set(extra_columns))
    if column_order is not None:
        labels = [c for c in column_order if c in labels] + [
            c for c in labels if c not in column_order]
    columns = pd.MultiIndex.from_product([labels, STATS], names=[column, "stat"])
    ordered = sorted(by_row, key=row_key(rows))
    index = pd.MultiIndex.from_tuples(ordered, names=rows) if ordered else pd.MultiIndex(
        levels=[[]] * len(rows), codes=[[]] * len(rows), names=rows)
    frame = pd.DataFrame([[by_row[r].get(c, math.nan) for c in columns] for r in ordered],
                         index=index, columns=columns, dtype="float64")
    n_columns = [c for c in columns if c[1] == "n"]
    frame[n_columns] = frame[n_columns].fillna(0).astype("int64")
    return frame


def published_frame(values: Mapping[tuple[Any, ...], float], rows: Sequence[str],
                    column: str) -> pd.DataFrame:
    """Published numbers ``{(*row labels, column label): value}`` as a stat frame indexed by
    ``rows`` (one printed number per cell: mean = the value, n = 1)."""
    long = pd.DataFrame([(*key, value) for key, value in values.items()],
                        columns=[*rows, column, "mean"]).assign(std=math.nan, n=1)
    return wide(long, rows, column)


def with_paper(ours: pd.DataFrame, paper: pd.DataFrame, *,
               comparable: Callable[[tuple[Any, ...]], bool],
               paper_key: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = None,
               column_order: Sequence[Any] | None = None,
               delta_labels: Sequence[Any] | None = None) -> pd.DataFrame:
    """Ours and the paper's in rows of their own: a stat frame indexed by ``source`` and the
    levels of ``ours`` (which start with the setting: dataset, backbone, epochs).

    * ``ours`` rows (source :data:`OURS`), as given;
    * the paper's rows (source :data:`PAPER`, setting :data:`PAPER_SETTING`, the row labels as
      the paper prints them, i.e. ``paper``'s index);
    * Δ rows (source :data:`DELTA`): ours minus the paper's value, for the rows of ours that
      ``comparable(row key)`` accepts and whose ``paper_key(row key)`` (by default the row
      labels after the setting) the paper has; ``n`` counts our runs behind each Δ. No Δ row
      for any other row.

    Columns: the union of both frames' labels (``column_order`` first, then sorted); Δ only in
    ``delta_labels`` when given (e.g. not for quantities equal by construction)."""
    labels = _union_labels(ours, paper, column_order)
    ours, paper = _with_labels(ours, labels), _with_labels(paper, labels)
    if not isinstance(paper.index, pd.MultiIndex):
        paper.index = pd.MultiIndex.from_arrays([paper.index])
    names = list(ours.index.names)
    ours_means = ours.xs("mean", axis=1, level="stat")
    paper_means = paper.xs("mean", axis=1, level="stat")
    counts = ours.xs("n", axis=1, level="stat")
    deltas: dict[tuple[Any, ...], list[float]] = {}
    for key in ours.index:
        printed = (paper_key(tuple(key)) if paper_key is not None
                   else tuple(key[len(SETTING_LEVELS):]))
        if not comparable(key) or printed not in paper_means.index:
            continue
        delta = ours_means.loc[key].to_numpy(float) - paper_means.loc[printed].to_numpy(float)
        if delta_labels is not None:
            delta[[label not in delta_labels for label in labels]] = math.nan
        if not np.isnan(delta).all():
            n = np.where(np.isnan(delta), 0, counts.loc[key].to_numpy())
            deltas[key] = [v for d, c in zip(delta, n) for v in (d, math.nan, c)]
    delta_frame = pd.DataFrame(list(deltas.values()), columns=ours.columns, dtype="float64")
    delta_frame.index = _index(list(deltas), names)
    paper_rows = paper.copy()
    paper_rows.index = _index([(*PAPER_SETTING, *k) for k in paper.index], names)
    parts = [(OURS, ours), (PAPER, paper_rows), (DELTA, delta_frame)]
    frame = pd.concat([_prefixed(part, source) for source, part in parts if len(part)])
    n_columns = [c for c in frame.columns if c[1] == "n"]
    frame[n_columns] = frame[n_columns].fillna(0).astype("int64")
    return frame


def _union_labels(ours: pd.DataFrame, paper: pd.DataFrame,
                  order: Sequence[Any] | None) -> list[Any]:
    found = set(column_labels(ours)) | set(column_labels(paper))
    labels = sorted(found, key=lambda v: (str(type(v)), v))
    if order is None:
        return labels
    first = list(dict.fromkeys(c for c in order if c in found))
    return first + [c for c in labels if c not in first]


def _with_labels(frame: pd.DataFrame, labels: list[Any]) -> pd.DataFrame:
    columns = pd.MultiIndex.from_product([labels, STATS], names=frame.columns.names)
    out = frame.reindex(columns=columns)
    n_columns = [c for c in columns if c[1] == "n"]
    out[n_columns] = out[n_columns].fillna(0).astype("int64")
    return out


def _index(keys: list[tuple[Any, ...]], names: list[Any]) -> pd.MultiIndex:
    if keys:
        return pd.MultiIndex.from_tuples(keys, names=names)
    return pd.MultiIndex(levels=[[]] * len(names), codes=[[]] * len(names), names=names)


def _prefixed(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    out = frame.copy()
    keys = [(source, *(k if isinstance(k, tuple) else (k,))) for k in frame.index]
    out.index = pd.MultiIndex.from_tuples(keys, names=[SOURCE, *frame.index.names])
    return out


def only(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """The rows of ``source`` (ours, paper or Δ), without the source level."""
    if SOURCE not in (frame.index.names or []):
        return frame if source == OURS else frame.iloc[0:0]
    rows = frame.index.get_level_values(SOURCE) == source
    return frame[rows].droplevel(SOURCE)


def agreement(frame: pd.DataFrame, tolerance: float,
              trivial: Callable[[tuple[Any, ...], Any], bool] | None = None) -> dict[str, Any]:
    """How our cells compare with the paper's, from the Δ rows (:func:`with_paper`):
    ``compared`` cells (trivial ones left out: ``trivial(row key, column label)``, such as
    CKA's diagonal, which is 1 by definition), ``within`` of them with ``|Δ| <= tolerance``,
    ``tolerance``, ``trivial`` (how many were left out), the ``max_abs_delta`` and the cell it
    is at (``at``: row labels and column label), ``mean_delta``."""
    deltas = only(frame, DELTA)
    found, left_out = [], 0
    means = deltas.xs("mean", axis=1, level="stat") if len(deltas) else deltas
    for key, row in means.iterrows():
        keys = key if isinstance(key, tuple) else (key,)
        for label, delta in row.items():
            if math.isnan(delta):
                continue
            if trivial is not None and trivial(keys, label):
                left_out += 1
                continue
            found.append((float(delta), keys, label))
    if not found:
        return {"compared": 0, "within": 0, "tolerance": tolerance, "trivial": left_out}
    values = np.array([d for d, _, _ in found])
    worst = max(found, key=lambda item: abs(item[0]))
    return {"compared": len(found), "within": int(sum(within(v, tolerance) for v in values)),
            "tolerance": tolerance, "trivial": left_out, "mean_delta": float(values.mean()),
            "max_abs_delta": abs(worst[0]), "at": [*map(str, worst[1]), str(worst[2])]}


def within(delta: float, tolerance: float) -> bool:
    """``|delta| <= tolerance``, up to the float error of subtracting printed decimals
    (0.20 - 0.15 is 0.05000000000000002)."""
    return abs(delta) <= tolerance + 1e-9


def agreement_text(summary: dict[str, Any], unit: str = "points", *, why_none: str = "",
                   trivial: str = "") -> str:
    """One sentence for a caption: how many comparable cells there were and how many agree,
    or (none) ``why_none``, the reason no cell could be compared. ``trivial`` names the cells
    left out (e.g. "the diagonal, 1 by definition")."""
    count = summary.get("trivial", 0)
    left_out = f" ({count} trivial cells left out: {trivial})" if count and trivial else ""
    if not summary.get("compared"):
        only_trivial = (f" The only cells both have are trivial ({count}: {trivial})."
                        if count and trivial else "")
        return f"No Δ: {why_none or 'no cell of ours has a published counterpart.'}" + (
            only_trivial)
    return (f"{summary['compared']} comparable cells{left_out}: {summary['within']} within "
            f"±{summary['tolerance']:g} {unit} of the paper's (mean Δ "
            f"{summary['mean_delta']:+.2f}; largest |Δ| {summary['max_abs_delta']:.2f} at "
            f"{' / '.join(summary['at'])}).")


def linear_fit(x: Sequence[float], y: Sequence[float]) -> dict[str, float] | None:
    """Least-squares line ``y = slope * x + intercept`` with R² (the squared correlation);
    None when fewer than two points or ``x`` is constant."""
    xs, ys = np.asarray(x, float), np.asarray(y, float)
    if len(xs) < 2 or np.ptp(xs) == 0:
        return None
    dx, dy = xs - xs.mean(), ys - ys.mean()
    slope = float((dx * dy).sum() / (dx * dx).sum())
    intercept = float(ys.mean() - slope * xs.mean())
    ss_res = float(((ys - (slope * xs + intercept)) ** 2).sum())
    ss_tot = float((dy * dy).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return {"slope": slope, "intercept": intercept, "r2": r2, "points": int(len(xs))}
