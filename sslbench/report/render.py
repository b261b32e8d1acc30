"""Renderers: DataFrame -> text in one of :data:`FORMATS`. No SQL here, no queries.

Two kinds of frames are understood:

* **stat frames** (what the paper-table reports return): row labels in the index (a MultiIndex
  such as dataset / backbone / method / projector), columns a two-level MultiIndex whose last
  level is named ``"stat"`` and holds ``mean``, ``std`` and ``n`` for every column label (e.g.
  each embedding dim), and optionally ``paper`` (the published value) and ``delta`` (ours minus
  paper). Text formats show a cell as ``"mean ± std (n)"`` (plain mean when n = 1, ``–`` when
  empty); with published values each column label becomes three columns: ours, ``paper`` and
  ``Δ`` (LaTeX and HTML group them under the label). CSV and JSON give one tidy record per cell
  that has a value (ours or the paper's): the row labels, the column label, ``mean``, ``std``
  (null when n = 1), ``n``, and ``paper`` / ``delta`` when the frame has them.
* **plain frames** (run listings, hyperparameters): shown as they are; CSV/JSON give one record
  per row.
"""

from __future__ import annotations

import html
import io
import json
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from sslbench.errors import ConfigError

FORMATS = ("table", "markdown", "csv", "json", "latex", "html")
STATS = ("mean", "std", "n")
PAPER_STATS = ("paper", "delta")
EMPTY = "–"
DELTA = "Δ"
_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}
#: The non-ASCII characters sslbench's captions and cells use, as plain-LaTeX commands (so the
#: output compiles with pdflatex as well as with xelatex / lualatex).
_LATEX_UNICODE = {
    "±": r"$\pm$", "Δ": r"$\Delta$", "–": "--", "−": "$-$", "×": r"$\times$", "·": r"$\cdot$",
    "²": r"$^2$", "⁴": r"$^4$", "₁": r"$_1$", "‖": r"$\|$", "≠": r"$\neq$", "≤": r"$\leq$",
    "≥": r"$\geq$", "µ": r"$\mu$", "λ": r"$\lambda$", "ν": r"$\nu$", "τ": r"$\tau$",
    "σ": r"$\sigma$", "Σ": r"$\Sigma$", "\u03bc": r"$\mu$",
}


@dataclass(frozen=True)
class Grid:
    """A frame laid out as strings: ``header`` (one name per column), ``body`` (row labels
    first), ``aligns`` ('l' or 'r' per column), ``groups`` (for a two-row header: ``(text,
    width)`` spans over the columns, None for a one-row header), ``subheader`` (the second
    header row's names) and ``deltas`` (the numeric delta behind each body cell, or None)."""

    header: list[str]
    body: list[list[str]]
    aligns: list[str]
    groups: list[tuple[str, int]] | None = None
    subheader: list[str] | None = None
    deltas: list[list[float | None]] | None = None


def render(frame: pd.DataFrame, fmt: str, *, title: str = "", caption: str = "",
           digits: int = 2, width: int = 200, tolerance: float | None = None) -> str:
    """``frame`` as text in format ``fmt`` (one of :data:`FORMATS`); ``width`` is for 'table';
    ``tolerance`` (HTML only) marks delta cells with ``|Δ| <= tolerance`` as agreeing."""
    renderers = {"table": _table, "markdown": _markdown, "csv": _csv, "json": _json,
                 "latex": _latex, "html": _html}
    if fmt not in renderers:
        raise ConfigError(f"unknown report format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt == "html":
        return _html(frame, title=title, caption=caption, digits=digits, width=width,
                     tolerance=tolerance)
    return renderers[fmt](frame, title=title, caption=caption, digits=digits, width=width)


def is_stat_frame(frame: pd.DataFrame) -> bool:
    """True for frames whose columns are (label, stat) pairs with stat in mean/std/n."""
    columns = frame.columns
    return (isinstance(columns, pd.MultiIndex) and columns.nlevels == 2
            and columns.names[-1] == "stat")


def has_paper(frame: pd.DataFrame) -> bool:
    """True for stat frames that carry published values (a ``paper`` stat)."""
    return is_stat_frame(frame) and "paper" in frame.columns.get_level_values("stat")


def format_cell(mean: float, std: float, n: float, digits: int = 2, pm: str = "±") -> str:
    """``"mean ± std (n)"``; the plain mean when n = 1; :data:`EMPTY` when there is no value."""
    if n is None or _isnan(n) or int(n) == 0 or _isnan(mean):
        return EMPTY
    if int(n) == 1 or _isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} {pm} {std:.{digits}f} ({int(n)})"


