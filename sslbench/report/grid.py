"""The paper's main grid: method x projector family x embedding dimension.

* ``table-s5``: online top-1 (Table S5), the published value and Δ beside each cell;
* ``fig1``: the same numbers as Figure 1 / S6 (one panel per method, one line per family,
  ours solid with ± std bars, the paper's dashed);
* ``knn``: the k-NN version (Figure S1), from the ``knn`` evaluations.

Rows are (dataset, backbone, epochs, method, projector family): runs of different settings are
never averaged together. Cells hold mean ± std over seeds (n runs). With ``complete`` (the
default for the paper's tables) every row and dimension of the paper's grid is listed, so the
cells no run has filled show as missing beside the published number.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from sslbench.report.base import EmptyReportError, Report
from sslbench.report.filters import ReportFilters
from sslbench.report.frames import add_paper, agreement, agreement_text, seed_stats, wide
from sslbench.report.protocols import COMMANDS, PROTOCOLS, check_select, is_online, select_text
from sslbench.report.published import PAPER_METHODS, PAPER_SETTING_TEXT, table_s5
from sslbench.report.query import completed_evals, latest_children, pretrain_runs, settings_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sslbench.db import Store

GRID_ROWS = ("dataset", "backbone", "epochs", "method", "projector")
SETTING = ("dataset", "backbone", "epochs")
TOLERANCE = 1.0
FAMILIES_NOTE = ("A run whose architecture belongs to two families (8192-8192-d at d = 8192 is "
                 "d-d-d) fills both rows, as in the paper.")
SIMCLR_NOTE = ("SimCLR-Tuned: simclr at temperature 0.15 (or tagged simclr-tuned); "
               "SimCLR-Orig: any other temperature (or tagged simclr-orig).")
#: k-NN gap the paper states between SimCLR-Tuned and SimCLR-Orig (Figure S1).
PAPER_KNN_GAP = 5.5


def where(filters: ReportFilters) -> str:
    text = filters.describe()
    return f" ({text})" if text else ""


def no_runs(store: Store, filters: ReportFilters) -> EmptyReportError:
    """The error for a store without a completed pretraining run that passes the filters."""
    return EmptyReportError(f"no completed pretraining runs{where(filters)} in the store "
                            f"{store.display_url}: run `sslbench train` (or `sslbench sweep`, "
                            "`sslbench demo`) first")


def grid_cells(store: Store, filters: ReportFilters, metric: str, select: str
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cells, runs): one cell row per (run, projector family) with a ``value`` of ``metric``,
    and every run that passed the filters. EmptyReportError when there is nothing to show."""
    online = is_online(metric)
    runs = pretrain_runs(store, filters, metrics=(metric,) if online else ())
    if runs.empty:
        raise no_runs(store, filters)
    if online:
        values = runs[f"{select}.{metric}"]
    else:
        evals = completed_evals(store, (metric,), dataset=filters.dataset)
        values = runs["run_id"].map(latest_children(evals, runs["run_id"], metric)["value"])
    cells = runs.assign(value=values.astype("float64")).dropna(subset=["value", "dim"])
    if cells.empty:
        command = COMMANDS.get(metric, "sslbench eval RUN_ID")
        raise EmptyReportError(f"none of the {len(runs)} completed pretraining runs"
                               f"{where(filters)} has a value for {metric!r}: run `{command}`")
    cells = cells.explode("families").assign(projector=lambda f: f["families"])
    return cells.astype({"dim": "int64"}), runs


def grid_frame(cells: pd.DataFrame, paper: Mapping[tuple[str, str, int], float] | None,
               complete: bool) -> pd.DataFrame:
    """The stat frame of the grid (rows :data:`GRID_ROWS`, columns dims), with the published
    values beside the cells when ``paper`` is given (and the paper's whole grid if
    ``complete``)."""
    stats = seed_stats(cells, (*GRID_ROWS, "dim"))
    extra_rows: list[tuple[Any, ...]] = []
    extra_columns: tuple[int, ...] = ()
    if paper and complete:
        pairs = list(dict.fromkeys((m, f) for m, f, _ in paper))
        settings = cells[list(SETTING)].drop_duplicates().itertuples(index=False)
        extra_rows = [(*s, m, f) for s in settings for m, f in pairs]
        extra_columns = tuple(sorted({d for _, _, d in paper}))
    frame = wide(stats, GRID_ROWS, "dim", extra_rows=extra_rows, extra_columns=extra_columns)
    if paper:
        frame = add_paper(frame, lambda key, dim: paper.get((key[3], key[4], dim)))
    return frame


