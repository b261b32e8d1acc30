"""``spectra``: singular-value spectra of representations and embeddings (Figure S5).

The ``analysis`` protocol stores the singular values of the centred representation and
embedding matrices as series ``sv_repr`` / ``sv_emb`` (step = rank, descending). Each spectrum is
normalised by its largest value and shown as ``log(σ_k / σ_1)`` (natural log) against ``k``;
runs of one group (setting, method, projector, dim) are averaged rank by rank (mean ± std, n).
Zero singular values (exact rank deficiency) have no logarithm and are left out.

The paper plots 512-d embeddings (``dim=512``); it states that SimCLR-abs is nearly full rank
while SimCLR collapses around 256 dimensions and SimCLR-sq around 64, and prints no numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sslbench.report.base import EmptyReportError, Report
from sslbench.report.filters import ReportFilters
from sslbench.report.labels import method_key
from sslbench.report.protocols import check_select
from sslbench.report.published import PAPER_SETTING_TEXT
from sslbench.report.query import evaluated_runs, settings_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sslbench.db import Store

GROUP = ("dataset", "backbone", "epochs", "method", "projector", "dim")
SERIES = {"repr": "sv_repr", "emb": "sv_emb"}
#: The report frame's index (its text formats show one panel per dataset, backbone, epochs).
LEVELS = [*GROUP, "space", "index"]


def log_spectrum(values: np.ndarray) -> np.ndarray:
    """``log(σ_k / σ_1)`` of descending singular values; NaN where σ_k <= 0 or non-finite."""
    values = np.asarray(values, dtype=float)
    if values.size == 0 or not np.isfinite(values[0]) or values[0] <= 0:
        return np.full(values.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        out: np.ndarray = np.log(values / values[0])
    out[~np.isfinite(out)] = np.nan
    return out


def spectra_points(store: Store, nets: pd.DataFrame) -> pd.DataFrame:
    """One row per (network, space, rank): :data:`GROUP`, ``space``, ``index``, ``value``."""
    parts = []
    for net in nets.itertuples(index=False):
        for space, key in SERIES.items():
            history = store.metrics_frame(net.eval_id, key)
            if history.empty:
                continue
            parts.append(pd.DataFrame({
                **{g: getattr(net, g) for g in GROUP}, "space": space,
                "index": history["step"].to_numpy(),
                "value": log_spectrum(history["value"].to_numpy())}))
    if not parts:
        return pd.DataFrame(columns=[*GROUP, "space", "index", "value"])
    return pd.concat(parts, ignore_index=True)


def spectra_frame(points: pd.DataFrame) -> pd.DataFrame:
    """Mean / std / n of the log spectrum at each rank of each group, indexed by
    :data:`LEVELS` (methods in the paper's order)."""
    points = points.dropna(subset=["value"])
    stats = points.groupby([*GROUP, "space", "index"])["value"].agg(
        mean="mean", std="std", n="count").reset_index()
    stats["_m"] = [method_key(m) for m in stats["method"]]
    stats = stats.sort_values(["dataset", "backbone", "epochs", "_m", "projector", "dim",
                               "space", "index"]).drop(columns="_m")
    return stats.set_index(LEVELS)


def spectrum_labels(frame: pd.DataFrame) -> list[str]:
    """A legend label per row of a :func:`spectra_frame`: ``"VICReg, 2048-d, d=64"``, with the
    setting when the frame has several."""
    keys = frame.index.to_frame(index=False)
    trained = keys[keys["epochs"] > 0]
    several = (keys[["dataset", "backbone"]].drop_duplicates().shape[0] > 1
               or trained["epochs"].nunique() > 1)
    return [f"{m}, {p}, d={d}" + (f" ({ds}, {bb}, {ep} ep)" if several else "")
            for ds, bb, ep, m, p, d in keys[list(GROUP)].itertuples(index=False)]


def spectra_report(store: Store, *, select: str = "final", filters: ReportFilters | None = None,
                   dim: int | None = None) -> Report:
    """Figure S5: log singular-value spectra (``dim``: only embeddings of that width)."""
    filters, select = filters or ReportFilters(), check_select(select)
    nets = evaluated_runs(store, filters, ["rankme_emb", "rankme_repr"])
    if dim is not None:
        nets = nets[nets["dim"] == dim]
    hint = " with embedding dim " + str(dim) if dim is not None else ""
    if nets.empty:
        raise EmptyReportError(f"no completed analysis evaluation{hint} in the store "
                               f"{store.display_url}: run `sslbench eval RUN_ID --protocol "
                               "analysis`")
    nets = nets.assign(dim=nets["dim"].fillna(0).astype("int64"))
    points = spectra_points(store, nets)
    if points.empty:
        raise EmptyReportError("the analysis evaluations hold no singular values (sv_repr / "
                               "sv_emb): re-run `sslbench eval RUN_ID --protocol analysis` with "
                               "this version of sslbench")
    frame = spectra_frame(points)
    rankme = nets.groupby(["method", "projector", "dim"])[
        ["final.rankme_repr", "final.rankme_emb"]].mean().reset_index()
    rankme_notes = [{"method": m, "projector": p, "dim": int(d), "rankme_repr": r, "rankme_emb": e}
                    for m, p, d, r, e in rankme.itertuples(index=False)]
    caption = (f"Singular values of the centred representation (a) and embedding (b) matrices "
               f"from the analysis protocol, log(σ_k / σ_1) against rank k; mean ± std over "
               f"seeds (n networks). Ours: {settings_text(nets)} (epochs 0 = random init). "
               f"Paper (Figure S5, {PAPER_SETTING_TEXT}, 512-d embeddings, ImageNet train "
               "set): SimCLR-abs nearly full rank, SimCLR collapsing around 256 dims, SimCLR-sq "
               "around 64; no numbers printed.")
    notes = {"select": select, "ours": settings_text(nets), "rankme": rankme_notes,
             "dim": dim, "filters": filters.describe()}

    def draw() -> Figure:
        from sslbench.report.figures import spectra_figure

        return spectra_figure(frame, title="Figure S5: singular-value spectra")

    return Report(frame=frame, name="spectra", notes=notes, caption=caption, figure=draw,
                  title="Figure S5: singular-value spectra (log σ_k / σ_1)", digits=3)
