"""``cka``: linear CKA between the representations of several networks (Figure S2).

Reads the latest completed comparison written by ``sslbench compare`` (an evaluation run with
method ``cka``, config ``runs``: the ordered run ids, ``"random"`` for a random-init network;
metrics ``cka/<i>/<j>`` for i <= j), or the one given by ``run_id``. With filters, only
comparisons whose pretraining runs all pass them are considered.

Each network is named as in Figure S2: ``VICReg-1024``, ``VICReg-exp-2048``, ``SimCLR-8192``
(SimCLR-Tuned, the paper's SimCLR), ``Random``; a second network with the same name gets
``#2``. Where both names are in Figure S2 the published value and Δ are put beside ours.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sslbench.errors import UnknownRunError
from sslbench.report.base import EmptyReportError, Report
from sslbench.report.filters import ReportFilters
from sslbench.report.frames import add_paper, agreement, agreement_text
from sslbench.report.labels import cka_label
from sslbench.report.protocols import check_select
from sslbench.report.published import PAPER_SETTING_TEXT, cka_lookup, fig_s2_cka
from sslbench.report.query import normalize_runs, pretrain_runs

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sslbench.db import Store

TOLERANCE = 0.05
RANDOM = "random"


def comparisons(store: Store, filters: ReportFilters) -> pd.DataFrame:
    """Completed CKA runs (newest last) whose pretraining runs all pass ``filters``."""
    cka = store.runs_frame(kind="eval", status="completed", method="cka",
                           dataset=filters.dataset, params=("runs", "labels"), summaries=None)
    if cka.empty or not filters.describe():
        return cka.sort_values(["ended_at", "created_at", "run_id"], na_position="first")
    kept = set(pretrain_runs(store, filters)["run_id"])
    ok = [all(r == RANDOM or r in kept for r in (runs or [])) for runs in cka["param.runs"]]
    return cka[ok].sort_values(["ended_at", "created_at", "run_id"], na_position="first")


def network_labels(store: Store, run_ids: list[str], stored: list[str]) -> list[str]:
    """Figure S2 names of the compared networks (module docstring)."""
    runs = normalize_runs(store.runs_frame(kind="pretrain", params=(
        "projector", "dim", "backbone", "epochs", "seed", "loss.temperature"), summaries=()))
    by_id = runs.set_index("run_id")
    labels: list[str] = []
    seen: dict[str, int] = {}
    for i, rid in enumerate(run_ids):
        if rid == RANDOM:
            label = "Random"
        elif rid in by_id.index:
            row = by_id.loc[rid]
            label = cka_label(row["method"], row["dim"])
        else:
            label = stored[i] if i < len(stored) else str(rid)
        seen[label] = seen.get(label, 0) + 1
        labels.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return labels


def cka_matrix(row: pd.Series, size: int) -> np.ndarray:
    """The symmetric matrix from a runs-frame row's ``final.cka/<i>/<j>`` columns."""
    matrix = np.full((size, size), np.nan)
    for i in range(size):
        for j in range(i, size):
            value = row.get(f"final.cka/{i}/{j}", math.nan)
            matrix[i, j] = matrix[j, i] = value
    return matrix


def _base(label: str) -> str:
    return label.split(" #")[0]


def cka_report(store: Store, *, select: str = "final", filters: ReportFilters | None = None,
               run_id: str | None = None) -> Report:
    """Figure S2: linear CKA between networks, beside the paper's values."""
    filters, select = filters or ReportFilters(), check_select(select)
    found = comparisons(store, filters)
    if run_id is not None:
        found = found[found["run_id"].str.startswith(run_id)]
        if len(found) != 1:
            raise UnknownRunError(f"no single completed CKA comparison with id {run_id!r}: list "
                                  "them with `sslbench runs list --kind eval`")
    if found.empty:
        raise EmptyReportError("no completed CKA comparison in the store "
                               f"{store.display_url}: run `sslbench compare RUN_ID RUN_ID ... "
                               "--random`")
    row = found.iloc[-1]
    run_ids = list(row["param.runs"] or [])
    labels = network_labels(store, run_ids, list(row.get("param.labels") or []))
    matrix = cka_matrix(row, len(run_ids))
    columns = pd.MultiIndex.from_product([labels, ("mean", "std", "n")], names=["vs", "stat"])
    data = [[v for j in range(len(labels)) for v in (matrix[i, j], math.nan, 1)]
            for i in range(len(labels))]
    frame = pd.DataFrame(data, index=pd.Index(labels, name="network"), columns=columns)
    frame[[c for c in columns if c[1] == "n"]] = frame[
        [c for c in columns if c[1] == "n"]].astype("int64")
    published = cka_lookup()
    frame = add_paper(frame, lambda key, b: published.get((_base(key[0]), _base(b))))
    summary = agreement(frame, TOLERANCE)
    caption = (f"Linear CKA between the representations of each pair of networks (comparison "
               f"run {row['run_id']}, dataset {row['dataset']}). Paper (Figure S2): "
               f"{PAPER_SETTING_TEXT}, three equally good runs per method plus a random "
               "network; SimCLR = SimCLR-Tuned; Δ = ours − paper. "
               + agreement_text(summary, unit="CKA"))
    notes = {"cka_run": row["run_id"], "runs": run_ids, "labels": labels, "select": select,
             "paper": PAPER_SETTING_TEXT, "agreement": summary, "tolerance": TOLERANCE,
             "filters": filters.describe()}
    ours = pd.DataFrame(matrix, index=labels, columns=labels)

    def draw() -> Figure:
        from sslbench.report.figures import cka_figure

        return cka_figure(ours, fig_s2_cka(), title="Figure S2: linear CKA")

    return Report(frame=frame, name="cka", notes=notes, caption=caption, figure=draw,
                  title="Figure S2: linear CKA between representations")

