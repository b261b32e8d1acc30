"""Renderers: DataFrame -> text in one of :data:`FORMATS`. No SQL here, no queries.

Two kinds of frames are understood:

* **stat frames** (what the paper-table reports return): row labels in the index (a MultiIndex
  such as dataset / backbone / epochs / method / projector), columns a two-level MultiIndex
  whose last level is named ``"stat"`` and holds ``mean``, ``std`` and ``n`` for every column
  label (e.g. each embedding dim). Text formats show a cell as ``"mean ± std (n)"`` (plain mean
  when n = 1, ``–`` when empty). CSV and JSON give one tidy record per cell that has a value:
  the row labels, the column label, ``mean``, ``std`` (null when n = 1) and ``n``.
* **plain frames** (run listings, hyperparameters): shown as they are (with their index, when
  it holds labels); CSV/JSON give one record per row.

**Sources and panels.** A frame whose first index level is ``source`` holds our numbers
(:data:`OURS`), the paper's (:data:`PAPER`, whose setting is the paper's) and their difference
(:data:`DELTA`, shown signed) in rows of their own. Text formats split a frame into panels by
its leading index levels among ``source``, dataset, backbone and epochs, each headed by what
they are ("paper: ImageNet-1k, ResNet-50, 100 epochs"), so a published number never sits under
our setting's labels.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from sslbench.errors import ConfigError

FORMATS = ("table", "markdown", "csv", "json", "latex", "html")
STATS = ("mean", "std", "n")
EMPTY = "–"
SOURCE = "source"
OURS, PAPER, DELTA = "ours", "paper", "Δ ours − paper"
SETTING_LEVELS = ("dataset", "backbone", "epochs")
PANEL_LEVELS = (SOURCE, *SETTING_LEVELS)
#: Values this large are shown without decimals, with thousands separators (Table S4's sums).
LARGE = 1e4
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
    first), ``aligns`` ('l' or 'r' per column), ``labels`` (how many leading columns are row
    labels) and ``deltas`` (the Δ behind each body cell of a Δ row, else None)."""

    header: list[str]
    body: list[list[str]]
    aligns: list[str]
    labels: int = 0
    deltas: list[list[float | None]] | None = None


@dataclass(frozen=True)
class Panel:
    """Part of a frame shown as one table: ``heading`` (what its rows are, "" for the whole
    frame) and ``frame`` (without the levels the heading names)."""

    heading: str
    frame: pd.DataFrame


def render(frame: pd.DataFrame, fmt: str, *, title: str = "", caption: str = "",
           digits: int = 2, width: int | None = None, tolerance: float | None = None,
           headers: Mapping[Any, str] | None = None) -> str:
    """``frame`` as text in format ``fmt`` (one of :data:`FORMATS`); ``width`` is for 'table'
    (None: the terminal's, :func:`sslbench.report.terminal.terminal_width`);
    ``tolerance`` (HTML only) marks Δ cells with ``|Δ| <= tolerance`` as agreeing; ``headers``
    shows some column labels under other names (text formats only)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown report format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt == "csv":
        text: str = pd.DataFrame(records(frame)).to_csv(index=False, lineterminator="\n")
        return text
    if fmt == "json":
        return json.dumps(records(frame), indent=2, allow_nan=False, default=str) + "\n"
    layout = Layout(title, caption, digits, dict(headers or {}))
    if fmt == "table":
        from sslbench.report.terminal import table_text, terminal_width

        return table_text(frame, layout, width=width or terminal_width())
    writers = {"markdown": _markdown, "latex": _latex, "html": _html}
    return writers[fmt](frame, layout, tolerance)


@dataclass(frozen=True)
class Layout:
    """What every text format shows besides the frame."""

    title: str = ""
    caption: str = ""
    digits: int = 2
    headers: dict[Any, str] = field(default_factory=dict)


def is_stat_frame(frame: pd.DataFrame) -> bool:
    """True for frames whose columns are (label, stat) pairs with stat in mean/std/n."""
    columns = frame.columns
    return (isinstance(columns, pd.MultiIndex) and columns.nlevels == 2
            and columns.names[-1] == "stat")


def format_cell(mean: float, std: float, n: float, digits: int = 2, pm: str = "±",
                signed: bool = False) -> str:
    """``"mean ± std (n)"``; the plain mean when n = 1; :data:`EMPTY` when there is no value;
    ``signed``: a difference (``+1.25``), never with a spread."""
    if n is None or _isnan(n) or int(n) == 0 or _isnan(mean):
        return EMPTY
    if signed:
        return _number(mean, digits, "+")
    if int(n) == 1 or _isnan(std):
        return _number(mean, digits)
    return f"{_number(mean, digits)} {pm} {_number(std, digits)} ({int(n)})"


def _number(value: float, digits: int, sign: str = "") -> str:
    if abs(value) >= LARGE:
        return f"{value:{sign},.0f}"
    return f"{value:{sign}.{digits}f}"


def format_value(value: Any, digits: int = 2) -> str:
    """A plain cell: floats to ``digits`` decimals, missing values as :data:`EMPTY`."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return EMPTY
    if isinstance(value, float):
        return _number(value, digits)
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


