"""``sslbench report NAME``: the named reports and the one function that builds any of them."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sslbench.errors import ConfigError
from sslbench.report.base import Report
from sslbench.report.capacity import fig_s7_report
from sslbench.report.cka import cka_report
from sslbench.report.dims import dims_report
from sslbench.report.filters import ReportFilters
from sslbench.report.grid import fig1_report, fig_s6_report, knn_report, table_s5_report
from sslbench.report.hparams import hparams_report
from sslbench.report.matrices import fig_s8_report
from sslbench.report.negatives import fig_s4_report
from sslbench.report.norms import table_s4_report
from sslbench.report.probes import table_s2_s3_report
from sslbench.report.protocols import check_select
from sslbench.report.spectra import spectra_report
from sslbench.report.tune import tune_report
from sslbench.report.variants import fig2_report, fig_s3_report

if TYPE_CHECKING:
    from sslbench.db import Store

#: Report name -> builder(store, *, select, filters, **options) -> Report.
REPORTS: dict[str, Callable[..., Report]] = {
    "dims": dims_report,
    "table-s5": table_s5_report,
    "fig1": fig1_report,
    "fig-s6": fig_s6_report,
    "table-s2-s3": table_s2_s3_report,
    "table-s4": table_s4_report,
    "cka": cka_report,
    "knn": knn_report,
    "spectra": spectra_report,
    "fig2": fig2_report,
    "fig-s3": fig_s3_report,
    "fig-s4": fig_s4_report,
    "fig-s7": fig_s7_report,
    "fig-s8": fig_s8_report,
    "hparams": hparams_report,
    "tune": tune_report,
}
#: One line per report, for ``--help`` and the HTML index.
DESCRIPTIONS = {
    "dims": "each method's top-1 across embedding dimensions (any metric), with a random-init "
            "baseline",
    "table-s5": "Table S5: online top-1, method x projector family x embedding dim",
    "fig1": "Figure 1: Table S5 as panels of top-1 vs embedding dim, three projector families",
    "fig-s6": "Figure S6: Figure 1 with the fourth projector family, 2048-2048-d",
    "table-s2-s3": "Tables S2/S3: online vs offline linear probe, with the regression",
    "table-s4": "Table S4: row/column norm sums vs the Lemma 3.4 bounds",
    "cka": "Figure S2: linear CKA heat map between networks",
    "knn": "Figure S1: k-NN top-1, method x projector family x embedding dim",
    "spectra": "Figure S5: singular-value spectra of representations and embeddings",
    "fig2": "Figure 2: SimCLR vs SimCLR with centering and with dimension standardisation",
    "fig-s3": "Figure S3: SimCLR-sq and SimCLR-abs vs SimCLR",
    "fig-s4": "Figure S4: cosine similarities of negative pairs (histograms)",
    "fig-s7": "Figure S7: online top-1 vs projector parameters",
    "fig-s8": "Figure S8: covariance and Gram matrices of the embeddings",
    "hparams": "Table S6: the hyperparameters the runs used",
    "tune": "tuning studies (sslbench tune): best trials, optimisation history, importances",
}
#: The reports that draw a figure (``--format png`` / ``svg``).
FIGURES = ("dims", "fig1", "fig-s6", "knn", "cka", "spectra", "fig2", "fig-s3", "fig-s4",
           "fig-s7", "fig-s8", "tune")
_COMMON = ("store", "select", "filters")


def report_options(name: str) -> list[str]:
    """The extra keyword options report ``name`` takes (besides select and filters)."""
    parameters = inspect.signature(REPORTS[name]).parameters
    return [p for p in parameters if p not in _COMMON]


def build_report(name: str, store: Store, *, select: str = "final",
                 filters: ReportFilters | None = None, **options: Any) -> Report:
    """Build report ``name`` from ``store``. ``select``: ``final`` or ``best`` value of each
    run's online metric; ``filters``: which runs count; ``options`` (None means "not given"):
    the report's own options (:func:`report_options`). ConfigError for an unknown name, select
    or option."""
    if name not in REPORTS:
        raise ConfigError(f"unknown report {name!r}: use one of {', '.join(REPORTS)} (or all)")
    check_select(select)
    given = {k: v for k, v in options.items() if v is not None}
    valid = report_options(name)
    unknown = sorted(set(given) - set(valid))
    if unknown:
        takes = f"its options are {', '.join(valid)}" if valid else "it takes no options"
        raise ConfigError(f"report {name} has no option {unknown[0]!r}: {takes}")
    return REPORTS[name](store, select=select, filters=filters or ReportFilters(), **given)