def format_delta(delta: Any, digits: int = 2) -> str:
    """A signed difference (``+1.25`` / ``-0.50``), :data:`EMPTY` when missing."""
    return EMPTY if _isnan(delta) else f"{float(delta):+.{digits}f}"


def format_value(value: Any, digits: int = 2) -> str:
    """A plain cell: floats to ``digits`` decimals, missing values as :data:`EMPTY`."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return EMPTY
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, pd.Timestamp):
        stamp: str = value.strftime("%Y-%m-%d %H:%M")
        return stamp
    return str(value)


def _isnan(value: Any) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return value is None or value is pd.NA


def _label_names(frame: pd.DataFrame) -> list[str]:
    return [str(name) if name is not None else "" for name in frame.index.names]


def column_labels(frame: pd.DataFrame) -> list[Any]:
    """The column labels of a stat frame (each dim, ...), in order."""
    return list(dict.fromkeys(frame.columns.get_level_values(0)))


def grid(frame: pd.DataFrame, digits: int, pm: str = "±") -> Grid:
    """The frame as a :class:`Grid` of strings."""
    if not is_stat_frame(frame):
        plain = frame.reset_index() if _has_named_index(frame) else frame
        body = [[format_value(v, digits) for v in row] for row in plain.itertuples(index=False)]
        aligns = ["r" if pd.api.types.is_numeric_dtype(plain[c])
                  and not pd.api.types.is_bool_dtype(plain[c]) else "l" for c in plain.columns]
        return Grid([str(c) for c in plain.columns], body, aligns)
    labels, paper = column_labels(frame), has_paper(frame)
    names, width = _label_names(frame), 3 if paper else 1
    header = names + [h for lab in labels for h in (
        [str(lab), f"{lab} paper", f"{lab} {DELTA}"] if paper else [str(lab)])]
    body, deltas = [], []
    for key, row in frame.iterrows():
        keys = key if isinstance(key, tuple) else (key,)
        cells: list[str] = [str(k) for k in keys]
        row_deltas: list[float | None] = [None] * len(keys)
        for lab in labels:
            cells.append(format_cell(row[(lab, "mean")], row[(lab, "std")], row[(lab, "n")],
                                     digits, pm))
            row_deltas.append(None)
            if paper:
                delta = row[(lab, "delta")]
                cells += [format_value(_float(row[(lab, "paper")]), digits),
                          format_delta(delta, digits)]
                row_deltas += [None, None if _isnan(delta) else float(delta)]
        body.append(cells)
        deltas.append(row_deltas)
    aligns = ["l"] * len(names) + ["r"] * (width * len(labels))
    if not paper:
        return Grid(header, body, aligns)
    groups = [("", 1)] * len(names) + [(str(lab), 3) for lab in labels]
    subheader = names + ["ours", "paper", DELTA] * len(labels)
    return Grid(header, body, aligns, groups, subheader, deltas)


def _float(value: Any) -> float:
    return math.nan if _isnan(value) else float(value)


def _has_named_index(frame: pd.DataFrame) -> bool:
    return any(name is not None for name in frame.index.names)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-able records: one per cell of a stat frame that has a value (ours or the paper's),
    one per row otherwise."""
    if not is_stat_frame(frame):
        plain = frame.reset_index() if _has_named_index(frame) else frame
        return [{str(k): _plain(v) for k, v in row.items()} for row in plain.to_dict("records")]
    names, paper = _label_names(frame), has_paper(frame)
    column_name = str(frame.columns.names[0] or "column")
    out = []
    for key, row in frame.iterrows():
        keys = key if isinstance(key, tuple) else (key,)
        for label in column_labels(frame):
            n = row[(label, "n")]
            n = 0 if _isnan(n) else int(n)
            if n == 0 and (not paper or _isnan(row[(label, "paper")])):
                continue
            record = {name: _plain(k) for name, k in zip(names, keys)}
            record[column_name] = _plain(label)
            record.update(mean=_plain(row[(label, "mean")]), std=_plain(row[(label, "std")]),
                          n=n)
            if paper:
                record.update(paper=_plain(row[(label, "paper")]),
                              delta=_plain(row[(label, "delta")]))
            out.append(record)
    return out


def _plain(value: Any) -> Any:
    """numpy scalars -> Python; NaN -> None; timestamps -> ISO text."""
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NA:
        return None
    return value


