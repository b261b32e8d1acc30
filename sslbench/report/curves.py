"""Top-1 against embedding dimension: Figures 1, S6 and S1 (one panel per method) and the dims
figure (one panel per setting), drawn from the reports' stat frames.

Our curves and the paper's are never on one axis: ours fill the first block of panels, the
paper's the block below, each block with its own y scale (at least :data:`MIN_SPAN` points
high, so that a difference of a point or two does not fill the axis). A random-init
evaluation, where the store has one, is a dotted horizontal line in our panels. At most
:data:`MAX_COLUMNS` panels share a row, so that a figure stays readable at its natural size.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from sslbench.report.figures import (
    colors_for,
    legend_columns,
    new_figure,
    spread_ylim,
    titled,
    wrapped,
)
from sslbench.report.frames import only
from sslbench.report.labels import family_key, method_key
from sslbench.report.render import OURS, PAPER, column_labels, panel_heading

MAX_COLUMNS = 5  # the paper's five methods side by side, as in its Figure 1
# The layout, in inches, set here rather than by constrained layout (which would double the
# time to draw): a panel's axes (five fit in MAX_WIDTH), the gaps between panels (the first
# column alone labels the shared y axis), the margins, a line of 9-11 pt text.
AXES_W, AXES_H = 2.1, 1.9
GAP_W, GAP_H = 0.3, 0.7
MARGIN_L, MARGIN_R = 0.8, 0.25
LINE = 0.17
#: Smallest y range of an accuracy panel (points).
MIN_SPAN = 10.0
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


@dataclass
class Curve:
    """One line: ``x`` (dims), ``y`` (means), ``err`` (± std, None without seeds), the legend
    entry of its colour (``color``) and its marker's (``marker``)."""

    x: np.ndarray
    y: np.ndarray
    err: np.ndarray | None
    color: str
    marker: str = ""
    joined: bool = True


@dataclass
class Panel:
    """One axis: ``title``, ``curves``, the random-init ``baselines`` (value, legend) and its x
    axis: embedding dimensions (log 2, each labelled) or another ``xlabel`` (log 10)."""

    title: str
    curves: list[Curve] = field(default_factory=list)
    baselines: list[tuple[float, str]] = field(default_factory=list)
    xlabel: str = "Embedding dimension"


def curves_figure(blocks: Sequence[tuple[str, list[Panel]]], *, title: str, ylabel: str,
                  color_order: Callable[[str], Any] = str) -> Figure:
    """The figure: each ``(name, panels)`` block (ours, then the paper's) in rows of at most
    :data:`MAX_COLUMNS` panels, with its own y scale; one legend below."""
    blocks = [(name, panels) for name, panels in blocks if panels] or [("ours", [Panel(
        "(no data)")])]
    columns = min(MAX_COLUMNS, max(len(panels) for _, panels in blocks))
    rows = [math.ceil(len(panels) / columns) for _, panels in blocks]
    keys = sorted({c.color for _, panels in blocks for p in panels for c in p.curves},
                  key=color_order)
    colors = dict(zip(keys, colors_for(len(keys))))
    markers = list(dict.fromkeys(c.marker for _, panels in blocks for p in panels
                                 for c in p.curves if c.marker))
    shapes = {m: _MARKERS[i % len(_MARKERS)] for i, m in enumerate(markers)}
    handles = [Line2D([], [], color=colors[k], label=k) for k in keys]
    if len(markers) > 1:
        handles += [Line2D([], [], color="gray", marker=shapes[m], linestyle="", label=m)
                    for m in markers]
    handles += [Line2D([], [], color="black", linestyle=":", label=label) for label in
                dict.fromkeys(label for _, panels in blocks for p in panels
                              for _, label in p.baselines)]
    titles = [[_panel_title(name, p.title) for p in panels] for name, panels in blocks]
    fig, grid = _placed(title, columns, sum(rows), handles,
                        max(t.count("\n") + 1 for row in titles for t in row))
    first = 0
    for (_, panels), count, names in zip(blocks, rows, titles):
        block = [fig.add_subplot(grid[first + i // columns, i % columns])
                 for i in range(len(panels))]
        values: list[float] = []
        for ax, panel, text in zip(block, panels, names):
            values += _draw_panel(ax, panel, text, colors, shapes)
        for i, ax in enumerate(block):
            spread_ylim(ax, values, MIN_SPAN)
            if i % columns == 0:
                ax.set_ylabel(ylabel, fontsize=9)
            else:  # the block's scale is the first column's
                ax.tick_params(labelleft=False)
        first += count
    return fig


def _panel_title(block: str, title: str) -> str:
    return "\n".join(textwrap.wrap(f"{block}: {title}", 30))


def _placed(title: str, columns: int, rows: int, handles: list[Line2D], title_lines: int
            ) -> tuple[Figure, Any]:
    """A figure sized for ``rows`` x ``columns`` panels whose titles take ``title_lines``
    lines, its wrapped ``title`` on top and the legend of ``handles`` below, and the grid of
    the panels' places."""
    needed = MARGIN_L + columns * AXES_W + (columns - 1) * GAP_W + MARGIN_R
    width = max(needed, 6.0)
    legend = legend_columns(handles, width)
    panel_title = title_lines * LINE + 0.1
    top = 0.15 + len(wrapped(title, width)) * 0.22 + panel_title
    bottom = 0.65 + math.ceil(len(handles) / legend) * 0.2 + 0.1
    height = top + bottom + rows * AXES_H + (rows - 1) * (GAP_H + panel_title)
    fig = new_figure(width, height, constrained=False)
    left = MARGIN_L + (width - needed) / 2
    grid = fig.add_gridspec(rows, columns, left=left / width,
                            right=(left + needed - MARGIN_L - MARGIN_R) / width,
                            bottom=bottom / height, top=1 - top / height,
                            wspace=GAP_W / AXES_W, hspace=(GAP_H + panel_title) / AXES_H)
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.1 / height),
               ncol=legend, fontsize=8, frameon=False)
    titled(fig, title, width, y=1 - 0.1 / height)
    return fig, grid


