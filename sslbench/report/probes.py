"""``table-s2-s3``: online vs offline linear probe of the same runs (Tables S2 and S3).

For every completed pretraining run that has both an online top-1 (its own probe, final or best
epoch) and an offline one (``linear_top1``, its latest completed ``linear`` evaluation), the
two values are tabulated side by side: rows (dataset, backbone, epochs, method, projector,
probe), columns embedding dims. The paper's VICReg (Table S2) and VICReg-exp (Table S3) rows
(8192-8192-d projector) follow in rows of their own; a Δ row is given where our setting is the
paper's and, for the offline rows, where every offline probe ran the paper's protocol (Appendix
E: 100 epochs, batch 1024, crop-flip, raw representations).

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
    agreement,
    agreement_text,
    linear_fit,
    published_frame,
    seed_stats,
    wide,
    with_paper,
)
from sslbench.report.grid import (
    FAMILIES_NOTE,
    SETTING,
    TOLERANCE,
    no_runs,
    simclr_note,
    where,
    why_no_delta,
)
from sslbench.report.protocols import PROTOCOLS, check_select, select_text
from sslbench.report.published import (
    PAPER_OFFLINE_PROBE_TEXT,
    PAPER_REGRESSION,
    PAPER_SETTING_TEXT,
    comparable,
    table_s2_s3,
)
from sslbench.report.query import (
    augment_text,
    completed_evals,
    latest_children,
    offline_probe_differences,
    pretrain_runs,
    probe_columns,
    probe_text,
    settings_text,
    with_children,
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
    evaluated = with_children(runs, chosen)
    offline = evaluated["run_id"].map(chosen["value"])
    paired = evaluated.assign(online=evaluated[f"{select}.online_top1"],
                              offline=offline.astype(float), **probe_columns(evaluated, chosen))
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
    settings = [s for s in paired[list(SETTING)].drop_duplicates().itertuples(index=False)
                if comparable(*s)]
    if complete and settings:
        keys = dict.fromkeys((m, f, p) for m, f, _, p in paper)
        extra_rows = [(*s, *k) for s in settings for k in keys]
        extra_columns = tuple(sorted({d for _, _, d, _ in paper}))
    frame = wide(stats, PROBE_ROWS, "dim", extra_rows=extra_rows, extra_columns=extra_columns)
    published = published_frame({(m, f, p, d): v for (m, f, d, p), v in paper.items()},
                                ("method", "projector", "probe"), "dim")
    offline_rows = _paper_protocol_rows(cells)
    frame = with_paper(frame, published, comparable=lambda key: comparable(*key[:3]) and (
        key[5] == "online" or key in offline_rows))
    ours, printed = regression(paired), published_regression()
    probe = probe_text(paired, "linear_top1")
    differences = offline_probe_differences(paired)
    summary = agreement(frame, TOLERANCE)
    caption = " ".join(p for p in [
        f"Top-1 (%) of the same runs with two probes: online = {PROTOCOLS['online_top1']} "
        f"({select_text(select, 'online_top1')}); offline = {PROTOCOLS['linear_top1']}, "
        f"latest completed evaluation ({probe}). Runs with both values only; mean ± std over "
        "seeds (n runs); – = no run.",
        f"Ours: {settings_text(paired)}{augment_text(paired)}.",
        f"Paper (Table S2: VICReg, Table S3: VICReg-exp; 8192-8192-d), in rows of its own: "
        f"{PAPER_SETTING_TEXT}; offline probe {PAPER_OFFLINE_PROBE_TEXT}; Δ = ours − paper "
        "where our setting and probe are the paper's.",
        (f"Our offline probes differ from the paper's in: {'; '.join(differences)}; offline "
         "rows with such probes have no Δ." if differences else ""),
        agreement_text(summary, why_none=why_no_delta(paired)),
        f"Regression offline = slope × online + intercept: ours {_fit_text(ours)}; paper "
        f"states slope {PAPER_REGRESSION['slope']}, intercept {PAPER_REGRESSION['intercept']}, "
        f"R² {PAPER_REGRESSION['r2']} (refit of its printed cells: {_fit_text(printed)}).",
        simclr_note(paired), FAMILIES_NOTE] if p)
    notes = {"metrics": ["online_top1", "linear_top1"], "select": select,
             "ours": settings_text(paired), "paper": PAPER_SETTING_TEXT,
             "probe": probe, "probe_differences": differences,
             "regression": {"ours": ours, "paper_stated": dict(PAPER_REGRESSION),
                            "paper_refit": printed},
             "agreement": summary, "tolerance": TOLERANCE, "filters": filters.describe()}
    return Report(frame=frame, name="table-s2-s3", notes=notes, caption=caption,
                  title="Tables S2/S3: online vs offline linear probe top-1 (%)")


def _paper_protocol_rows(cells: pd.DataFrame) -> set[tuple[Any, ...]]:
    """The offline row keys all of whose probes ran the paper's protocol."""
    keys = [*SETTING, "method", "projector"]
    return {(*key, "offline") for key, group in cells.groupby(keys)
            if not offline_probe_differences(group)}
