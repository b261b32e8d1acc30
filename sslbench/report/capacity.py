"""``fig-s7``: online top-1 against the number of projector parameters (Figure S7).

A projector ``X-Y-Z`` on a representation of width R has, as sslbench builds it (Linear, then
BatchNorm and ReLU after every layer but the last, which has no bias):
``R·X + X + 2X`` + ``X·Y + Y + 2Y`` + ``Y·Z``. The representation width is the backbone's
(:data:`REPRESENTATION_DIMS`). The paper's points are Table S5's cells of the methods in Figure
S7 (its "SimCLR" taken as SimCLR-Tuned) counted the same way for ResNet-50's 2048-d
representation; the counts it states (151M, 86M, 10M) are those of its weights alone, which our
count exceeds by under 0.2% (the hidden layers' biases and BatchNorm).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

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
from sslbench.report.grid import TOLERANCE, no_runs, simclr_note, why_no_delta
from sslbench.report.labels import projector_widths
from sslbench.report.protocols import PROTOCOLS, check_select, select_text
from sslbench.report.published import PAPER_SETTING_TEXT, comparable, fig_s7_stated, table_s5
from sslbench.report.query import augment_text, pretrain_runs, settings_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sslbench.db import Store

#: The representation width of each backbone (checked against the models by a test).
REPRESENTATION_DIMS = {"small": 256, "tiny": 128, "resnet18": 512, "resnet50": 2048}
#: Figure S7's methods, as Table S5 names them.
PAPER_METHODS = ("VICReg", "VICReg-exp", "VICReg-ctr", "SimCLR-Tuned")
ROWS = ("dataset", "backbone", "epochs", "method", "projector", "parameters")
COLUMN = "online top-1"


def projector_parameters(widths: Sequence[int], in_dim: int) -> int:
    """Parameters of sslbench's projector of layer ``widths`` on ``in_dim`` inputs (module
    docstring); 0 for no projector."""
    count, previous = 0, in_dim
    for width in widths[:-1]:
        count += previous * width + width + 2 * width  # weights, bias, BatchNorm's scale+shift
        previous = width
    return count + (previous * widths[-1] if widths else 0)


def _parameters(spec: Any, dim: Any, backbone: Any) -> tuple[str, int | None]:
    widths = projector_widths(spec, dim)
    in_dim = REPRESENTATION_DIMS.get(str(backbone))
    if widths is None or in_dim is None:
        return str(spec), None
    return "-".join(map(str, widths)), projector_parameters(widths, in_dim)


def paper_points() -> dict[tuple[str, str, int, str], float]:
    """Figure S7's points: ``{(method, projector widths, parameters, column): top-1}`` from
    Table S5 (an architecture two families share counted once)."""
    out = {}
    for (method, family, dim), top1 in table_s5().items():
        if method in PAPER_METHODS:
            widths, count = _parameters(family, dim, "resnet50")
            assert count is not None
            out[(method, widths, count, COLUMN)] = top1
    return out


def fig_s7_report(store: Store, *, select: str = "final", filters: ReportFilters | None = None
                  ) -> Report:
    """Figure S7: online top-1 against projector parameters."""
    filters, select = filters or ReportFilters(), check_select(select)
    runs = pretrain_runs(store, filters, metrics=("online_top1",))
    if runs.empty:
        raise no_runs(store, filters)
    nets = runs[["projector", "dim", "backbone"]]  # a few architectures, many runs
    codes = nets.groupby(list(nets.columns), dropna=False, sort=False).ngroup().to_numpy()
    known = [_parameters(*net) for net in nets.drop_duplicates().itertuples(index=False)]
    counted = [known[code] for code in codes.tolist()]
    cells = runs.assign(projector=[w for w, _ in counted], parameters=[c for _, c in counted],
                        value=runs[f"{select}.online_top1"], column=COLUMN)
    unknown = sorted(set(cells.loc[cells["parameters"].isna(), "backbone"]))
    cells = cells.dropna(subset=["parameters", "value"]).astype({"parameters": "int64"})
    if cells.empty:
        raise EmptyReportError("no completed pretraining run with an online top-1 and a "
                               f"projector sslbench can count{where_unknown(unknown)}: run "
                               "`sslbench train`")
    frame = wide(seed_stats(cells, (*ROWS, "column")), ROWS, "column")
    frame = with_paper(frame, published_frame(paper_points(), ROWS[3:], "column"),
                       comparable=lambda key: comparable(*key[:3]))
    summary = agreement(frame, TOLERANCE)
    stated = "; ".join(
        f"{r['method']} {r['projector']}: " + ", ".join(
            part for part in (f"{r['params_m']:g}M parameters (ours: "
                              f"{_millions(r['projector'])})" if r["params_m"] == r["params_m"]
                              else "", f"{r['top1']:.2f}%" if r["top1"] == r["top1"] else "",
                              r["note"]) if part)
        for r in fig_s7_stated())
    caption = " ".join(p for p in [
        f"Top-1 (%) of the {PROTOCOLS['online_top1']} ({select_text(select, 'online_top1')}) "
        "against the projector's parameter count, computed from its spec and the backbone's "
        "representation width (Linear + BatchNorm per hidden layer, last layer without bias). "
        "Mean ± std over seeds (n runs).",
        f"Ours: {settings_text(runs)}{augment_text(runs)}{where_unknown(unknown)}.",
        f"Paper (Figure S7, {PAPER_SETTING_TEXT}): Table S5's cells of VICReg, VICReg-exp, "
        "VICReg-ctr and SimCLR (taken as SimCLR-Tuned) at the same counts, in rows of their "
        f"own. It states: {stated}.",
        agreement_text(summary, why_none=why_no_delta(runs)), simclr_note(runs)] if p)
    notes = {"select": select, "ours": settings_text(runs), "paper": PAPER_SETTING_TEXT,
             "representation_dims": REPRESENTATION_DIMS, "agreement": summary,
             "tolerance": TOLERANCE, "filters": filters.describe()}

    def draw() -> Figure:
        from sslbench.report.curves import capacity_figure

        return capacity_figure(frame, title="Figure S7: online top-1 vs projector parameters")

    return Report(frame=frame, name="fig-s7", notes=notes, figure=draw, caption=caption,
                  title="Figure S7: online top-1 (%) vs projector parameters")


def _millions(projector: str) -> str:
    widths = projector_widths(projector, None)
    assert widths
    return f"{projector_parameters(widths, REPRESENTATION_DIMS['resnet50']) / 1e6:.1f}M"


def where_unknown(backbones: list[str]) -> str:
    """Runs left out because their backbone's representation width is unknown, for a
    caption."""
    return (f" (runs of backbone {', '.join(backbones)} left out: representation width "
            "unknown)") if backbones else ""