def _draw_panel(ax: Any, panel: Panel, title: str, colors: dict[str, Any],
                shapes: dict[str, str]) -> list[float]:
    """The panel's curves and baselines; returns every value drawn (for the y range)."""
    values: list[float] = []
    dims: set[float] = set()
    for curve in panel.curves:
        err = np.zeros_like(curve.y) if curve.err is None else np.nan_to_num(curve.err)
        ax.errorbar(curve.x, curve.y, yerr=None if curve.err is None else err,
                    color=colors[curve.color], capsize=2, marker=shapes.get(curve.marker, "o"),
                    markersize=4, linewidth=1.5, linestyle="-" if curve.joined else "none")
        values += list(curve.y - err) + list(curve.y + err)
        dims |= set(curve.x.tolist())
    for value, _ in panel.baselines:
        ax.axhline(value, color="black", linestyle=":", linewidth=1.2)
        values.append(value)
    if panel.xlabel == Panel.xlabel:
        shown = sorted(dims)
        ax.set_xscale("log", base=2)
        ax.set_xticks(shown, [str(int(d)) for d in shown], fontsize=8)
        ax.minorticks_off()
    else:
        ax.set_xscale("log")
        ax.tick_params(labelsize=8)
    ax.set_xlabel(panel.xlabel)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    return values


def curves_of(frame: pd.DataFrame, rows: Sequence[Any], color: Callable[[tuple[Any, ...]], str],
              marker: Callable[[tuple[Any, ...]], str]) -> list[Curve]:
    """The curves of the stat-frame rows ``rows`` (cells with runs only)."""
    dims = np.array(column_labels(frame), dtype=float)
    means = frame.xs("mean", axis=1, level="stat")
    stds = frame.xs("std", axis=1, level="stat")
    counts = frame.xs("n", axis=1, level="stat")
    out = []
    for key in rows:
        ok = counts.loc[key].to_numpy() > 0
        if not ok.any():
            continue
        std = stds.loc[key].to_numpy(float)[ok]
        out.append(Curve(dims[ok], means.loc[key].to_numpy(float)[ok],
                         None if np.isnan(std).all() else std, color(key), marker(key)))
    return out


