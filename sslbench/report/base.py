"""What every report returns, and the error for a store with nothing to report."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from sslbench.errors import SSLBenchError


class EmptyReportError(SSLBenchError):
    """The store holds no run that the report can use."""


@dataclass(frozen=True)
class Report:
    """A report's data (no formatting) with the title and caption a renderer shows."""

    frame: pd.DataFrame
    title: str = ""
    caption: str = ""
    notes: dict[str, object] = field(default_factory=dict)

