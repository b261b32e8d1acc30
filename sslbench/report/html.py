"""``sslbench report all --out DIR``: every report in one self-contained HTML file.

Tables are HTML tables; figures are PNG images embedded as base64 ``data:`` URIs; the style
sheet is inline. The file loads nothing from anywhere (no script, no external URL), so it opens
from disk in any browser, with no server. A report the store cannot build (no runs of that
kind yet) is listed with the reason and the command that produces its data.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sslbench.report.base import EmptyReportError, Report
from sslbench.report.filters import ReportFilters
from sslbench.report.render import render

if TYPE_CHECKING:
    from sslbench.db import Store

HTML_NAME = "sslbench-report.html"
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1480px; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
nav li { margin: 0.15em 0; }
table.report { border-collapse: collapse; font-size: 0.85em; margin: 0.8em 0; }
table.report caption { caption-side: top; text-align: left; padding-bottom: 0.4em; }
table.report th, table.report td { border-bottom: 1px solid #ddd; padding: 0.2em 0.5em; }
table.report thead th { border-bottom: 2px solid #444; text-align: center; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.agree { background: #e3f4e1; } td.differ { background: #fbe3e1; }
.missing { color: #a33; } .meta { color: #555; font-size: 0.9em; }
img.figure { max-width: 100%; height: auto; display: block; margin: 0.8em 0; }
p.caption { margin: 0.4em 0; } ul.notes, ol.notes { margin: 0.2em 0; }
details { margin: 0.5em 0; } .scroll { overflow-x: auto; }
"""


def figure_img(report: Report) -> str:
    """The report's figure as an ``<img>`` with its PNG inline (a ``data:`` URI) and its
    natural size, which the page shows it at (figures are at most
    :data:`sslbench.report.figures.MAX_WIDTH` inches wide)."""
    from sslbench.report.figures import save_figure

    assert report.figure is not None
    figure = report.figure()
    buffer = io.BytesIO()
    save_figure(figure, buffer, "png")
    data = buffer.getvalue()
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (f'<img class="figure" alt="{html.escape(report.title)}" width="{width}" '
            f'height="{height}" src="{uri}">')


def report_section(report: Report, anchor: str) -> str:
    """One report as an HTML ``<section>``: title, caption, figure (if any) and table."""
    esc = html.escape
    table = render(report.frame, "html", digits=report.digits, headers=report.headers,
                   tolerance=report.notes.get("tolerance"))
    parts = [f'<section id="{esc(anchor)}">', f"<h2>{esc(report.title or anchor)}</h2>",
             f"<p>{esc(report.caption)}</p>"]
    if report.figure is not None:
        parts.append(figure_img(report))
        parts.append(f'<details><summary>Plotted numbers ({len(report.frame)} rows)</summary>'
                     f'<div class="scroll">{table}</div></details>')
    else:
        parts.append(f'<div class="scroll">{table}</div>')
    parts.append("</section>")
    return "\n".join(parts)


def missing_section(name: str, reason: str) -> str:
    """A report that could not be built, with the reason (which names the command to run)."""
    esc = html.escape
    return (f'<section id="{esc(name)}"><h2>{esc(name)}</h2>'
            f'<p class="missing">Not available: {esc(reason)}</p></section>')


def html_document(title: str, meta: str, sections: list[tuple[str, str, str]]) -> str:
    """A whole page: ``sections`` are ``(anchor, heading, section html)``."""
    esc = html.escape
    nav = "".join(f'<li><a href="#{esc(a)}">{esc(h)}</a></li>' for a, h, _ in sections)
    body = "\n".join(s for _, _, s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{esc(title)}</h1><p class=\"meta\">{esc(meta)}</p>"
            f"<nav><ul>{nav}</ul></nav>\n{body}\n</body></html>\n")


def single_report_html(report: Report) -> str:
    """One report as a standalone page, its notes as a list below it."""
    anchor = report.name or "report"
    section = report_section(report, anchor).replace(
        "</section>", f'<h3>Notes</h3>{notes_html(report.notes)}</section>')
    return html_document(report.title or anchor, f"sslbench report {anchor}",
                         [(anchor, report.title or anchor, section)])


def notes_html(notes: Any) -> str:
    """A report's notes as nested HTML lists (never as a JSON text)."""
    esc = html.escape
    value = jsonable(notes)
    if isinstance(value, dict):
        if not value:
            return "<span>–</span>"
        items = "".join(f"<li><strong>{esc(str(k))}</strong>: {notes_html(v)}</li>"
                        for k, v in value.items())
        return f'<ul class="notes">{items}</ul>'
    if isinstance(value, list):
        if all(not isinstance(v, (dict, list)) for v in value):
            return esc(", ".join(_note_text(v) for v in value)) or "–"
        return '<ol class="notes">' + "".join(f"<li>{notes_html(v)}</li>" for v in value) + "</ol>"
    return esc(_note_text(value))


def _note_text(value: Any) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write to a temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def write_html(store: Store, out_dir: Path, *, filters: ReportFilters | None = None,
               select: str = "final") -> Path:
    """Build every report and write ``out_dir/sslbench-report.html``; returns its path."""
    from sslbench.report.query import shared_queries
    from sslbench.report.registry import DESCRIPTIONS, REPORTS, build_report

    filters = filters or ReportFilters()
    sections = []
    with shared_queries():  # every report reads the same runs: one query each
        for name in REPORTS:
            try:
                report = build_report(name, store, select=select, filters=filters)
            except EmptyReportError as err:
                sections.append((name, f"{name} (not available)",
                                 missing_section(name, str(err))))
                continue
            sections.append((name, f"{name}: {DESCRIPTIONS.get(name, report.title)}",
                             report_section(report, name)))
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = (f"Store {store.display_url}; generated {now}; value per run: {select}"
            + (f"; filters: {filters.describe()}" if filters.describe() else ""))
    path = Path(out_dir) / HTML_NAME
    write_atomic(path, html_document("sslbench: the paper's tables and figures from your runs",
                                     meta, sections))
    return path


def jsonable(value: Any) -> Any:
    """NaN -> None, numpy scalars -> Python, recursively (for JSON output of notes)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value
