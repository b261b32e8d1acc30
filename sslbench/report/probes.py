"""``table-s2-s3``: online vs offline linear probe of the same runs (Tables S2 and S3).

For every completed pretraining run that has both an online top-1 (its own probe, final or best
epoch) and an offline one (``linear_top1``, its latest completed ``linear`` evaluation), the
two values are tabulated side by side: rows (dataset, backbone, epochs, method, projector,
probe), columns embedding dims, the published value and Δ beside each cell (the paper has
VICReg (Table S2) and VICReg-exp (Table S3) with the 8192-8192-d projector).

Below the table the paper fits offline = slope x online + intercept over its 10 cells (slope
0.97, intercept 2.1, R² 1.0; refitting the printed values gives 0.969, 2.07, 0.990). We fit the
same line over our cells: one point per (setting, method, projector, dim), the means over seeds,
each set of runs counted once even when its projector belongs to two families.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from sslbench.report.base import EmptyReportError, Report
from sslbench.report.filters import ReportFilters
from sslbench.report.frames import (
    add_paper,
    agreement,
    agreement_text,
    linear_fit,
    seed_stats,
    wide,
)
from sslbench.report.grid import FAMILIES_NOTE, SETTING, TOLERANCE, no_runs, where
from sslbench.report.protocols import PROTOCOLS, check_select, select_text
from sslbench.report.published import PAPER_REGRESSION, PAPER_SETTING_TEXT, table_s2_s3
from sslbench.report.query import (
    completed_evals,
    latest_children,
    pretrain_runs,
    probe_columns,
    probe_text,
    settings_text,
)

if TYPE_CHECKING:
    from sslbench.db import Store

PROBE_ROWS = (*SETTING, "method", "projector", "probe")


def paired_runs(store: Store, filters: ReportFilters, select: str) -> pd.DataFrame:
    """Runs with both probes: the normalized run columns plus ``online`` and ``offline``."""
    runs = pretrain_runs(store, filters, metrics=("online_top1",))
    if runs.empty:
        raise no_runs(store, filters)
    evals = completed_evals(store, ("linear_top1",), dataset=filters.dataset)
    chosen = latest_children(evals, runs["run_id"], "linear_top1")
    offline = runs["run_id"].map(chosen["value"])
    paired = runs.assign(online=runs[f"{select}.online_top1"], offline=offline.astype(float),
                         **probe_columns(runs, chosen))
    paired = paired.dropna(subset=["online", "offline", "dim"])
    if paired.empty:
        raise EmptyReportError(f"none of the {len(runs)} completed pretraining runs"
                               f"{where(filters)} has both an online top-1 and a completed "
                               "offline linear evaluation: run `sslbench eval RUN_ID "
                               "--protocol linear`")
    return paired.astype({"dim": "int64"})


def regression(paired: pd.DataFrame) -> dict[str, Any] | None:
    """offline ~ online over cell means (module docstring), or None with fewer than 2 cells."""
    cells = paired.groupby([*SETTING, "method", "projector", "dim"])[["online", "offline"]].mean()
    return linear_fit(cells["online"], cells["offline"])


def published_regression() -> dict[str, Any] | None:
    """The same fit over the paper's printed cells."""
    table = table_s2_s3()
    keys = sorted({k[:3] for k in table})
    return linear_fit([table[k + ("online",)] for k in keys],
                      [table[k + ("offline",)] for k in keys])


def _fit_text(fit: dict[str, Any] | None) -> str:
    if fit is None:
        return "needs two cells with different online values"
    return (f"slope {fit['slope']:.3f}, intercept {fit['intercept']:.2f}, R² {fit['r2']:.3f} "
            f"over {fit['points']} cells")


def table_s2_s3_report(store: Store, *, select: str = "final",
                       filters: ReportFilters | None = None, complete: bool = True) -> Report:
    """Tables S2/S3: online vs offline top-1 of the same runs, with the regression."""
    filters, select = filters or ReportFilters(), check_select(select)
    paired = paired_runs(store, filters, select)
    cells = paired.explode("families").assign(projector=lambda f: f["families"])
    long = pd.concat([cells.assign(probe="online", value=cells["online"]),
                      cells.assign(probe="offline", value=cells["offline"])])
    stats = seed_stats(long, (*PROBE_ROWS, "dim"))
    paper = table_s2_s3()
    extra_rows: list[tuple[Any, ...]] = []
    extra_columns: tuple[int, ...] = ()
    if complete:
        settings = list(paired[list(SETTING)].drop_duplicates().itertuples(index=False))
        keys = dict.fromkeys((m, f, p) for m, f, _, p in paper)
        extra_rows = [(*s, *k) for s in settings for k in keys]
        extra_columns = tuple(sorted({d for _, _, d, _ in paper}))
    frame = wide(stats, PROBE_ROWS, "dim", extra_rows=extra_rows, extra_columns=extra_columns)
    frame = add_paper(frame, lambda key, dim: paper.get((key[3], key[4], dim, key[5])))
    ours, printed = regression(paired), published_regression()
    probe = probe_text(paired, "linear_top1")
    summary = agreement(frame, TOLERANCE)
    caption = " ".join([
        f"Top-1 (%) of the same runs with two probes: online = {PROTOCOLS['online_top1']} "
        f"({select_text(select, 'online_top1')}); offline = {PROTOCOLS['linear_top1']}, "
        f"latest completed evaluation ({probe}). Runs with both values only; "
        "mean ± std over seeds "
        "(n runs); – = no run.",
        f"Ours: {settings_text(paired)}.",
        f"Paper (Table S2: VICReg, Table S3: VICReg-exp; 8192-8192-d): {PAPER_SETTING_TEXT}; "
        "offline probe 100 epochs; Δ = ours − paper.",
        agreement_text(summary),
        f"Regression offline = slope × online + intercept: ours {_fit_text(ours)}; paper "
        f"states slope {PAPER_REGRESSION['slope']}, intercept {PAPER_REGRESSION['intercept']}, "
        f"R² {PAPER_REGRESSION['r2']} (refit of its printed cells: {_fit_text(printed)}).",
        FAMILIES_NOTE])
    notes = {"metrics": ["online_top1", "linear_top1"], "select": select,
             "ours": settings_text(paired), "paper": PAPER_SETTING_TEXT,
             "probe": probe,
             "regression": {"ours": ours, "paper_stated": dict(PAPER_REGRESSION),
                            "paper_refit": printed},
             "agreement": summary, "tolerance": TOLERANCE, "filters": filters.describe()}
    return Report(frame=frame, name="table-s2-s3", notes=notes, caption=caption,
                  title="Tables S2/S3: online vs offline linear probe top-1 (%)")
