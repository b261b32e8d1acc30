"""The paper's main grid: method x projector family x embedding dimension.

* ``table-s5``: online top-1 (Table S5): our cells, the paper's in rows of their own, and Δ rows
  where our setting is the paper's (ImageNet-1k, ResNet-50, 100 epochs);
* ``fig1`` / ``fig-s6``: the same numbers as Figure 1 (three projector families) and Figure S6
  (four), ours and the paper's on separate rows of panels;
* ``knn``: the k-NN version (Figure S1), from the ``knn`` evaluations.

Rows are (dataset, backbone, epochs, method, projector family): runs of different settings are
never averaged together. Cells hold mean ± std over seeds (n runs). With ``complete`` (the
default for the paper's tables) every row and dimension of the paper's grid is listed for our
settings that are the paper's, so the cells no run has filled show as missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from sslbench.report.base import EmptyReportError, Report
from sslbench.report.filters import ReportFilters
from sslbench.report.frames import (
    agreement,
    agreement_text,
    published_frame,
    seed_stats,
    wide,
    with_paper,
)
from sslbench.report.protocols import (
    COMMANDS,
    PROBE_NAMES,
    PROTOCOLS,
    check_select,
    is_online,
    select_text,
)
from sslbench.report.published import (
    PAPER_METHODS,
    PAPER_SETTING_TEXT,
    comparable,
    quoted_baselines,
    quoted_text,
    table_s5,
)
from sslbench.report.query import (
    augment_text,
    baselines,
    completed_evals,
    latest_children,
    pretrain_runs,
    settings_text,
    with_children,
)
from sslbench.report.recipes import pretrain_recipes, recipe_seed_stats

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sslbench.db import Store

GRID_ROWS = ("dataset", "backbone", "epochs", "method", "projector")
SETTING = ("dataset", "backbone", "epochs")
TOLERANCE = 1.0
FAMILIES_NOTE = ("A run whose architecture belongs to two families (8192-8192-d at d = 8192 is "
                 "d-d-d) fills both rows, as in the paper.")
SIMCLR_NOTE = ("SimCLR-Tuned: simclr with Table S6's whole recipe (τ 0.15, batch 2048, base lr "
               "0.5, LARS, weight decay 1e-6) or tagged simclr-tuned; other simclr runs are "
               "named by their temperature (SimCLR τ=0.5), SimCLR-Orig only when tagged "
               "simclr-orig (the paper does not print its recipe).")
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
    valued = runs
    if online:
        values = runs[f"{select}.{metric}"]
    else:
        evals = completed_evals(store, (metric,), dataset=filters.dataset)
        chosen = latest_children(evals, runs["run_id"], metric)
        valued = with_children(runs, chosen)
        values = valued["run_id"].map(chosen["value"])
    cells = valued.assign(value=values.astype("float64")).dropna(subset=["value", "dim"])
    if cells.empty:
        command = COMMANDS.get(metric, "sslbench eval RUN_ID")
        raise EmptyReportError(f"none of the {len(runs)} completed pretraining runs"
                               f"{where(filters)} has a value for {metric!r}: run `{command}`")
    cells = cells.explode("families").assign(projector=lambda f: f["families"])
    return cells.astype({"dim": "int64"}), runs


def grid_stats(store: Store, filters: ReportFilters, metric: str, select: str, *,
               methods: Sequence[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(stats, runs): the seed statistics of :func:`grid_cells` (``seed_stats`` over
    :data:`GRID_ROWS` and dim) and the runs that passed the filters, with the errors of
    :func:`grid_cells`; then, with ``methods``, of the runs of those registry methods only.
    An online metric is read a recipe at a time (:mod:`sslbench.report.recipes`): ``runs``
    has one row per recipe (``runs`` of them, ``valued`` with a cell)."""
    if not is_online(metric):
        cells, runs = grid_cells(store, filters, metric, select)
        if methods is not None:
            cells, runs = (f[f["method_name"].isin(list(methods))] for f in (cells, runs))
        return seed_stats(cells, (*GRID_ROWS, "dim")), runs.assign(runs=1, valued=(
            runs["run_id"].isin(set(cells["run_id"])).astype("int64")))
    recipes, runs = pretrain_recipes(store, filters, (metric,), run_ids=False, parts=(select,))
    if recipes.empty:
        raise no_runs(store, filters)
    value = f"{select}.{metric}"
    stats, valued = recipe_seed_stats(recipes, runs, value, GRID_ROWS)
    if stats.empty:
        command = COMMANDS.get(metric, "sslbench eval RUN_ID")
        raise EmptyReportError(f"none of the {recipes['runs'].sum()} completed pretraining "
                               f"runs{where(filters)} has a value for {metric!r}: run "
                               f"`{command}`")
    if methods is not None:
        recipes = recipes[recipes["method_name"].isin(list(methods))]
        runs = runs[runs["recipe"].isin(recipes.index)]
        stats, valued = recipe_seed_stats(recipes, runs, value, GRID_ROWS)
    return stats, recipes.assign(valued=valued)


