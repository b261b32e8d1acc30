"""Reports: query -> DataFrame (``dims``, ``runs``) -> renderer (``render``).

Queries never format; renderers never run SQL. Like ``sslbench.db``, nothing here imports torch.
"""

from sslbench.report.base import EmptyReportError, Report
from sslbench.report.dims import dims_frame, dims_report
from sslbench.report.render import FORMATS, render
from sslbench.report.runs import run_show_json, runs_list_frame, runs_list_json

#: Report name -> builder(store, **options) -> Report, for ``sslbench report NAME``.
REPORTS = {"dims": dims_report}

__all__ = [
    "FORMATS",
    "REPORTS",
    "EmptyReportError",
    "Report",
    "dims_frame",
    "dims_report",
    "render",
    "run_show_json",
    "runs_list_frame",
    "runs_list_json",
]
