"""SimCLR's variants against SimCLR: Figure 2 (with centering, with dimension standardisation) and
Figure S3 (SimCLR-sq, SimCLR-abs), online top-1 by projector family and embedding dimension.

The grid is Table S5's (:mod:`sslbench.report.grid`) restricted to the runs of the figure's
methods, one panel per method. The paper prints no per-point values for either figure; it
states the result in words and a few numbers, which ship in ``published/``: Figure 2's 1000-epoch
runs (SimCLR w/ dim std 72.6 against VICReg 73.3) and Figure S3's SimCLR-abs 68.71 against
SimCLR-Tuned's 68.61 (8192-8192-512; the dimension of the SimCLR-abs run is inferred), which
are put in rows of their own beside ours.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import pandas as pd

from sslbench.report.base import EmptyReportError, Report
from sslbench.report.filters import ReportFilters
from sslbench.report.frames import agreement, agreement_text, only
from sslbench.report.grid import (
    FAMILIES_NOTE,
    TOLERANCE,
    grid_frame,
    grid_stats,
    random_baseline,
    simclr_note,
    where,
    why_no_delta,
)
from sslbench.report.labels import method_key
from sslbench.report.protocols import PROTOCOLS, check_select, select_text
from sslbench.report.published import (
    PAPER_SETTING_TEXT,
    fig2_stated,
    fig_s3_stated,
    table_1,
)
from sslbench.report.query import augment_text, settings_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sslbench.db import Store

FIG2_METHODS = ("simclr", "simclr-center", "simclr-dimstd")
FIG_S3_METHODS = ("simclr-sq", "simclr-abs", "simclr")


def variant_cells(store: Store, filters: ReportFilters, select: str,
                  names: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(stats, runs) of the online top-1 grid (:func:`grid_stats`) for the runs of registry
    methods ``names``."""
    stats, runs = grid_stats(store, filters, "online_top1", select, methods=names)
    variants = [n for n in names if n != "simclr"]
    if not runs.loc[runs["valued"] > 0, "method_name"].isin(variants).any():
        # SimCLR alone is not the figure
        raise EmptyReportError(f"no completed pretraining run of {', '.join(variants)}"
                               f"{where(filters)} in the store {store.display_url}: run "
                               f"`sslbench train --method {variants[0]}` (and --method simclr "
                               "to compare)")
    return stats, runs


def peaks(frame: pd.DataFrame) -> dict[str, float]:
    """The best cell (mean over seeds) of each method of our rows."""
    ours = only(frame, "ours")
    means = ours.xs("mean", axis=1, level="stat")
    methods = ours.index.get_level_values("method")
    found = {m: float(means[methods == m].max().max()) for m in dict.fromkeys(methods)}
    return {m: v for m, v in sorted(found.items(), key=lambda item: method_key(item[0]))
            if v == v}


def _peaks_text(found: Mapping[str, float]) -> str:
    return "; ".join(f"{m} {v:.2f}" for m, v in found.items())


def _report(store: Store, select: str, filters: ReportFilters | None, *, name: str,
            names: Sequence[str], paper: Mapping[tuple[str, str, int], float] | None,
            title: str, stated: str) -> Report:
    filters, select = filters or ReportFilters(), check_select(select)
    stats, runs = variant_cells(store, filters, select, names)
    frame = grid_frame(stats, paper, complete=False)
    summary = agreement(frame, TOLERANCE) if paper else None
    found = peaks(frame)
    parts = [f"Top-1 (%) of the {PROTOCOLS['online_top1']}; "
             f"{select_text(select, 'online_top1')}; mean ± std over seeds (n runs).",
             f"Ours: {settings_text(runs)}{augment_text(runs)}; best cell of each method: "
             f"{_peaks_text(found)}.", stated]
    if summary is not None:
        parts.append(agreement_text(summary, why_none=why_no_delta(runs)))
    parts += [simclr_note(runs), FAMILIES_NOTE]
    baseline = random_baseline(store, filters, "online_top1")
    notes = {"metric": "online_top1", "select": select, "ours": settings_text(runs),
             "paper": PAPER_SETTING_TEXT, "peaks": found, "filters": filters.describe(),
             **({"agreement": summary, "tolerance": TOLERANCE} if summary else {})}
    order = sorted(dict.fromkeys(stats["method"]), key=method_key)

    def draw() -> Figure:
        from sslbench.report.curves import grid_figure

        return grid_figure(frame, title=title, ylabel="Online top-1 accuracy (%)",
                           panels=order, baseline=baseline)

    return Report(frame=frame, name=name, notes=notes, figure=draw, title=title,
                  caption=" ".join(p for p in parts if p))


def fig2_report(store: Store, *, select: str = "final", filters: ReportFilters | None = None
                ) -> Report:
    """Figure 2: SimCLR, SimCLR w/ centering and SimCLR w/ dim std, online top-1."""
    norms = {row["property"]: row for row in table_1()}
    scenarios = "; ".join(
        f"{label} = Table 1's {key}: dimension centering {norms['Dimension centering'][key]}, "
        f"embedding norm {norms['Embedding norm'][key]}, dimension norm "
        f"{norms['Dimension norm'][key]}"
        for label, key in (("SimCLR w/ centering", "SimCLR A"), ("SimCLR w/ dim std", "SimCLR B")))
    runs = "; ".join(f"{r['method']} {r['top1']:g}" for r in fig2_stated())
    epochs = {int(r["epochs"]) for r in fig2_stated()}.pop()
    stated = (f"Paper (Figure 2, {PAPER_SETTING_TEXT}; no per-point values printed): centering "
              "and dimension standardisation leave SimCLR's top-1 unchanged, with the same "
              f"peak; only 2048-d is slightly lower. At {epochs} epochs: {runs}. {scenarios}.")
    return _report(store, select, filters, name="fig2", names=FIG2_METHODS, paper=None,
                   title="Figure 2: SimCLR, with centering, with dimension standardisation",
                   stated=stated)


def fig_s3_report(store: Store, *, select: str = "final", filters: ReportFilters | None = None
                  ) -> Report:
    """Figure S3: SimCLR-sq, SimCLR-abs and SimCLR, online top-1."""
    printed = {(r["method"], r["projector"], int(r["dim"])): r["top1"] for r in fig_s3_stated()}
    notes = "; ".join(f"{r['method']} {r['projector']} d={r['dim']:g}: {r['top1']:.2f} "
                      f"({r['note']})" for r in fig_s3_stated())
    stated = (f"Paper (Figure S3, {PAPER_SETTING_TEXT}; per-point values not printed), in "
              f"rows of its own: squaring or taking absolute values costs nothing: {notes}. "
              "Δ = ours − paper where our setting is the paper's.")
    return _report(store, select, filters, name="fig-s3", names=FIG_S3_METHODS,
                   paper=printed, title="Figure S3: SimCLR-sq, SimCLR-abs and SimCLR",
                   stated=stated)