def is_comparable(key: tuple[Any, ...]) -> bool:
    """Whether a row keyed (dataset, backbone, epochs, ...) is in the paper's setting."""
    return comparable(*key[:3])


def grid_frame(stats: pd.DataFrame, paper: Mapping[tuple[str, str, int], float] | None,
               complete: bool) -> pd.DataFrame:
    """The stat frame of the grid (rows :data:`GRID_ROWS`, columns dims) from its seed
    statistics (:func:`grid_stats`); with ``paper``, the paper's rows and the Δ rows beside
    ours (:func:`sslbench.report.frames.with_paper`), and with ``complete`` the paper's whole
    grid listed for our settings that are the paper's."""
    extra_rows: list[tuple[Any, ...]] = []
    extra_columns: tuple[int, ...] = ()
    settings = [s for s in stats[list(SETTING)].drop_duplicates().itertuples(index=False)
                if comparable(*s)]
    if paper and complete and settings:
        pairs = list(dict.fromkeys((m, f) for m, f, _ in paper))
        extra_rows = [(*s, m, f) for s in settings for m, f in pairs]
        extra_columns = tuple(sorted({d for _, _, d in paper}))
    frame = wide(stats, GRID_ROWS, "dim", extra_rows=extra_rows, extra_columns=extra_columns)
    if not paper:
        return frame
    published = published_frame(paper, ("method", "projector"), "dim")
    return with_paper(frame, published, comparable=is_comparable)


def why_no_delta(runs: pd.DataFrame) -> str:
    """Why no cell of ours has a Δ, for a caption."""
    if any(comparable(*s) for s in runs[list(SETTING)].itertuples(index=False)):
        return (f"our runs in the paper's setting ({PAPER_SETTING_TEXT}) have no cell (method, "
                "projector, dim) that the paper prints.")
    return (f"none of our settings ({settings_text(runs)}) is the paper's ({PAPER_SETTING_TEXT}), "
            "so a difference would mix the setting with the method; the paper's values are "
            "listed for reference only.")


def simclr_note(runs: pd.DataFrame) -> str:
    """:data:`SIMCLR_NOTE` when some run is a simclr run, else ``""``."""
    return SIMCLR_NOTE if (runs["method_name"] == "simclr").any() else ""


def _caption(metric: str, select: str, runs: pd.DataFrame, paper_source: str | None,
             summary: dict[str, Any] | None) -> str:
    parts = [f"Top-1 (%) of the {PROTOCOLS.get(metric, metric)}; {select_text(select, metric)}; "
             "mean ± std over seeds (n runs); – = no run.",
             f"Ours: {settings_text(runs)}{augment_text(runs)}."]
    if paper_source:
        parts.append(f"Paper ({paper_source}): {PAPER_SETTING_TEXT}, online linear probe, in "
                     "rows of its own; Δ = ours − paper where our setting is the paper's.")
        parts.append(agreement_text(summary or {}, why_none=why_no_delta(runs)))
    parts += [simclr_note(runs), FAMILIES_NOTE]
    return " ".join(p for p in parts if p)


def table_s5_report(store: Store, *, select: str = "final", filters: ReportFilters | None = None,
                    complete: bool = True) -> Report:
    """Table S5: online top-1 by method x projector family x embedding dimension."""
    filters, select = filters or ReportFilters(), check_select(select)
    stats, runs = grid_stats(store, filters, "online_top1", select)
    frame = grid_frame(stats, table_s5(), complete)
    summary = agreement(frame, TOLERANCE)
    notes = {"metric": "online_top1", "protocol": PROTOCOLS["online_top1"], "select": select,
             "ours": settings_text(runs), "paper": PAPER_SETTING_TEXT, "agreement": summary,
             "tolerance": TOLERANCE, "quoted": list(quoted_baselines()),
             "filters": filters.describe()}
    return Report(frame=frame, name="table-s5", notes=notes,
                  title="Table S5: online top-1 (%) by method, projector and embedding dim",
                  caption=_caption("online_top1", select, runs, "Table S5", summary)
                  + " " + quoted_text())


