"""``fig-s8``: covariance and Gram matrices (Figure S8), as the analysis protocol drew them.

The ``analysis`` protocol draws each network's matrices when it runs and records the image as
an artifact of its evaluation (``matrices.png``: the covariance of the first 64 embedding
dimensions and the Gram matrix of the first 64 L2-normalised embeddings, on a symmetric colour
scale); the matrices themselves are not stored. This report lists those images and puts them
side by side (the first :data:`MAX_SHOWN`); an image whose file is not on this machine (another
``SSLBENCH_HOME``) is listed as missing. The paper (Appendix J) shows VICReg, VICReg-exp,
VICReg-ctr and SimCLR-Tuned at 2048-d, on embeddings and on representations; sslbench draws
the embeddings' only.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pandas as pd

from sslbench.report.base import EmptyReportError, Report
from sslbench.report.filters import ReportFilters
from sslbench.report.grid import where
from sslbench.report.labels import method_key
from sslbench.report.protocols import check_select
from sslbench.report.published import PAPER_SETTING_TEXT
from sslbench.report.query import evaluated_runs, settings_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sslbench.db import Store

ROWS = ["dataset", "backbone", "epochs", "method", "projector", "dim"]
IMAGE = "matrices.png"
MAX_SHOWN = 8


def matrix_images(store: Store, nets: pd.DataFrame) -> pd.DataFrame:
    """One row per network: :data:`ROWS`, ``analysis run``, ``image`` (the file name, "–" when
    none was recorded), ``on disk`` and ``path`` (the recorded path, "" when none)."""
    records = []
    for net in nets.itertuples(index=False):
        paths = [a["path"] for a in store.artifacts(net.eval_id)
                 if os.path.basename(str(a["path"])) == IMAGE]
        path = str(paths[-1]) if paths else ""
        records.append({**{k: getattr(net, k) for k in ROWS}, "analysis run": net.eval_id,
                        "image": IMAGE if path else "–",
                        "on disk": "yes" if path and os.path.isfile(path) else "no",
                        "path": path})
    frame = pd.DataFrame(records, columns=[*ROWS, "analysis run", "image", "on disk", "path"])
    frame = frame.assign(_m=[method_key(m) for m in frame["method"]]).sort_values(
        ["dataset", "backbone", "epochs", "_m", "projector", "dim"]).drop(columns="_m")
    return frame.set_index(ROWS)


def fig_s8_report(store: Store, *, select: str = "final", filters: ReportFilters | None = None
                  ) -> Report:
    """Figure S8: the covariance and Gram matrices the analysis protocol drew."""
    filters, select = filters or ReportFilters(), check_select(select)
    nets = evaluated_runs(store, filters, ["rankme_emb"])
    if nets.empty:
        raise EmptyReportError(f"no completed analysis evaluation{where(filters)} in the store "
                               f"{store.display_url}: run `sslbench eval RUN_ID --protocol "
                               "analysis`")
    images = matrix_images(store, nets.astype({"dim": "Int64"}))
    shown = [(", ".join(str(v) for v in key[3:]) + f" ({key[0]}, {key[2]} ep)", path)
             for key, path in zip(images.index, images["path"])
             if os.path.isfile(path)][:MAX_SHOWN]
    frame = images.drop(columns="path")  # long paths: in the notes, not the table
    missing = int((frame["on disk"] == "no").sum())
    caption = (
        "Covariance of the first 64 embedding dimensions (left) and Gram matrix of the first 64 "
        "L2-normalised embeddings (right) of each network, drawn by the analysis protocol on a "
        f"symmetric colour scale, in the analysis run's folder (paths in the notes); the figure "
        f"shows the first {MAX_SHOWN} found on disk. Ours: "
        f"{settings_text(nets)} (epochs 0 = random init)."
        + (f" {missing} image(s) not on this machine (SSLBENCH_HOME holds them)." if missing
           else "")
        + f" Paper (Figure S8, {PAPER_SETTING_TEXT}): VICReg, VICReg-exp, VICReg-ctr and "
        "SimCLR-Tuned at 2048-d, embeddings and representations; every matrix diagonal-"
        "dominant, the sample-contrastive methods (VICReg-ctr, SimCLR) the noisiest in "
        "embedding space, differences mostly gone in representation space; no numbers.")
    notes = {"select": select, "ours": settings_text(nets), "paper": PAPER_SETTING_TEXT,
             "images": dict(zip(images["analysis run"], images["path"])), "shown": len(shown),
             "missing": missing, "filters": filters.describe()}

    def draw() -> Figure:
        from sslbench.report.figures import image_grid_figure

        return image_grid_figure(shown, title="Figure S8: covariance and Gram matrices")

    return Report(frame=frame, name="fig-s8", notes=notes, caption=caption,
                  figure=draw if shown else None,
                  title="Figure S8: covariance and Gram matrices of the embeddings")
