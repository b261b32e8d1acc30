"""Reports: the paper's tables and figures regenerated from the store.

query (``query``, store -> normalized run frames) -> DataFrame (``grid``, ``probes``, ``norms``,
``cka``, ``spectra``, ``hparams``, ``dims``; pure pandas steps in ``frames``) -> renderer
(``render`` for text, ``figures`` for matplotlib, ``html`` for the one-file report). Queries
never format; renderers never run SQL. The paper's published numbers ship in ``published/``.
Like ``sslbench.db``, nothing here imports torch; matplotlib is imported only to draw.
"""

from sslbench.report.base import EmptyReportError, Report
from sslbench.report.dims import dims_frame, dims_report
from sslbench.report.filters import ReportFilters
from sslbench.report.html import write_html
from sslbench.report.output import OUTPUT_FORMATS, write_report
from sslbench.report.registry import DESCRIPTIONS, REPORTS, build_report, report_options
from sslbench.report.render import FORMATS, render
from sslbench.report.runs import run_show_json, runs_list_frame, runs_list_json

__all__ = [
    "DESCRIPTIONS",
    "FORMATS",
    "OUTPUT_FORMATS",
    "REPORTS",
    "EmptyReportError",
    "Report",
    "ReportFilters",
    "build_report",
    "dims_frame",
    "dims_report",
    "render",
    "report_options",
    "run_show_json",
    "runs_list_frame",
    "runs_list_json",
    "write_html",
    "write_report",
]