def fig1_report(store: Store, *, select: str = "final", filters: ReportFilters | None = None,
                complete: bool = True) -> Report:
    """Figure 1: Table S5 (without 2048-2048-d) as panels of top-1 against embedding dimension,
    one per method, ours above the paper's."""
    return _figure_report(store, select, filters, complete, figure_s6=False)


def fig_s6_report(store: Store, *, select: str = "final", filters: ReportFilters | None = None,
                  complete: bool = True) -> Report:
    """Figure S6: Figure 1 with the fourth projector family, 2048-2048-d."""
    return _figure_report(store, select, filters, complete, figure_s6=True)


def _figure_report(store: Store, select: str, filters: ReportFilters | None, complete: bool,
                   figure_s6: bool) -> Report:
    table = table_s5_report(store, select=select, filters=filters, complete=complete)
    frame = table.frame
    if not figure_s6:
        frame = frame[frame.index.get_level_values("projector") != "2048-2048-d"]
    name = "Figure S6" if figure_s6 else "Figure 1"
    baseline = random_baseline(store, filters or ReportFilters(), "online_top1")

    def draw() -> Figure:
        from sslbench.report.curves import grid_figure

        return grid_figure(frame, title=f"{name}: online top-1 vs embedding dimension",
                           ylabel="Online top-1 accuracy (%)", panels=PAPER_METHODS,
                           baseline=baseline)

    return Report(frame=frame, name="fig-s6" if figure_s6 else "fig1", notes=table.notes,
                  figure=draw, title=f"{name}: online top-1 (%) vs embedding dimension",
                  caption=table.caption + baseline_text(baseline))


#: The random-init evaluations that serve as a metric's reference line, the same protocol first;
#: the online probe cannot run on an untrained network, so online top-1 takes the offline one.
BASELINE_METRICS = {"online_top1": ("linear_top1", "fast_linear_top1"),
                    "knn_top1": ("knn_top1",), "linear_top1": ("linear_top1",),
                    "fast_linear_top1": ("fast_linear_top1",)}


def random_baseline(store: Store, filters: ReportFilters, metric: str) -> pd.DataFrame:
    """The random-init reference of ``metric``: one row per (dataset, backbone) with
    ``protocol`` (the probe it was measured with), ``mean`` and ``n``; empty when no
    random-init evaluation exists."""
    for candidate in BASELINE_METRICS.get(metric, ()):
        evals = completed_evals(store, (candidate,), dataset=filters.dataset)
        found = baselines(evals, filters, candidate)
        if len(found):
            stats = found.groupby(["dataset", "backbone"])["value"].agg(mean="mean",
                                                                         n="count")
            return stats.reset_index().assign(protocol=PROBE_NAMES[candidate])
    return pd.DataFrame(columns=["dataset", "backbone", "mean", "n", "protocol"])


def baseline_text(baseline: pd.DataFrame) -> str:
    """The caption sentence for the random-init lines of a figure ("" when there are none)."""
    if baseline.empty:
        return ""
    lines = "; ".join(f"{r.dataset}, {r.backbone}: {r.mean:.2f}, {r.protocol}, n = {r.n}"
                      for r in baseline.itertuples(index=False))
    return f" Dotted line in the figure: a randomly initialised backbone ({lines})."


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
    stats, runs = grid_stats(store, filters, "knn_top1", select)
    frame = grid_frame(stats, None, complete=False)
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
        from sslbench.report.curves import grid_figure

        return grid_figure(frame, title="Figure S1: k-NN top-1 vs embedding dimension",
                           ylabel="k-NN top-1 accuracy (%)", panels=PAPER_METHODS,
                           baseline=baseline)

    baseline = random_baseline(store, filters, "knn_top1")
    return Report(frame=frame, name="knn", notes=notes, figure=draw,
                  title="Figure S1: k-NN top-1 (%) by method, projector and embedding dim",
                  caption=caption + baseline_text(baseline))
