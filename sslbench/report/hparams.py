"""``hparams``: the hyperparameters the runs actually used, in the layout of Table S6.

One row per (dataset, backbone, epochs, method, dim) of completed pretraining runs; for each
Table S6 column (batch size, base lr, Sim. λ, Var. µ, Cov. ν, τ) the distinct values the runs
used (``"0.3, 0.5"`` when they differ) beside the paper's row for that method and dimension, and
a ``matches`` column naming the columns that differ. Table S6 rows that no run matched are
listed at the end with the paper's values only.

Loss weights come from the resolved loss config: VICReg-style ``sim_coeff`` / ``std_coeff`` /
``cov_coeff``, and ``temperature`` for τ.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from sslbench.report.base import Report
from sslbench.report.filters import ReportFilters
from sslbench.report.grid import SIMCLR_NOTE, no_runs
from sslbench.report.protocols import check_select
from sslbench.report.published import PAPER_SETTING_TEXT, s6_row, table_s6
from sslbench.report.query import pretrain_runs, settings_text

if TYPE_CHECKING:
    from sslbench.db import Store

ROWS = ("dataset", "backbone", "epochs", "method", "dim")
#: Table S6 column -> the run param that holds it.
S6_PARAMS = {"batch_size": "batch_size", "base_lr": "lr", "sim": "loss.sim_coeff",
             "var": "loss.std_coeff", "cov": "loss.cov_coeff", "tau": "loss.temperature"}
RECIPE = {"optimizer": "optimizer", "weight decay": "weight_decay",
          "warm-up epochs": "warmup_epochs"}
PAPER_RECIPE = "LARS, weight decay 1e-6, 10 warm-up epochs"


def distinct(values: pd.Series) -> str:
    """Distinct values, sorted, as ``"0.3, 0.5"`` (numbers with ``g``); ``"–"`` when none."""
    found = sorted({v for v in values if not _missing(v)}, key=lambda v: (str(type(v)), v))
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


def hparams_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """The plain table (module docstring)."""
    records, matched = [], set()
    for key, group in runs.groupby(list(ROWS), sort=True):
        dataset, backbone, epochs, method, dim = key
        paper = s6_row(method, int(dim))
        if paper is not None:
            matched.add((paper["method"], paper["dims"]))
        record: dict[str, Any] = dict(zip(ROWS, key), runs=len(group))
        differs = []
        for column, param in S6_PARAMS.items():
            ours = distinct(group[f"param.{param}"])
            record[column] = ours
            record[f"{column} paper"] = "–" if paper is None else (paper[column] or "–")
            if paper is not None and not _same(ours, paper[column]):
                differs.append(column)
        record["matches"] = ("no Table S6 row" if paper is None else
                             "yes" if not differs else "differs: " + ", ".join(differs))
        records.append(record)
    for row in table_s6():
        if (row["method"], row["dims"]) in matched:
            continue
        record = {"dataset": "–", "backbone": "–", "epochs": "–", "method": row["method"],
                  "dim": row["dims"].replace("not-8192", "≠ 8192"), "runs": 0}
        for column in S6_PARAMS:
            record[column] = "–"
            record[f"{column} paper"] = row[column] or "–"
        record["matches"] = "no run"
        records.append(record)
    frame = pd.DataFrame(records)
    return frame.astype({"epochs": str, "dim": str})


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
               f"Ours: {settings_text(runs)}; {recipe}. Paper: {PAPER_SETTING_TEXT}, "
               f"{PAPER_RECIPE}; Sim./Var./Cov. are λ/µ/ν of VICReg and its variants, τ the "
               f"temperature. {SIMCLR_NOTE}")
    notes = {"select": select, "ours": settings_text(runs), "paper": PAPER_SETTING_TEXT,
             "filters": filters.describe()}
    return Report(frame=frame, name="hparams", notes=notes, caption=caption,
                  title="Table S6: hyperparameters used")