def _caption(metric: str, select: str, runs: pd.DataFrame, paper_source: str | None,
             summary: dict[str, Any] | None) -> str:
    parts = [f"Top-1 (%) of the {PROTOCOLS.get(metric, metric)}; {select_text(select, metric)}; "
             "mean ± std over seeds (n runs); – = no run.",
             f"Ours: {settings_text(runs)}."]
    if paper_source:
        parts.append(f"Paper ({paper_source}): {PAPER_SETTING_TEXT}, online linear probe; "
                     "Δ = ours − paper.")
        parts.append(agreement_text(summary or {}))
    parts += [SIMCLR_NOTE, FAMILIES_NOTE]
    return " ".join(parts)


def table_s5_report(store: Store, *, select: str = "final", filters: ReportFilters | None = None,
                    complete: bool = True) -> Report:
    """Table S5: online top-1 by method x projector family x embedding dimension."""
    filters, select = filters or ReportFilters(), check_select(select)
    cells, runs = grid_cells(store, filters, "online_top1", select)
    frame = grid_frame(cells, table_s5(), complete)
    summary = agreement(frame, TOLERANCE)
    notes = {"metric": "online_top1", "protocol": PROTOCOLS["online_top1"], "select": select,
             "ours": settings_text(runs), "paper": PAPER_SETTING_TEXT, "agreement": summary,
             "tolerance": TOLERANCE, "filters": filters.describe()}
    return Report(frame=frame, name="table-s5", notes=notes,
                  title="Table S5: online top-1 (%) by method, projector and embedding dim",
                  caption=_caption("online_top1", select, runs, "Table S5", summary))


def fig1_report(store: Store, *, select: str = "final", filters: ReportFilters | None = None,
                complete: bool = True, figure_s6: bool = True) -> Report:
    """Figure 1 (``figure_s6``: Figure S6, with the 2048-2048-d line): Table S5 as five panels
    of top-1 against embedding dimension, ours beside the paper's."""
    table = table_s5_report(store, select=select, filters=filters, complete=complete)
    frame = table.frame
    if not figure_s6:
        frame = frame[frame.index.get_level_values("projector") != "2048-2048-d"]
    name = "Figure S6" if figure_s6 else "Figure 1"

    def draw() -> Figure:
        from sslbench.report.figures import grid_figure

        return grid_figure(frame, title=f"{name}: online top-1 vs embedding dimension",
                           ylabel="Online top-1 accuracy (%)", panels=PAPER_METHODS)

    return Report(frame=frame, name="fig1", notes=table.notes, figure=draw,
                  title=f"{name}: online top-1 (%) vs embedding dimension",
                  caption=table.caption)


def knn_gap(frame: pd.DataFrame) -> float | None:
    """Best SimCLR-Tuned cell minus best SimCLR-Orig cell (means), or None."""
    means = frame.xs("mean", axis=1, level="stat")
    methods = frame.index.get_level_values("method")
    best = {m: means[methods == m].max().max() for m in ("SimCLR-Tuned", "SimCLR-Orig")}
    if any(pd.isna(v) for v in best.values()):
        return None
    return float(best["SimCLR-Tuned"] - best["SimCLR-Orig"])


def knn_report(store: Store, *, select: str = "final", filters: ReportFilters | None = None
               ) -> Report:
    """Figure S1: k-NN top-1 (best cell of the k x temperature sweep) by method, projector
    family and embedding dimension."""
    filters, select = filters or ReportFilters(), check_select(select)
    cells, runs = grid_cells(store, filters, "knn_top1", select)
    frame = grid_frame(cells, None, complete=False)
    gap = knn_gap(frame)
    gap_text = ("SimCLR-Orig or SimCLR-Tuned has no run, so the paper's gap cannot be checked"
                if gap is None else f"ours {gap:+.2f}")
    caption = (_caption("knn_top1", select, runs, None, None) + " The paper gives no per-point "
               f"k-NN values (Figure S1 is a plot, {PAPER_SETTING_TEXT}); it states that "
               f"SimCLR-Tuned beats SimCLR-Orig by {PAPER_KNN_GAP} points (best cells): "
               f"{gap_text}.")
    notes = {"metric": "knn_top1", "protocol": PROTOCOLS["knn_top1"], "select": select,
             "ours": settings_text(runs), "paper": PAPER_SETTING_TEXT,
             "tuned_minus_orig": gap, "paper_tuned_minus_orig": PAPER_KNN_GAP,
             "filters": filters.describe()}

    def draw() -> Figure:
        from sslbench.report.figures import grid_figure

        return grid_figure(frame, title="Figure S1: k-NN top-1 vs embedding dimension",
                           ylabel="k-NN top-1 accuracy (%)", panels=PAPER_METHODS)

    return Report(frame=frame, name="knn", notes=notes, figure=draw,
                  title="Figure S1: k-NN top-1 (%) by method, projector and embedding dim",
                  caption=caption)