def grid_blocks(frame: pd.DataFrame, first: Sequence[str], baseline: pd.DataFrame | None
                ) -> list[tuple[str, list[Panel]]]:
    """Figure 1 / S6 / S1: a panel per method (``first`` in order, then the paper's order),
    a colour per projector family, a marker per setting of ours; the random-init lines of
    ``baseline`` (dataset, backbone, mean, protocol) in our panels."""
    blocks = []
    for source in (OURS, PAPER):
        part = only(frame, source)
        methods = list(dict.fromkeys(part.index.get_level_values("method")))
        order = [m for m in first if m in methods] + sorted(
            (m for m in methods if m not in first), key=method_key)
        panels = []
        for method in order:
            rows = [k for k in part.index if k[3] == method]
            curves = curves_of(part, rows, color=lambda k: str(k[4]),
                               marker=lambda k: panel_heading(dict(zip(
                                   ("dataset", "backbone", "epochs"), k[:3]))))
            if curves:
                settings = {k[:2] for k in rows}
                lines = [] if baseline is None or source != OURS else [
                    (float(r.mean), f"random init ({r.protocol})")
                    for r in baseline.itertuples(index=False)
                    if (r.dataset, r.backbone) in settings]
                panels.append(Panel(method, curves, lines))
        blocks.append((source, panels))
    return blocks


def grid_figure(frame: pd.DataFrame, *, title: str, ylabel: str, panels: Sequence[str] = (),
                baseline: pd.DataFrame | None = None) -> Figure:
    """Top-1 against embedding dimension, one panel per method, one colour per projector
    family (module docstring)."""
    return curves_figure(grid_blocks(frame, panels, baseline), title=title, ylabel=ylabel,
                         color_order=family_key)


def setting_blocks(frame: pd.DataFrame,
                   panel_of: Callable[[pd.DataFrame, list[Any], str], Panel | None]
                   ) -> list[tuple[str, list[Panel]]]:
    """Ours and the paper's blocks with a panel per setting: ``panel_of(rows' source frame,
    the setting's row keys, its heading)``, None for a panel with nothing to draw."""
    blocks = []
    for source in (OURS, PAPER):
        part = only(frame, source)
        panels = []
        for setting in dict.fromkeys(k[:3] for k in part.index):
            heading = panel_heading(dict(zip(("dataset", "backbone", "epochs"), setting)))
            panel = panel_of(part, [k for k in part.index if k[:3] == setting], heading)
            panels += [panel] if panel is not None else []
        blocks.append((source, panels))
    return blocks


def dims_blocks(frame: pd.DataFrame, baseline_method: str, protocol: str
                ) -> list[tuple[str, list[Panel]]]:
    """The dims figure: a panel per setting, a curve per (method, projector); the
    ``baseline_method`` rows (random init, the same value at every dim) as dotted lines."""
    def panel(part: pd.DataFrame, rows: list[Any], heading: str) -> Panel | None:
        lines = [(float(part.loc[k].xs("mean", level="stat").dropna().iloc[0]),
                  f"random init ({protocol})") for k in rows if k[3] == baseline_method]
        curves = curves_of(part, [k for k in rows if k[3] != baseline_method],
                           color=lambda k: f"{k[3]} {k[4]}", marker=lambda k: "")
        return Panel(heading, curves, lines) if curves else None

    return setting_blocks(frame, panel)


def capacity_figure(frame: pd.DataFrame, *, title: str) -> Figure:
    """Figure S7: top-1 against projector parameters (log axis), a colour per method; a panel
    per setting of ours, and the paper's below."""
    def panel(part: pd.DataFrame, rows: list[Any], heading: str) -> Panel | None:
        curves = []
        for method in sorted(dict.fromkeys(k[3] for k in rows), key=method_key):
            keys = sorted((k for k in rows if k[3] == method), key=lambda k: k[5])
            sub = part.loc[keys]
            counts = sub.xs("n", axis=1, level="stat").iloc[:, 0].to_numpy()
            std = sub.xs("std", axis=1, level="stat").iloc[:, 0].to_numpy(float)
            ok = counts > 0
            if ok.any():
                curves.append(Curve(
                    np.array([k[5] for k in keys], dtype=float)[ok],
                    sub.xs("mean", axis=1, level="stat").iloc[:, 0].to_numpy(float)[ok],
                    None if np.isnan(std[ok]).all() else std[ok], method, joined=False))
        return Panel(heading, curves, xlabel="Projector parameters") if curves else None

    return curves_figure(setting_blocks(frame, panel), title=title,
                         ylabel="Online top-1 accuracy (%)", color_order=method_key)
