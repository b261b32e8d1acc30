"""Renderers: DataFrame -> text in one of :data:`FORMATS`. No SQL here, no queries.

Two kinds of frames are understood:

* **stat frames** (what the paper-table reports return): row labels in the index (a MultiIndex
  such as dataset / backbone / method / projector), columns a two-level MultiIndex whose last
  level is named ``"stat"`` and holds ``mean``, ``std`` and ``n`` for every column label (e.g.
  each embedding dim). Text formats show a cell as ``"mean ± std (n)"`` (plain mean when n = 1,
  ``–`` when empty); CSV and JSON give one tidy record per non-empty cell: the row labels, the
  column label, ``mean``, ``std`` (null when n = 1) and ``n``.
* **plain frames** (run listings): shown as they are; CSV/JSON give one record per row.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import pandas as pd

from sslbench.errors import ConfigError

FORMATS = ("table", "markdown", "csv", "json", "latex")
STATS = ("mean", "std", "n")
EMPTY = "–"
_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}


def render(frame: pd.DataFrame, fmt: str, *, title: str = "", caption: str = "",
           digits: int = 2, width: int = 200) -> str:
    """``frame`` as text in format ``fmt`` (one of :data:`FORMATS`); ``width`` is for 'table'."""
    renderers = {"table": _table, "markdown": _markdown, "csv": _csv, "json": _json,
                 "latex": _latex}
    if fmt not in renderers:
        raise ConfigError(f"unknown report format {fmt!r}: use one of {', '.join(FORMATS)}")
    return renderers[fmt](frame, title=title, caption=caption, digits=digits, width=width)


def is_stat_frame(frame: pd.DataFrame) -> bool:
    """True for frames whose columns are (label, stat) pairs with stat in mean/std/n."""
    columns = frame.columns
    return (isinstance(columns, pd.MultiIndex) and columns.nlevels == 2
            and columns.names[-1] == "stat")


def format_cell(mean: float, std: float, n: float, digits: int = 2, pm: str = "±") -> str:
    """``"mean ± std (n)"``; the plain mean when n = 1; :data:`EMPTY` when there is no value."""
    if n is None or _isnan(n) or int(n) == 0 or _isnan(mean):
        return EMPTY
    if int(n) == 1 or _isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} {pm} {std:.{digits}f} ({int(n)})"


def format_value(value: Any, digits: int = 2) -> str:
    """A plain cell: floats to ``digits`` decimals, missing values as :data:`EMPTY`."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return EMPTY
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def _isnan(value: Any) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return value is None or value is pd.NA


def _label_names(frame: pd.DataFrame) -> list[str]:
    return [str(name) if name is not None else "" for name in frame.index.names]


def _grid(frame: pd.DataFrame, digits: int, pm: str = "±"
          ) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, body (as strings, row labels first) and per-column alignment ('l' or 'r')."""
    if not is_stat_frame(frame):
        plain = frame.reset_index() if _has_named_index(frame) else frame
        body = [[format_value(v, digits) for v in row] for row in plain.itertuples(index=False)]
        aligns = ["r" if pd.api.types.is_numeric_dtype(plain[c])
                  and not pd.api.types.is_bool_dtype(plain[c]) else "l" for c in plain.columns]
        return [str(c) for c in plain.columns], body, aligns
    labels = list(dict.fromkeys(frame.columns.get_level_values(0)))
    header = _label_names(frame) + [str(label) for label in labels]
    body = []
    for key, row in frame.iterrows():
        keys = key if isinstance(key, tuple) else (key,)
        cells = [format_cell(row[(lab, "mean")], row[(lab, "std")], row[(lab, "n")], digits, pm)
                 for lab in labels]
        body.append([str(k) for k in keys] + cells)
    return header, body, ["l"] * frame.index.nlevels + ["r"] * len(labels)


def _has_named_index(frame: pd.DataFrame) -> bool:
    return any(name is not None for name in frame.index.names)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-able records: one per non-empty cell of a stat frame, one per row otherwise."""
    if not is_stat_frame(frame):
        plain = frame.reset_index() if _has_named_index(frame) else frame
        return [{str(k): _plain(v) for k, v in row.items()} for row in plain.to_dict("records")]
    names = _label_names(frame)
    column_name = str(frame.columns.names[0] or "column")
    out = []
    for key, row in frame.iterrows():
        keys = key if isinstance(key, tuple) else (key,)
        for label in dict.fromkeys(frame.columns.get_level_values(0)):
            n = row[(label, "n")]
            if _isnan(n) or int(n) == 0:
                continue
            record = {name: _plain(k) for name, k in zip(names, keys)}
            record[column_name] = _plain(label)
            record.update(mean=_plain(row[(label, "mean")]), std=_plain(row[(label, "std")]),
                          n=int(n))
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

    header, body, aligns = _grid(frame, digits)
    table = Table(title=title or None, caption=caption or None)
    for name, align in zip(header, aligns):
        table.add_column(name, justify="left" if align == "l" else "right", no_wrap=align == "l")
    for row in body:
        table.add_row(*row)
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None,
                      force_terminal=False, highlight=False)
    console.print(table)
    return console.export_text(styles=False)


def _markdown(frame: pd.DataFrame, *, title: str, caption: str, digits: int, width: int) -> str:
    header, body, aligns = _grid(frame, digits)

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    rule = ["---" if align == "l" else "---:" for align in aligns]
    lines = ([f"**{title}**", ""] if title else []) + [line(header), line(rule)]
    lines += [line(row) for row in body]
    if caption:
        lines += ["", caption]
    return "\n".join(lines) + "\n"


def _csv(frame: pd.DataFrame, *, title: str, caption: str, digits: int, width: int) -> str:
    return pd.DataFrame(records(frame)).to_csv(index=False, lineterminator="\n")


def _json(frame: pd.DataFrame, *, title: str, caption: str, digits: int, width: int) -> str:
    return json.dumps(records(frame), indent=2, allow_nan=False, default=str) + "\n"


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def _latex(frame: pd.DataFrame, *, title: str, caption: str, digits: int, width: int) -> str:
    header, body, aligns = _grid(frame, digits, pm="\x00")

    def line(cells: list[str]) -> str:
        escaped = [latex_escape(c).replace("\x00", r"$\pm$").replace(EMPTY, "--") for c in cells]
        return " & ".join(escaped) + r" \\"

    spec = "".join(aligns)
    lines = [r"\begin{table}[t]", r"\centering"]
    text = ". ".join(part.rstrip(".") for part in (title, caption) if part)
    if text:
        lines.append(r"\caption{" + latex_escape(text) + ".}")
    lines += [r"\begin{tabular}{" + spec + "}", r"\toprule", line(header), r"\midrule"]
    lines += [line(row) for row in body]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
