"""``cka``: linear CKA between the representations of several networks (Figure S2).

Reads the latest completed comparison written by ``sslbench compare`` (an evaluation run with
method ``cka``, config ``runs``: the ordered run ids, ``"random"`` for a random-init network;
metrics ``cka/<i>/<j>`` for i <= j), or the one given by ``run_id``. With filters, only
comparisons whose pretraining runs all pass them are considered.

Each network is named as in Figure S2: ``VICReg-1024``, ``VICReg-exp-2048``, ``SimCLR-8192``
(SimCLR-Tuned, the paper's SimCLR), ``Random``; a network without a paper name says what ran
(``SimCLR τ=0.5 d=64``); a second network with the same name gets ``#2``. The paper's Figure S2
matrix follows in rows of its own; Δ rows are given where the comparison is in the paper's
setting (ImageNet-1k, ResNet-50, 100 epochs) and both names are in Figure S2. Agreement
statements leave out the diagonal (1 by definition).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sslbench.errors import UnknownRunError
from sslbench.report.base import EmptyReportError, Report
from sslbench.report.filters import ReportFilters
from sslbench.report.frames import agreement, agreement_text, with_paper
from sslbench.report.labels import cka_label
from sslbench.report.protocols import check_select
from sslbench.report.published import PAPER_SETTING_TEXT, comparable, fig_s2_cka
from sslbench.report.query import PRETRAIN_PARAMS, normalize_runs, pretrain_runs, runs_frame

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sslbench.db import Store

TOLERANCE = 0.05
RANDOM = "random"


def comparisons(store: Store, filters: ReportFilters) -> pd.DataFrame:
    """Completed CKA runs (newest last) whose pretraining runs all pass ``filters``."""
    cka = runs_frame(store, kind="eval", status="completed", method="cka",
                           dataset=filters.dataset, params=("runs", "labels"), summaries=None)
    if cka.empty or not filters.describe():
        return cka.sort_values(["ended_at", "created_at", "run_id"], na_position="first")
    kept = set(pretrain_runs(store, filters)["run_id"])
    ok = [all(r == RANDOM or r in kept for r in (runs or [])) for runs in cka["param.runs"]]
    return cka[ok].sort_values(["ended_at", "created_at", "run_id"], na_position="first")


def network_labels(store: Store, run_ids: list[str], stored: list[str]
                   ) -> tuple[list[str], tuple[str, Any]]:
    """Figure S2 names of the compared networks (module docstring), and the (backbone,
    epochs) of the trained ones (joined with ", " when they differ; "?" when unknown)."""
    runs = normalize_runs(runs_frame(store, kind="pretrain", params=PRETRAIN_PARAMS,
                                     summaries=()))
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
    trained = by_id.loc[[r for r in run_ids if r in by_id.index]]
    backbones = ", ".join(sorted(set(trained["backbone"]))) or "?"
    epochs = sorted(set(trained["epochs"]))
    return labels, (backbones, epochs[0] if len(epochs) == 1 else ", ".join(map(str, epochs)))


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


def cka_frame(matrix: np.ndarray, labels: list[str], setting: tuple[Any, ...]) -> pd.DataFrame:
    """Our matrix as a stat frame: rows (dataset, backbone, epochs, network), columns ``vs``."""
    columns = pd.MultiIndex.from_product([labels, ("mean", "std", "n")], names=["vs", "stat"])
    data = [[v for j in range(len(labels)) for v in (matrix[i, j], math.nan,
                                                     0 if math.isnan(matrix[i, j]) else 1)]
            for i in range(len(labels))]
    index = pd.MultiIndex.from_tuples([(*setting, label) for label in labels],
                                      names=["dataset", "backbone", "epochs", "network"])
    frame = pd.DataFrame(data, index=index, columns=columns)
    n_columns = [c for c in columns if c[1] == "n"]
    frame[n_columns] = frame[n_columns].astype("int64")
    return frame


def paper_cka_frame() -> pd.DataFrame:
    """Figure S2 as a stat frame: rows ``network``, columns ``vs``."""
    labels, matrix = fig_s2_cka()
    columns = pd.MultiIndex.from_product([list(labels), ("mean", "std", "n")],
                                         names=["vs", "stat"])
    data = [[v for value in row for v in (value, math.nan, 1)] for row in matrix]
    frame = pd.DataFrame(data, index=pd.Index(list(labels), name="network"), columns=columns)
    n_columns = [c for c in columns if c[1] == "n"]
    frame[n_columns] = frame[n_columns].astype("int64")
    return frame


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
    labels, (backbone, epochs) = network_labels(store, run_ids,
                                                list(row.get("param.labels") or []))
    matrix = cka_matrix(row, len(run_ids))
    setting = (str(row["dataset"]), backbone, epochs)
    paper_labels = set(fig_s2_cka()[0])
    frame = with_paper(
        cka_frame(matrix, labels, setting), paper_cka_frame(),
        comparable=lambda key: comparable(*key[:3]) and _base(key[3]) in paper_labels,
        paper_key=lambda key: (_base(key[3]),),
        column_order=[*labels, *fig_s2_cka()[0]])
    summary = agreement(frame, TOLERANCE, trivial=lambda key, vs: key[-1] == vs)
    why = (f"the comparison ({row['dataset']}, {backbone}, {epochs} epochs) is not in the "
           f"paper's setting ({PAPER_SETTING_TEXT}), so the paper's matrix is listed for "
           "reference only." if not comparable(*setting) else
           "no pair of our networks is a pair Figure S2 names (VICReg-1024, SimCLR-2048, ...).")
    caption = (f"Linear CKA between the representations of each pair of networks (comparison "
               f"run {row['run_id']}, dataset {row['dataset']}). Paper (Figure S2): "
               f"{PAPER_SETTING_TEXT}, three equally good runs per method plus a random "
               "network; SimCLR = SimCLR-Tuned; in rows of its own. Δ = ours − paper. "
               + agreement_text(summary, unit="CKA", why_none=why,
                                trivial="the diagonal, 1 by definition"))
    notes = {"cka_run": row["run_id"], "runs": run_ids, "labels": labels, "select": select,
             "paper": PAPER_SETTING_TEXT, "agreement": summary, "tolerance": TOLERANCE,
             "filters": filters.describe()}
    ours = pd.DataFrame(matrix, index=labels, columns=labels)

    def draw() -> Figure:
        from sslbench.report.figures import cka_figure

        return cka_figure(ours, fig_s2_cka(), title="Figure S2: linear CKA")

    return Report(frame=frame, name="cka", notes=notes, caption=caption, figure=draw,
                  title="Figure S2: linear CKA between representations")