def grid(frame: pd.DataFrame, digits: int, pm: str = "±",
         headers: Mapping[Any, str] | None = None, *, delta: bool = False) -> Grid:
    """The frame (one panel) as a :class:`Grid` of strings; ``delta``: its cells are Δ."""
    headers = headers or {}
    if not is_stat_frame(frame):
        plain = frame.reset_index() if has_index(frame) else frame
        labels = frame.index.nlevels if has_index(frame) else 0
        body = [[format_value(v, digits) for v in row] for row in plain.itertuples(index=False)]
        aligns = ["r" if pd.api.types.is_numeric_dtype(plain[c])
                  and not pd.api.types.is_bool_dtype(plain[c]) else "l" for c in plain.columns]
        aligns[:labels] = ["l"] * labels
        names = [headers.get(c, str(c)) for c in plain.columns]
        names[:labels] = _label_names(frame) if labels else []
        return Grid(names, body, aligns, labels)
    columns, names = column_labels(frame), _label_names(frame)
    header = names + [headers.get(lab, str(lab)) for lab in columns]
    means, stds, counts = (frame.xs(stat, axis=1, level="stat")[columns].to_numpy()
                           for stat in STATS)
    body, deltas = [], []
    for i, key in enumerate(frame.index):
        keys = key if isinstance(key, tuple) else (key,)
        cells = [_label(k) for k in keys] + [
            format_cell(m, s, n, digits, pm, signed=delta)
            for m, s, n in zip(means[i], stds[i], counts[i])]
        body.append(cells)
        row_deltas: list[float | None] = [None] * len(keys)
        row_deltas += [None if not delta or _isnan(m) or not n else float(m)
                       for m, n in zip(means[i], counts[i])]
        deltas.append(row_deltas)
    aligns = ["l"] * len(names) + ["r"] * len(columns)
    return Grid(header, body, aligns, len(names), deltas if delta else None)


