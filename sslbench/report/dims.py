"""``sslbench report dims``: top-1 of each method across embedding dimensions.

Rows are (dataset, backbone, epochs, method, projector) with the paper's method labels (see
:mod:`sslbench.report.labels`) and the projector spec as given; columns are the embedding
dimensions present, sorted; each cell holds ``mean``, ``std`` and ``n`` over the seeds
(completed runs passing the filters only):

* metric ``online_*`` (e.g. ``online_top1``): the pretraining run's own summary, its final or
  best value (``select``);
* any other metric (``fast_linear_top1``, ``linear_top1``, ``knn_top1``, ``rankme_*``): the
  latest completed evaluation child of each completed pretraining run (linked by
  ``parent_id``, else by its ``source_run`` param);
* a ``random init`` row per (dataset, backbone, epochs) for evaluation metrics: completed
  evaluations of an untrained backbone (``random_init`` true). It has no projector and does not
  depend on the embedding dimension (nor on the epochs), so the same value is shown in every
  column, as a reference line.

Where the paper has numbers for a row (online top-1: Table S5; offline ``linear_top1``: Tables
S2/S3; every run of the row must map to one paper method and projector family), the paper's row
follows in a row of its own, and a Δ row where our setting (and, offline, our probe) is the
paper's.

The query returns a DataFrame only; :func:`sslbench.report.render.render` formats it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from sslbench.report.base import EmptyReportError, Report
from sslbench.report.filters import ReportFilters
from sslbench.report.frames import published_frame, seed_stats, wide, with_paper
from sslbench.report.labels import embedding_dim, method_key
from sslbench.report.protocols import (
    COMMANDS,
    PROBE_NAMES,
    PROTOCOLS,
    check_select,
    is_online,
    select_text,
)
from sslbench.report.published import PAPER_SETTING_TEXT, comparable, table_s2_s3, table_s5
from sslbench.report.query import (
    augment_text,
    baselines,
    completed_evals,
    latest_children,
    offline_probe_differences,
    pretrain_runs,
    probe_columns,
    probe_text,
    settings_text,
    with_children,
)
from sslbench.report.render import DELTA, OURS, PAPER, SOURCE, STATS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sslbench.db import Store

__all__ = ["PROTOCOLS", "dims_frame", "dims_report", "embedding_dim"]

ROW_LEVELS = ("dataset", "backbone", "epochs", "method", "projector")
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
        valued, values, probes = runs, runs[f"{select}.{metric}"], {}
    else:
        chosen = latest_children(evals, runs["run_id"], metric)
        valued = with_children(runs, chosen)
        values, probes = valued["run_id"].map(chosen["value"]), probe_columns(valued, chosen)
    cells = valued.assign(**probes, value=values.astype("float64")).dropna(
        subset=["dim", "value"])
    if cells.empty:
        hint = (f"run `{COMMANDS['online_top1']}` to completion" if online else
                f"evaluate them with `{COMMANDS.get(metric, 'sslbench eval RUN_ID')}`, or pass "
                "--metric online_top1")
        raise EmptyReportError(f"no completed pretraining run{where} has a value for {metric!r}: "
                               f"{hint}")
    cells = _recipes_apart(cells.astype({"dim": "int64"}))
    frame = wide(seed_stats(cells, (*ROW_LEVELS, "dim")), ROW_LEVELS, "dim")
    frame = _ordered(frame, _label_order(cells, list(methods or ())))
    if evals is not None:
        frame = _with_baseline(frame, baselines(evals, filters, metric))
    frame = _with_paper(frame, cells, metric)
    protocol, probe = PROTOCOLS.get(metric, metric), probe_text(cells, metric)
    if probe:
        protocol += f"; {probe}"
    differences = offline_probe_differences(cells) if metric == "linear_top1" else []
    frame.attrs.update(metric=metric, protocol=protocol, select=select,
                       ours=settings_text(runs) + augment_text(runs),
                       probe_differences=differences)
    return frame


def dims_report(store: Store, *, metric: str = DEFAULT_METRIC, dataset: str | None = None,
                methods: Sequence[str] | None = None, select: str = "final",
                filters: ReportFilters | None = None) -> Report:
    """:func:`dims_frame` with its title and caption."""
    frame = dims_frame(store, metric=metric, dataset=dataset, methods=methods, select=select,
                       filters=filters)
    attrs = dict(frame.attrs)
    title = f"{metric} (%) by embedding dimension"
    caption = (f"Protocol: {attrs['protocol']} ({select_text(select, metric)}). "
               "Rows: method x projector; columns: embedding dimension. Cells: mean ± std over "
               f"seeds (n runs), completed runs only. Ours: {attrs['ours']}.")
    methods_shown = frame.index.get_level_values("method")
    if (methods_shown == BASELINE_METHOD).any():
        caption += (f" '{BASELINE_METHOD}': an untrained backbone with the same protocol; it has "
                    "no projector, so its value is repeated in every column.")
    sources = set(frame.index.get_level_values(SOURCE)) if SOURCE in frame.index.names else set()
    if PAPER in sources:
        table = "Table S5" if metric == "online_top1" else "Tables S2/S3, offline"
        caption += (f" Paper ({table}): {PAPER_SETTING_TEXT}, in rows of its own; Δ = ours − "
                    "paper where our setting" + (" and probe are" if metric == "linear_top1"
                                                 else " is") + " the paper's.")
        if DELTA not in sources:
            caption += " No Δ: " + _why_no_delta(frame, attrs["probe_differences"])
    notes = {k: v for k, v in attrs.items() if k != "probe_differences"}
    notes.update(filters=(filters or ReportFilters()).describe(),
                 probe_differences=attrs["probe_differences"])

    def draw() -> Figure:
        from sslbench.report.curves import curves_figure, dims_blocks

        blocks = dims_blocks(frame, BASELINE_METHOD, PROBE_NAMES.get(metric, metric))
        return curves_figure(blocks, title=title, ylabel=f"{metric} (%)")

    return Report(frame=frame, title=title, caption=caption, notes=notes, name="dims",
                  figure=draw)



#: Params that a row already shows (its levels, its column) or that are what a cell averages.
_SHOWN = {"param.dataset", "param.backbone", "param.epochs", "param.projector", "param.dim",
          "param.seed"}


def _recipes_apart(cells: pd.DataFrame) -> pd.DataFrame:
    """A cell averages seeds of one recipe, never different recipes: where the runs of one cell
    differ in another hyperparameter (a tuning study's trials, say), each recipe gets its own
    row, labelled with what differs (``VICReg lr=0.002 std_coeff=25``), at every dimension of
    the row, so that one recipe stays one row across the dimensions. A weight that changes with
    the dimension only (the paper's per-dim weights) is the same row."""
    params = [c for c in cells.columns if c.startswith("param.") and c not in _SHOWN]
    out = []
    for _, group in cells.groupby(list(ROW_LEVELS), dropna=False, sort=False):
        text = group[params].astype("string").fillna("<NA>")
        varying = [c for c in params if text.groupby(group["dim"])[c].nunique().max() > 1]
        if varying:
            group = group.assign(method=[
                f"{label} " + " ".join(f"{c.rsplit('.', 1)[-1]}={_short(row[c])}"
                                       for c in varying)
                for label, (_, row) in zip(group["method"], group.iterrows())])
        out.append(group)
    return pd.concat(out)


def _short(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _why_no_delta(frame: pd.DataFrame, differences: list[str]) -> str:
    ours = frame.loc[OURS].index if OURS in frame.index.get_level_values(SOURCE) else []
    if not any(comparable(*key[:3]) for key in ours):
        return (f"none of our settings is the paper's ({PAPER_SETTING_TEXT}), so a difference "
                "would mix the setting with the method; the paper's rows are for reference "
                "only.")
    if differences:
        return f"our offline probes differ from the paper's in: {'; '.join(differences)}."
    return "no row of ours in the paper's setting maps to a row the paper prints."


def _label_order(cells: pd.DataFrame, names: list[str]) -> list[str]:
    """Method labels in the order of the registry names given, else the paper's order."""
    position = {name: i for i, name in enumerate(names)}
    pairs = cells[["method_name", "method"]].drop_duplicates().itertuples(index=False)
    ranked = sorted((position.get(name, len(position)), method_key(label), label)
                    for name, label in pairs)
    return list(dict.fromkeys(label for *_, label in ranked))


def _ordered(frame: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Rows by dataset, backbone, epochs, method (``order`` first), projector."""
    def key(label: str) -> tuple[int, str]:
        return (order.index(label) if label in order else len(order), label)
    rows = sorted(frame.index, key=lambda k: (k[0], k[1], k[2], key(k[3]), k[4]))
    return frame.loc[rows] if rows else frame


def _with_baseline(frame: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    """A ``random init`` row after each (dataset, backbone, epochs) group whose dataset and
    backbone have a baseline."""
    if baseline.empty or frame.empty:
        return frame
    stats = seed_stats(baseline, ("dataset", "backbone")).set_index(["dataset", "backbone"])
    dims = list(dict.fromkeys(frame.columns.get_level_values("dim")))
    rows = list(frame.index)
    data = {r: frame.loc[r] for r in rows}
    for setting in dict.fromkeys(k[:3] for k in frame.index):
        if setting[:2] not in stats.index:
            continue  # no random-init evaluation of this dataset and backbone
        rec = stats.loc[setting[:2]]
        key = (*setting, BASELINE_METHOD, BASELINE_PROJECTOR)
        data[key] = pd.Series({(d, s): rec[s] for d in dims for s in STATS})
        last = max(i for i, k in enumerate(rows) if k[:3] == setting)
        rows.insert(last + 1, key)
    out = pd.DataFrame([data[r].reindex(frame.columns) for r in rows], columns=frame.columns)
    out.index = pd.MultiIndex.from_tuples(rows, names=list(ROW_LEVELS))
    n_columns = [c for c in out.columns if c[1] == "n"]
    out[n_columns] = out[n_columns].fillna(0).astype("int64")
    return out


def _with_paper(frame: pd.DataFrame, cells: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The paper's rows for the rows of ours that map to one paper method and projector family
    (module docstring), and Δ rows where comparable; ``frame`` itself when there are none."""
    if metric == "online_top1":
        table = dict(table_s5())
    elif metric == "linear_top1":
        table = {k[:3]: v for k, v in table_s2_s3().items() if k[3] == "offline"}
    else:
        return frame
    printed = {(m, f) for m, f, _ in table}
    mapped: dict[tuple[Any, ...], tuple[str, str]] = {}
    for key, group in cells.groupby(list(ROW_LEVELS)):
        labels = set(group["method"])
        common = set.intersection(*(set(f) for f in group["families"]))
        pairs = [(lab, f) for lab in labels for f in common if (lab, f) in printed]
        if len(labels) == 1 and pairs:
            mapped[tuple(key)] = sorted(pairs)[0]
    if not mapped:
        return frame
    wanted = set(mapped.values())
    paper = published_frame({k: v for k, v in table.items() if k[:2] in wanted},
                            ("method", "projector"), "dim")
    same_probe = metric != "linear_top1" or not offline_probe_differences(cells)
    return with_paper(frame, paper, paper_key=lambda key: mapped.get(key, ("", "")),
                      comparable=lambda key: same_probe and comparable(*key[:3])
                      and key in mapped)
