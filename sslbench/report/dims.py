"""``sslbench report dims``: top-1 of each method across embedding dimensions.

Rows are (dataset, backbone, method, projector) with the method's registry name and the
projector spec as given; columns are the embedding dimensions present, sorted; each cell holds
``mean``, ``std`` and ``n`` over the seeds (completed runs passing the filters only):

* metric ``online_*`` (e.g. ``online_top1``): the pretraining run's own summary, its final or
  best value (``select``);
* any other metric (``fast_linear_top1``, ``linear_top1``, ``knn_top1``, ``rankme_*``): the
  latest completed evaluation child of each completed pretraining run (linked by
  ``parent_id``, else by its ``source_run`` param);
* a ``random init`` row per (dataset, backbone) for evaluation metrics: completed evaluations of
  an untrained backbone (``random_init`` true). It has no projector and does not depend on the
  embedding dimension, so the same value is shown in every column, as a reference line.

Where the paper has a number for a row and dimension (online top-1: Table S5; offline
``linear_top1``: Tables S2/S3), it is put beside the cell with Δ; that needs every run of the
row to map to one paper method (see :mod:`sslbench.report.labels`).

The query returns a DataFrame only; :func:`sslbench.report.render.render` formats it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from sslbench.report.base import EmptyReportError, Report
from sslbench.report.filters import ReportFilters
from sslbench.report.frames import add_paper, seed_stats, wide
from sslbench.report.labels import embedding_dim
from sslbench.report.protocols import COMMANDS, PROTOCOLS, check_select, is_online, select_text
from sslbench.report.published import PAPER_SETTING_TEXT, table_s2_s3, table_s5
from sslbench.report.query import (
    baselines,
    completed_evals,
    latest_children,
    pretrain_runs,
    probe_columns,
    probe_text,
    settings_text,
)
from sslbench.report.render import STATS

if TYPE_CHECKING:
    from sslbench.db import Store

__all__ = ["PROTOCOLS", "dims_frame", "dims_report", "embedding_dim"]

ROW_LEVELS = ("dataset", "backbone", "method", "projector")
BASELINE_METHOD = "random init"
BASELINE_PROJECTOR = "-"
DEFAULT_METRIC = "fast_linear_top1"


def _filters(filters: ReportFilters | None, dataset: str | None) -> ReportFilters:
    filters = filters or ReportFilters()
    return filters if dataset is None else dataclasses.replace(filters, dataset=dataset)


def _where(filters: ReportFilters, methods: Sequence[str] | None) -> str:
    parts = ([filters.describe()] if filters.describe() else []) + (
        [f"method {', '.join(methods)}"] if methods else [])
    return f" ({'; '.join(parts)})" if parts else ""


def dims_frame(store: Store, *, metric: str = DEFAULT_METRIC, dataset: str | None = None,
               methods: Sequence[str] | None = None, select: str = "final",
               filters: ReportFilters | None = None) -> pd.DataFrame:
    """The dims table as a stat frame (see the module docstring); EmptyReportError if no run
    matches."""
    filters, select = _filters(filters, dataset), check_select(select)
    online = is_online(metric)
    runs = pretrain_runs(store, filters, metrics=(metric,) if online else ())
    if methods:
        runs = runs[runs["method_name"].isin(list(methods))]
    where = _where(filters, methods)
    if runs.empty:
        raise EmptyReportError(f"no completed pretraining runs{where} in the store "
                               f"{store.display_url}: run `sslbench demo` or `sslbench train` "
                               "first")
    evals = None if online else completed_evals(store, (metric,), dataset=filters.dataset)
    if evals is None:
        values, probes = runs[f"{select}.{metric}"], {}
    else:
        chosen = latest_children(evals, runs["run_id"], metric)
        values, probes = runs["run_id"].map(chosen["value"]), probe_columns(runs, chosen)
    cells = runs.assign(method=runs["method_name"], label=runs["method"], **probes,
                        value=values.astype("float64")).dropna(subset=["dim", "value"])
    if cells.empty:
        hint = (f"run `{COMMANDS['online_top1']}` to completion" if online else
                f"evaluate them with `{COMMANDS.get(metric, 'sslbench eval RUN_ID')}`, or pass "
                "--metric online_top1")
        raise EmptyReportError(f"no completed pretraining run{where} has a value for {metric!r}: "
                               f"{hint}")
    cells = cells.astype({"dim": "int64"})
    frame = wide(seed_stats(cells, (*ROW_LEVELS, "dim")), ROW_LEVELS, "dim")
    frame = _ordered(frame, list(methods or ()))
    if evals is not None:
        frame = _with_baseline(frame, baselines(evals, filters, metric))
    frame = _with_paper(frame, cells, metric)
    protocol, probe = PROTOCOLS.get(metric, metric), probe_text(cells, metric)
    if probe:
        protocol += f"; {probe}"
    frame.attrs.update(metric=metric, protocol=protocol, select=select,
                       ours=settings_text(runs))
    return frame


def dims_report(store: Store, *, metric: str = DEFAULT_METRIC, dataset: str | None = None,
                methods: Sequence[str] | None = None, select: str = "final",
                filters: ReportFilters | None = None) -> Report:
    """:func:`dims_frame` with its title and caption."""
    frame = dims_frame(store, metric=metric, dataset=dataset, methods=methods, select=select,
                       filters=filters)
    title = f"{metric} (%) by embedding dimension"
    caption = (f"Protocol: {frame.attrs['protocol']} ({select_text(select, metric)}). "
               "Rows: method x projector; columns: embedding dimension. Cells: mean ± std over "
               f"seeds (n runs), completed runs only. Ours: {frame.attrs['ours']}.")
    if (frame.index.get_level_values("method") == BASELINE_METHOD).any():
        caption += (f" '{BASELINE_METHOD}': an untrained backbone with the same protocol; it has "
                    "no projector, so its value is repeated in every column.")
    if "paper" in frame.columns.get_level_values("stat"):
        caption += f" Paper: {PAPER_SETTING_TEXT}; Δ = ours − paper."
    notes = dict(frame.attrs, filters=(filters or ReportFilters()).describe())
    return Report(frame=frame, title=title, caption=caption, notes=notes, name="dims")


def _method_key(order: list[str]) -> Any:
    return lambda method: (order.index(method) if method in order else len(order), method)


def _ordered(frame: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Rows by dataset, backbone, method (``order`` first), projector."""
    key = _method_key(order)
    rows = sorted(frame.index, key=lambda k: (k[0], k[1], key(k[2]), k[3]))
    return frame.loc[rows] if rows else frame


