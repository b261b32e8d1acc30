"""What every report returns, and the error for a store with nothing to report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from sslbench.errors import SSLBenchError

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class EmptyReportError(SSLBenchError):
    """The store holds no run that the report can use."""


@dataclass(frozen=True)
class Report:
    """A report's data (no formatting) with the title and caption a renderer shows.

    ``frame``: a stat frame or a plain frame (:mod:`sslbench.report.render`); for figure reports
    it holds the plotted numbers. ``figure``: draws the figure (matplotlib, Agg backend) on
    demand, None for tables. ``notes``: JSON-able facts (metric, protocol, settings, agreement
    with the paper, regression, ...). ``digits``: decimals shown in text formats. ``headers``:
    how text formats head some columns (CSV and JSON keep the frame's labels).
    """

    frame: pd.DataFrame
    title: str = ""
    caption: str = ""
    notes: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    figure: Callable[[], Figure] | None = None
    digits: int = 2
    headers: dict[Any, str] = field(default_factory=dict)
