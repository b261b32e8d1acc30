"""The ``table`` format: a report as rich tables that fit the terminal, with no cell ever cut.

Each panel (:func:`sslbench.report.render.panels`) is one table. A panel wider than the terminal
is split into parts by columns, the row labels repeated in each part; a part still too wide
(a single column with long labels) wraps its cells at spaces, and a word longer than its column
is folded onto the next line, never replaced by an ellipsis.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Sequence

import pandas as pd
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sslbench.report.render import Grid, Layout, panel_grids

#: Characters a rich table adds around its columns: a border and one space of padding on each
#: side of every cell, plus the closing border.
_PER_COLUMN, _EDGE = 3, 1
#: Width when the output is not a terminal and ``COLUMNS`` is not set.
FALLBACK_WIDTH = 120


def terminal_width() -> int:
    """The terminal's width (``COLUMNS`` first), :data:`FALLBACK_WIDTH` when unknown."""
    return shutil.get_terminal_size((FALLBACK_WIDTH, 24)).columns


def table_text(frame: pd.DataFrame, layout: Layout, *, width: int) -> str:
    """The frame as text at most ``width`` characters wide (module docstring)."""
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None,
                      force_terminal=False, highlight=False, emoji=False)
    if layout.title:
        console.print(Text(layout.title, justify="left"))
    for heading, grid in panel_grids(frame, layout):
        parts = column_parts(grid, width)
        for i, columns in enumerate(parts, 1):
            title = heading + (f" (part {i} of {len(parts)})" if len(parts) > 1 else "")
            if title:
                console.print(Text(title, justify="left"))
            console.print(_rich_table(grid, columns))
    if layout.caption:
        console.print(Text(layout.caption, justify="left"))
    return console.export_text(styles=False)


def column_widths(grid: Grid) -> tuple[list[int], list[int]]:
    """(natural, minimum) width of each column: its longest cell, and its longest word."""
    rows = [grid.header, *grid.body]
    natural = [max(cell_len(row[j]) for row in rows) for j in range(len(grid.header))]
    minimum = [max((cell_len(w) for row in rows for w in row[j].split()), default=0)
               for j in range(len(grid.header))]
    return natural, minimum


def table_width(widths: Sequence[int]) -> int:
    """Characters a rich table takes for columns of these widths."""
    return sum(widths) + _PER_COLUMN * len(widths) + _EDGE


def column_parts(grid: Grid, width: int) -> list[list[int]]:
    """The value columns of ``grid`` grouped into parts that fit ``width`` at their natural
    widths beside the row labels (each part at least one column)."""
    natural, _ = column_widths(grid)
    labels = list(range(grid.labels))
    values = list(range(grid.labels, len(grid.header)))
    if not values:
        return [labels]
    parts: list[list[int]] = [[]]
    for j in values:
        trial = parts[-1] + [j]
        if parts[-1] and table_width([natural[c] for c in labels + trial]) > width:
            parts.append([j])
        else:
            parts[-1] = trial
    return [labels + part for part in parts]


def _rich_table(grid: Grid, columns: list[int]) -> Table:
    table = Table()
    for j in columns:
        table.add_column(grid.header[j], justify="left" if grid.aligns[j] == "l" else "right",
                         overflow="fold")
    for row in grid.body:
        table.add_row(*(row[j] for j in columns))
    return table