def _with_baseline(frame: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    """A ``random init`` row after each (dataset, backbone) group that has a baseline."""
    if baseline.empty or frame.empty:
        return frame
    stats = seed_stats(baseline, ("dataset", "backbone"))
    dims = list(dict.fromkeys(frame.columns.get_level_values("dim")))
    rows = list(frame.index)
    data = {r: frame.loc[r] for r in rows}
    for rec in stats.to_dict("records"):
        groups = [i for i, k in enumerate(rows) if k[:2] == (rec["dataset"], rec["backbone"])]
        if not groups:
            continue  # no pretraining run to compare with
        key = (rec["dataset"], rec["backbone"], BASELINE_METHOD, BASELINE_PROJECTOR)
        data[key] = pd.Series({(d, s): rec[s] for d in dims for s in STATS})
        rows.insert(groups[-1] + 1, key)
    out = pd.DataFrame([data[r].reindex(frame.columns) for r in rows], columns=frame.columns)
    out.index = pd.MultiIndex.from_tuples(rows, names=list(ROW_LEVELS))
    n_columns = [c for c in out.columns if c[1] == "n"]
    out[n_columns] = out[n_columns].fillna(0).astype("int64")
    return out


def _with_paper(frame: pd.DataFrame, cells: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Published values beside the cells whose runs map to one paper method (module doc)."""
    if metric == "online_top1":
        table = dict(table_s5())
    elif metric == "linear_top1":
        table = {k[:3]: v for k, v in table_s2_s3().items() if k[3] == "offline"}
    else:
        return frame
    groups = cells.groupby([*ROW_LEVELS, "dim"])
    labels = groups["label"].agg(lambda s: set(s))
    families = groups["families"].agg(lambda s: set.intersection(*map(set, s)))

    def lookup(key: tuple[Any, ...], dim: Any) -> float | None:
        cell = (*key, dim)
        if cell not in labels.index or len(labels[cell]) != 1:
            return None
        label = next(iter(labels[cell]))
        found = {table[(label, f, dim)] for f in families[cell] if (label, f, dim) in table}
        return found.pop() if len(found) == 1 else None

    with_paper = add_paper(frame, lookup)
    if with_paper.xs("paper", axis=1, level="stat").notna().to_numpy().any():
        return with_paper
    return frame