def _table(frame: pd.DataFrame, *, title: str, caption: str, digits: int, width: int) -> str:
    from rich.console import Console
    from rich.table import Table

    layout = grid(frame, digits)
    table = Table(title=title or None, caption=caption or None)
    for name, align in zip(layout.header, layout.aligns):
        table.add_column(name, justify="left" if align == "l" else "right", no_wrap=align == "l")
    for row in layout.body:
        table.add_row(*row)
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None,
                      force_terminal=False, highlight=False)
    console.print(table)
    return console.export_text(styles=False)


def _markdown(frame: pd.DataFrame, *, title: str, caption: str, digits: int, width: int) -> str:
    layout = grid(frame, digits)

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    rule = ["---" if align == "l" else "---:" for align in layout.aligns]
    lines = ([f"**{title}**", ""] if title else []) + [line(layout.header), line(rule)]
    lines += [line(row) for row in layout.body]
    if caption:
        lines += ["", caption]
    return "\n".join(lines) + "\n"


def _csv(frame: pd.DataFrame, *, title: str, caption: str, digits: int, width: int) -> str:
    text: str = pd.DataFrame(records(frame)).to_csv(index=False, lineterminator="\n")
    return text


def _json(frame: pd.DataFrame, *, title: str, caption: str, digits: int, width: int) -> str:
    return json.dumps(records(frame), indent=2, allow_nan=False, default=str) + "\n"


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text (and write the Greek letters and symbols
    of :data:`_LATEX_UNICODE` as LaTeX commands)."""
    return "".join(_LATEX_SPECIALS.get(ch) or _LATEX_UNICODE.get(ch, ch) for ch in text)


def _latex(frame: pd.DataFrame, *, title: str, caption: str, digits: int, width: int) -> str:
    layout = grid(frame, digits)

    def line(cells: list[str]) -> str:
        return " & ".join(latex_escape(c) for c in cells) + r" \\"

    lines = [r"\begin{table}[t]", r"\centering"]
    text = ". ".join(part.rstrip(".") for part in (title, caption) if part)
    if text:
        lines.append(r"\caption{" + latex_escape(text) + ".}")
    lines += [r"\begin{tabular}{" + "".join(layout.aligns) + "}", r"\toprule"]
    if layout.groups and layout.subheader:
        spans, rules, first = [], [], 1
        for label, span in layout.groups:
            spans.append(rf"\multicolumn{{{span}}}{{c}}{{{latex_escape(label)}}}" if span > 1
                         else latex_escape(label))
            if span > 1:
                rules.append(rf"\cmidrule(lr){{{first}-{first + span - 1}}}")
            first += span
        lines += [" & ".join(spans) + r" \\", " ".join(rules), line(layout.subheader)]
    else:
        lines.append(line(layout.header))
    lines.append(r"\midrule")
    lines += [line(row) for row in layout.body]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _html(frame: pd.DataFrame, *, title: str, caption: str, digits: int, width: int,
          tolerance: float | None = None) -> str:
    """An HTML ``<table>`` fragment (escaped; Δ cells classed ``agree`` / ``differ`` when a
    ``tolerance`` is given)."""
    layout = grid(frame, digits)
    esc = html.escape
    out = ['<table class="report">']
    if title or caption:
        parts = ([f"<strong>{esc(title)}</strong>"] if title else []) + (
            [f"<span>{esc(caption)}</span>"] if caption else [])
        out.append("<caption>" + "<br>".join(parts) + "</caption>")
    out.append("<thead>")
    if layout.groups and layout.subheader:
        n_names = sum(1 for _, span in layout.groups if span == 1)
        cells = [f'<th rowspan="2">{esc(name)}</th>' for name in layout.subheader[:n_names]]
        cells += [f'<th colspan="{span}">{esc(label)}</th>' for label, span in layout.groups
                  if span > 1]
        out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in layout.subheader[n_names:])
                   + "</tr>")
    else:
        out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in layout.header) + "</tr>")
    out.append("</thead><tbody>")
    for i, row in enumerate(layout.body):
        cells = []
        for j, (text, align) in enumerate(zip(row, layout.aligns)):
            classes = ["num"] if align == "r" else []
            delta = layout.deltas[i][j] if layout.deltas else None
            if delta is not None and tolerance is not None:
                classes.append("agree" if abs(delta) <= tolerance else "differ")
            attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attr}>{esc(text)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out) + "\n"
