"""``fig-s4``: cosine similarities of negative pairs (Figure S4).

The ``analysis`` protocol stores, for each network, the histogram of the cosine similarities of
all distinct pairs of its embeddings (series ``neg_cos_hist``: counts of equal bins spanning
[-1, 1]) and their mean and variance (``neg_cos_mean``, ``neg_cos_var``). The table gives those
two with what embeddings spread uniformly on the sphere of their M dimensions would show
(Proposition 3.1 / Lemma C.1: mean 0, variance 1/M) and 1/variance, the dimension such a uniform
spread would need (the paper reads the spread as dimensional collapse: Var = 1/D, D the
effective dimension). The figure draws the histograms (counts averaged over seeds), one panel
per method, with the uniform-sphere counts dashed. The paper prints no numbers: its SimCLR-abs,
SimCLR-sq and SimCLR histograms are centred at 0, SimCLR-sq the widest, SimCLR-abs the
narrowest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sslbench.report.base import EmptyReportError, Report
from sslbench.report.filters import ReportFilters
from sslbench.report.frames import seed_stats, wide
from sslbench.report.grid import where
from sslbench.report.protocols import check_select
from sslbench.report.published import PAPER_SETTING_TEXT
from sslbench.report.query import evaluated_runs, random_beside_trained, settings_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sslbench.db import Store

ROWS = ("dataset", "backbone", "epochs", "method", "projector", "dim")
QUANTITIES = ("neg_cos_mean", "neg_cos_var", "uniform_var", "effective_dim")
HEADERS = {"neg_cos_mean": "mean cos", "neg_cos_var": "var cos",
           "uniform_var": "1/M (uniform)", "effective_dim": "1/var"}
SERIES = "neg_cos_hist"
#: The paper's panels, left to right.
PAPER_ORDER = ("SimCLR-abs", "SimCLR-sq", "SimCLR-Tuned")


def bin_centres(bins: int) -> np.ndarray:
    """Centres of ``bins`` equal bins spanning [-1, 1] (the analysis protocol's histogram)."""
    edges = np.linspace(-1.0, 1.0, bins + 1)
    return (edges[:-1] + edges[1:]) / 2


def uniform_counts(total: float, bins: int, m: int) -> np.ndarray | None:
    """Expected counts of ``total`` cosines between independent uniform points of the sphere
    in R^m, in ``bins`` equal bins of [-1, 1]: density ∝ (1 - x²)^((m-3)/2) (Lemma C.1's
    Beta((m-1)/2, (m-1)/2) on (x+1)/2), integrated per bin; None for m < 3."""
    if m < 3:
        return None
    fine = np.linspace(-1.0, 1.0, bins * 200 + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        density = np.exp((m - 3) / 2 * np.log1p(-np.minimum(fine * fine, 1.0)))
    density = np.nan_to_num(density, posinf=0.0)
    pieces = (density[:-1] + density[1:]) / 2 * np.diff(fine)
    per_bin = pieces.reshape(bins, 200).sum(axis=1)
    return total * per_bin / per_bin.sum()


def histograms(store: Store, nets: pd.DataFrame) -> dict[tuple[Any, ...], np.ndarray]:
    """``{row key: counts averaged over the group's networks}``."""
    found: dict[tuple[Any, ...], list[np.ndarray]] = {}
    for net in nets.itertuples(index=False):
        history = store.metrics_frame(net.eval_id, SERIES)
        if len(history):
            key = tuple(getattr(net, level) for level in ROWS)
            found.setdefault(key, []).append(history.sort_values("step")["value"].to_numpy())
    return {k: np.mean(np.stack(v), axis=0) for k, v in found.items()
            if len({len(c) for c in v}) == 1}


def fig_s4_report(store: Store, *, select: str = "final", filters: ReportFilters | None = None
                  ) -> Report:
    """Figure S4: negative-pair cosine similarities, table and histograms."""
    filters, select = filters or ReportFilters(), check_select(select)
    nets = evaluated_runs(store, filters, ["neg_cos_var", "neg_cos_mean"])
    if nets.empty:
        raise EmptyReportError(f"no completed analysis evaluation{where(filters)} in the store "
                               f"{store.display_url}: run `sslbench eval RUN_ID --protocol "
                               "analysis`")
    nets = random_beside_trained(nets.dropna(subset=["dim"]).astype({"dim": "int64"}))
    values = {"neg_cos_mean": nets["final.neg_cos_mean"].astype(float),
              "neg_cos_var": nets["final.neg_cos_var"].astype(float),
              "uniform_var": 1.0 / nets["dim"].astype(float),
              "effective_dim": 1.0 / nets["final.neg_cos_var"].astype(float)}
    cells = pd.concat([nets[list(ROWS)].assign(quantity=q, value=v) for q, v in values.items()],
                      ignore_index=True).dropna(subset=["value"])
    frame = wide(seed_stats(cells, (*ROWS, "quantity")), ROWS, "quantity",
                 column_order=QUANTITIES)
    counts = histograms(store, nets)
    caption = (
        "Cosine similarities of all distinct pairs of embeddings (negative pairs) of each "
        "network, from the analysis protocol: their mean and variance, beside what embeddings "
        "spread uniformly on the sphere of their M dimensions would give (mean 0, variance "
        "1/M: Proposition 3.1, Lemma C.1) and 1/variance, the dimension such a spread would "
        f"need. Mean ± std over seeds (n networks). Ours: {settings_text(nets)}; Random = an "
        "untrained network. The figure: the histograms (counts, averaged over seeds), the "
        f"uniform-sphere counts dashed. Paper (Figure S4, {PAPER_SETTING_TEXT}, ImageNet): no "
        "numbers printed; SimCLR-abs, SimCLR-sq and SimCLR are all centred at 0, SimCLR-sq the "
        "widest and SimCLR-abs the narrowest, as dimensional collapse predicts (Var = 1/D).")
    notes = {"select": select, "ours": settings_text(nets), "paper": PAPER_SETTING_TEXT,
             "histograms": len(counts), "filters": filters.describe()}

    def draw() -> Figure:
        from sslbench.report.figures import histogram_figure

        return histogram_figure(counts, order=PAPER_ORDER,
                                title="Figure S4: cosine similarity of negative pairs")

    return Report(frame=frame, name="fig-s4", notes=notes, caption=caption, headers=HEADERS,
                  figure=draw if counts else None, digits=4,
                  title="Figure S4: negative-pair cosine similarities")