def _label(value: Any) -> str:
    """A row label: large whole numbers (parameter counts) with thousands separators."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and abs(
            value) >= LARGE:
        return f"{int(value):,}"
    return str(value)


def has_index(frame: pd.DataFrame) -> bool:
    """True when the index holds row labels: named, or anything but 0, 1, 2, ..."""
    if any(name is not None for name in frame.index.names):
        return True
    return not (isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0
                and frame.index.step == 1)


def panels(frame: pd.DataFrame) -> list[Panel]:
    """The frame split by its leading :data:`PANEL_LEVELS` (module docstring), in order; one
    panel with no heading when it has none. Empty columns are left out of each panel."""
    names = list(frame.index.names)
    count = 0
    while count < len(names) - 1 and names[count] in PANEL_LEVELS:
        count += 1
    if count == 0:
        return [Panel("", frame)]
    out = []
    keys = [k[:count] for k in frame.index]
    for key in dict.fromkeys(keys):
        rows = [k == key for k in keys]
        part = frame[rows].droplevel(list(range(count)))
        out.append(Panel(panel_heading(dict(zip(names[:count], key))), _filled(part)))
    return out


def panel_heading(levels: Mapping[str, Any]) -> str:
    """``"paper: ImageNet-1k, ResNet-50, 100 epochs"``; epochs 0 is a random initialisation."""
    setting = [str(levels[k]) for k in ("dataset", "backbone") if k in levels]
    if "epochs" in levels:
        epochs = levels["epochs"]
        setting.append("random init" if str(epochs) == "0" else f"{epochs} epochs")
    text = ", ".join(setting)
    source = levels.get(SOURCE)
    return f"{source}: {text}" if source and text else str(source or text)


def _filled(frame: pd.DataFrame) -> pd.DataFrame:
    """Without the columns that hold no value in any row; a matrix (columns named like the
    rows, as CKA's) with its columns in the order of its rows."""
    if is_stat_frame(frame):
        counts = frame.xs("n", axis=1, level="stat")
        keep = [label for label in counts.columns if (counts[label] > 0).any()] or list(
            counts.columns)
        rows = list(frame.index.get_level_values(-1))
        if set(keep) == set(rows) and len(rows) == len(keep):
            keep = rows
        return frame.loc[:, pd.MultiIndex.from_product([keep, STATS],
                                                       names=frame.columns.names)]
    keep = [c for c in frame.columns if frame[c].notna().any()]
    return frame[keep] if keep else frame


def panel_grids(frame: pd.DataFrame, layout: Layout, pm: str = "±") -> list[tuple[str, Grid]]:
    """(heading, grid) of each panel."""
    return [(p.heading, grid(p.frame, layout.digits, pm, layout.headers,
                             delta=p.heading.startswith(DELTA)))
            for p in panels(frame)]


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-able records: one per cell of a stat frame that has a value, one per row
    otherwise."""
    if not is_stat_frame(frame):
        plain = frame.reset_index() if has_index(frame) else frame
        return [{str(k): _plain(v) for k, v in row.items()} for row in plain.to_dict("records")]
    names = _label_names(frame)
    column_name = str(frame.columns.names[0] or "column")
    out = []
    for key, row in frame.iterrows():
        keys = key if isinstance(key, tuple) else (key,)
        for label in column_labels(frame):
            n = row[(label, "n")]
            n = 0 if _isnan(n) else int(n)
            if n == 0:
                continue
            record = {name: _plain(k) for name, k in zip(names, keys)}
            record[column_name] = _plain(label)
            record.update(mean=_plain(row[(label, "mean")]), std=_plain(row[(label, "std")]),
                          n=n)
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


def _markdown(frame: pd.DataFrame, layout: Layout, tolerance: float | None) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [f"**{layout.title}**", ""] if layout.title else []
    for heading, table in panel_grids(frame, layout):
        if heading:
            lines += [f"*{heading}*", ""]
        rule = ["---" if align == "l" else "---:" for align in table.aligns]
        lines += [line(table.header), line(rule), *(line(row) for row in table.body), ""]
    if layout.caption:
        lines.append(layout.caption)
    return "\n".join(lines).rstrip("\n") + "\n"


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text (and write the Greek letters and symbols
    of :data:`_LATEX_UNICODE` as LaTeX commands)."""
    return "".join(_LATEX_SPECIALS.get(ch) or _LATEX_UNICODE.get(ch, ch) for ch in text)


def _latex(frame: pd.DataFrame, layout: Layout, tolerance: float | None) -> str:
    """One ``table`` with one booktabs ``tabular`` per panel, each under its heading."""
    def line(cells: list[str]) -> str:
        return " & ".join(latex_escape(c) for c in cells) + r" \\"

    lines = [r"\begin{table}[t]", r"\centering"]
    text = ". ".join(part.rstrip(".") for part in (layout.title, layout.caption) if part)
    if text:
        lines.append(r"\caption{" + latex_escape(text) + ".}")
    for i, (heading, table) in enumerate(panel_grids(frame, layout, pm="±")):
        if i:
            lines.append(r"\medskip")
        if heading:
            lines += [r"\par\emph{" + latex_escape(heading) + "}", ""]
        lines += [r"\begin{tabular}{" + "".join(table.aligns) + "}", r"\toprule",
                  line(table.header), r"\midrule", *(line(row) for row in table.body),
                  r"\bottomrule", r"\end{tabular}"]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def _html(frame: pd.DataFrame, layout: Layout, tolerance: float | None) -> str:
    """HTML ``<table>`` fragments, one per panel, its heading as the caption (escaped; Δ cells
    classed ``agree`` / ``differ`` when a ``tolerance`` is given), after the title and caption
    when there are some."""
    esc = html.escape
    out = []
    if layout.title or layout.caption:
        parts = ([f"<strong>{esc(layout.title)}</strong>"] if layout.title else []) + (
            [f"<span>{esc(layout.caption)}</span>"] if layout.caption else [])
        out.append('<p class="caption">' + "<br>".join(parts) + "</p>")
    for heading, table in panel_grids(frame, layout):
        out.append('<table class="report">')
        if heading:
            out.append(f"<caption>{esc(heading)}</caption>")
        out.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in table.header)
                   + "</tr></thead><tbody>")
        for i, row in enumerate(table.body):
            cells = []
            for j, (text, align) in enumerate(zip(row, table.aligns)):
                classes = ["num"] if align == "r" else []
                delta = table.deltas[i][j] if table.deltas else None
                if delta is not None and tolerance is not None:
                    classes.append("agree" if abs(delta) <= tolerance + 1e-9 else "differ")
                attr = f' class="{" ".join(classes)}"' if classes else ""
                cells.append(f"<td{attr}>{esc(text)}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
    return "\n".join(out) + "\n"
