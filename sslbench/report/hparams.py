"""``hparams``: the hyperparameters the runs actually used, in the layout of Table S6.

One row per (dataset, backbone, epochs, method, dim) of completed pretraining runs with, for each
Table S6 column (batch size, base lr, Sim. λ, Var. µ, Cov. ν, τ), the distinct values the runs
used (``"0.3, 0.5"`` when they differ), the number of runs, and which columns differ from the
Table S6 row for that method and dimension (a simclr run not named SimCLR-Tuned is compared with
SimCLR-Tuned's row: the differences say why it is not). Table S6 follows in rows of its own.

Loss weights come from the resolved loss config: VICReg-style ``sim_coeff`` / ``std_coeff`` /
``cov_coeff``, and ``temperature`` for τ.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from sslbench.report.base import Report
from sslbench.report.filters import ReportFilters
from sslbench.report.grid import no_runs, simclr_note
from sslbench.report.labels import method_key
from sslbench.report.protocols import check_select
from sslbench.report.published import PAPER_SETTING, PAPER_SETTING_TEXT, s6_row, table_s6
from sslbench.report.query import augment_text, pretrain_runs, settings_text
from sslbench.report.render import OURS, PAPER, SOURCE

if TYPE_CHECKING:
    from sslbench.db import Store

ROWS = ("dataset", "backbone", "epochs", "method", "dim")
#: How the text formats head the columns.
HEADERS = {"batch_size": "batch", "base_lr": "base lr", "sim": "Sim. λ", "var": "Var. µ",
           "cov": "Cov. ν", "tau": "τ", "matches": "vs Table S6"}
#: Table S6 column -> the run param that holds it.
S6_PARAMS = {"batch_size": "batch_size", "base_lr": "lr", "sim": "loss.sim_coeff",
             "var": "loss.std_coeff", "cov": "loss.cov_coeff", "tau": "loss.temperature"}
RECIPE = {"optimizer": "optimizer", "weight decay": "weight_decay",
          "warm-up epochs": "warmup_epochs"}
PAPER_RECIPE = "LARS, weight decay 1e-6, 10 warm-up epochs"


def distinct(values: pd.Series) -> str:
    """Distinct values, sorted, as ``"0.3, 0.5"`` (numbers with ``g``); ``"–"`` when none."""
    found = sorted({v for v in values.drop_duplicates() if not _missing(v)},
                   key=lambda v: (str(type(v)), v))
    if not found:
        return "–"
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in found)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _same(ours: str, paper: str) -> bool:
    """One of our values equal to the paper's, or neither has one."""
    if paper == "":
        return ours == "–"
    try:
        return ours != "–" and "," not in ours and math.isclose(float(ours), float(paper))
    except ValueError:
        return ours == paper


def s6_method(method: str, name: str) -> str:
    """The Table S6 row a run labelled ``method`` (registry name ``name``) is compared with."""
    return "SimCLR-Tuned" if name == "simclr" and method != "SimCLR-Orig" else method


def hparams_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """The plain table (module docstring): index (source, dataset, backbone, epochs, method,
    dim), columns ``runs``, :data:`S6_PARAMS` and ``matches``."""
    records = []
    groups = sorted(runs.groupby(list(ROWS)), key=lambda item: (
        *item[0][:3], method_key(item[0][3]), item[0][4]))
    for key, group in groups:
        method, dim = key[3], int(key[4])
        paper = s6_row(s6_method(method, group["method_name"].iloc[0]), dim)
        record: dict[str, Any] = {SOURCE: OURS, **dict(zip(ROWS, key)), "dim": str(dim),
                                  "runs": len(group)}
        differs = []
        for column, param in S6_PARAMS.items():
            record[column] = ours = distinct(group[f"param.{param}"])
            if paper is not None and not _same(ours, paper[column]):
                differs.append(HEADERS[column])
        record["matches"] = ("no Table S6 row" if paper is None else
                             f"{paper['method']}: " + ("same" if not differs else
                                                       "differs in " + ", ".join(differs)))
        records.append(record)
    for row in table_s6():
        record = {SOURCE: PAPER, **dict(zip(ROWS[:3], PAPER_SETTING)), "method": row["method"],
                  "dim": row["dims"].replace("not-8192", "≠ 8192"), "runs": None}
        record.update({column: row[column] or "–" for column in S6_PARAMS})
        records.append(record)
    frame = pd.DataFrame(records).set_index([SOURCE, *ROWS])
    return frame.astype({"runs": "Int64"})


def hparams_report(store: Store, *, select: str = "final", filters: ReportFilters | None = None
                   ) -> Report:
    """Table S6: hyperparameters used by the runs, beside the paper's."""
    filters, select = filters or ReportFilters(), check_select(select)
    params = tuple(S6_PARAMS.values()) + tuple(RECIPE.values())
    runs = pretrain_runs(store, filters, params=params)
    if runs.empty:
        raise no_runs(store, filters)
    runs = runs.dropna(subset=["dim"]).astype({"dim": "int64"})
    frame = hparams_frame(runs)
    recipe = "; ".join(f"{name} {distinct(runs[f'param.{p}'])}" for name, p in RECIPE.items())
    caption = (f"Hyperparameters of the completed pretraining runs (distinct values when runs "
               f"of a row differ; base lr before scaling by batch size / 256) beside Table S6's. "
               f"Ours: {settings_text(runs)}{augment_text(runs)}; {recipe}. Paper (Table S6): "
               f"{PAPER_SETTING_TEXT}, "
               f"{PAPER_RECIPE}, in rows of its own; Sim./Var./Cov. are λ/µ/ν of VICReg and "
               f"its variants, τ the temperature. {simclr_note(runs)}").rstrip()
    notes = {"select": select, "ours": settings_text(runs), "paper": PAPER_SETTING_TEXT,
             "filters": filters.describe()}
    return Report(frame=frame, name="hparams", notes=notes, caption=caption, headers=HEADERS,
                  title="Table S6: hyperparameters used")
