"""Writing one report in a format: text (table, markdown, csv, json, latex, html) or a figure
(png, svg).

* Text formats return the text, and also write it when ``out`` is given (a file, or a folder
  that receives ``<report name>.<ext>``).
* ``json`` is an object: ``report``, ``title``, ``caption``, ``notes`` and ``rows`` (the same
  records as ``csv``, one per cell or row), so it round-trips through
  ``pandas.DataFrame(data["rows"])``.
* ``html`` is a standalone page (figure embedded) for one report.
* ``png`` / ``svg`` need ``out`` and a report with a figure
  (:data:`sslbench.report.registry.FIGURES`); they return the path written.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from sslbench.errors import ConfigError
from sslbench.report.base import Report
from sslbench.report.html import jsonable, single_report_html, write_atomic
from sslbench.report.render import records, render

TEXT_FORMATS = ("table", "markdown", "csv", "json", "latex", "html")
FIGURE_FORMATS = ("png", "svg")
OUTPUT_FORMATS = (*TEXT_FORMATS, *FIGURE_FORMATS)
_EXTENSIONS = {"table": "txt", "markdown": "md", "csv": "csv", "json": "json", "latex": "tex",
               "html": "html", "png": "png", "svg": "svg"}


def report_text(report: Report, fmt: str, width: int | None = None) -> str:
    """The report in text format ``fmt`` (``width``: for ``table``, None for the
    terminal's)."""
    if fmt == "json":
        data = {"report": report.name, "title": report.title, "caption": report.caption,
                "notes": jsonable(report.notes), "rows": records(report.frame)}
        return json.dumps(data, indent=2, allow_nan=False, default=str) + "\n"
    if fmt == "html":
        return single_report_html(report)
    return render(report.frame, fmt, title=report.title, caption=report.caption,
                  digits=report.digits, headers=report.headers, width=width)


def output_path(report: Report, fmt: str, out: Path) -> Path:
    """``out`` itself, or ``out/<name>.<ext>`` when ``out`` is an existing folder or ends with
    a path separator."""
    out = Path(out)
    if out.is_dir() or str(out).endswith(("/", "\\")):
        return out / f"{report.name or 'report'}.{_EXTENSIONS[fmt]}"
    return out


def write_report(report: Report, fmt: str, out: Path | None = None, *,
                 width: int | None = None) -> str:
    """Render ``report`` as ``fmt`` (:data:`OUTPUT_FORMATS`; ``width`` for ``table``, None for
    the terminal's); see the module docstring."""
    if fmt not in OUTPUT_FORMATS:
        raise ConfigError(f"unknown report format {fmt!r}: use one of {', '.join(OUTPUT_FORMATS)}")
    if fmt in TEXT_FORMATS:
        text = report_text(report, fmt, width)
        if out is not None:
            write_atomic(output_path(report, fmt, out), text)
        return text
    if report.figure is None:
        from sslbench.report.registry import FIGURES

        raise ConfigError(f"report {report.name or '?'} is a table, it has no figure: use "
                          f"--format {', '.join(TEXT_FORMATS)} (png and svg are for "
                          f"{', '.join(FIGURES)})")
    if out is None:
        raise ConfigError(f"--format {fmt} writes an image file: pass --out FILE.{fmt} or a "
                          "folder")
    from sslbench.report.figures import save_figure

    path = output_path(report, fmt, out)
    buffer = io.BytesIO()
    save_figure(report.figure(), buffer, fmt)
    write_atomic(path, buffer.getvalue())
    return str(path)
