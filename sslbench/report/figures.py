"""Figures of the paper drawn from report frames, with matplotlib's object API (Agg canvas).

No pyplot and no global state: each function returns a new ``matplotlib.figure.Figure`` that
:func:`save_figure` writes as PNG or SVG. matplotlib is imported here only, and this module is
imported only when a figure is drawn.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

PANEL_SIZE = 3.2
DPI = 110
#: The widest figure (inches): at the 110 dpi of :func:`save_figure`, 1430 pixels, shown at
#: its natural size in the HTML report.
MAX_WIDTH = 13.0


def new_figure(width: float, height: float, *, constrained: bool = True) -> Figure:
    """An empty figure on an Agg canvas (so it can be saved without pyplot), laid out by
    matplotlib's constrained layout (nothing overlaps, nothing is cut off) unless the caller
    places its axes itself (``constrained=False``)."""
    figure = Figure(figsize=(width, height), dpi=DPI,
                    layout="constrained" if constrained else None)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, out: str | Path | IO[bytes], fmt: str) -> None:
    """Write ``figure`` as ``fmt`` (``png`` or ``svg``) to a path or binary file object;
    the output carries no creation date, so it is reproducible. The layout is computed once,
    then frozen: savefig would otherwise run it a second time (half of the cost)."""
    from matplotlib import rc_context

    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    if figure.get_layout_engine() is not None:
        figure.draw_without_rendering()
        figure.set_layout_engine("none")
    with rc_context({"svg.hashsalt": "sslbench"}):  # stable element ids in SVG
        figure.savefig(out, format=fmt, dpi=DPI, metadata=metadata)


def colors_for(n: int) -> list[Any]:
    """``n`` distinct colours (tab10, repeating after ten)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def wrapped(title: str, width: float, fontsize: float = 11) -> list[str]:
    """``title`` in lines that fit ``width`` inches at ``fontsize`` points."""
    chars = max(20, int(width * 72 / (0.6 * fontsize)))  # an average glyph is ~0.6 em wide
    return textwrap.wrap(title, chars)


def titled(fig: Figure, title: str, width: float, fontsize: float = 11,
           y: float | None = None) -> None:
    """``title`` as the figure's title, wrapped to the figure's ``width`` (inches) so that it
    is never clipped (``y``: where its top is, a figure fraction)."""
    place = {} if y is None else {"y": y, "va": "top"}
    fig.suptitle("\n".join(wrapped(title, width, fontsize)), fontsize=fontsize, **place)


def legend_columns(handles: Sequence[Any], width: float, fontsize: float = 8) -> int:
    """How many legend entries fit side by side in ``width`` inches (an entry: its marker
    and its text, a glyph ~0.6 em)."""
    longest = max((len(str(h.get_label())) for h in handles), default=1)
    entry = 0.8 + longest * 0.6 * fontsize / 72
    return max(1, min(len(handles), int(0.95 * width / entry)))


def spread_ylim(ax: Any, values: Sequence[float], span: float) -> None:
    """A y range of at least ``span`` around ``values``, so that differences of a point or two
    do not fill the whole axis."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return
    low, high = min(finite), max(finite)
    if high - low < span:
        middle = (low + high) / 2
        low, high = middle - span / 2, middle + span / 2
    pad = 0.05 * (high - low)
    ax.set_ylim(low - pad, high + pad)


def _heatmap(fig: Figure, ax: Any, matrix: np.ndarray, labels: Sequence[str], title: str) -> None:
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_title(title, fontsize=10)
    if len(labels) <= 16:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if not math.isnan(matrix[i, j]):
                    ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if matrix[i, j] > 0.6 else "white")
    fig.colorbar(image, ax=ax, shrink=0.8)


def cka_figure(ours: pd.DataFrame, paper: tuple[Sequence[str], Any] | None, *,
               title: str) -> Figure:
    """Heat maps of linear CKA (colour scale 0 to 1): ours (a square frame, labels as index and
    columns) and, when given, the paper's Figure S2 ``(labels, matrix)`` on its own axis,
    beside ours or (when the two would be wider than :data:`MAX_WIDTH`) below; each sized for
    its own number of networks."""
    maps = [(ours.to_numpy(float), [str(c) for c in ours.columns], "ours")]
    if paper is not None:
        maps.append((np.asarray(paper[1], float), list(paper[0]), "paper (Figure S2)"))
    sides = [max(3.5, 0.45 * len(labels) + 2.0) for _, labels, _ in maps]
    stacked = sum(sides) + 1.0 > MAX_WIDTH
    width = max(sides) + 1.0 if stacked else sum(sides) + 1.0
    height = sum(sides) if stacked else max(sides)
    fig = new_figure(width, height + 0.6)
    grid = fig.add_gridspec(len(maps) if stacked else 1, 1 if stacked else len(maps),
                            **({"height_ratios": sides} if stacked else {"width_ratios": sides}))
    for i, (matrix, labels, name) in enumerate(maps):
        _heatmap(fig, fig.add_subplot(grid[i, 0] if stacked else grid[0, i]), matrix, labels,
                 name)
    titled(fig, title, width)
    return fig


def spectra_figure(frame: pd.DataFrame, *, title: str) -> Figure:
    """Figure S5: log singular values (normalised by the largest) against their index, panel
    (a) representations and (b) embeddings; one line per group (mean over seeds, ± std band);
    ``frame`` as :func:`sslbench.report.spectra.spectra_frame` returns it."""
    from sslbench.report.spectra import spectrum_labels

    spaces = (("repr", "(a) representations"), ("emb", "(b) embeddings"))
    width = 2 * PANEL_SIZE + 1.5
    fig = new_figure(width, PANEL_SIZE + 1.2)
    axes = fig.subplots(1, 2, squeeze=False)[0]
    data = frame.reset_index().assign(label=spectrum_labels(frame))
    groups = list(dict.fromkeys(data["label"]))
    colors = dict(zip(groups, colors_for(len(groups))))
    for ax, (space, name) in zip(axes, spaces):
        part = data[data["space"] == space]
        for label, line in part.groupby("label", sort=False):
            x, y = line["index"].to_numpy(), line["mean"].to_numpy(float)
            std = np.nan_to_num(line["std"].to_numpy(float))
            ax.plot(x, y, color=colors[label], linewidth=1.2, label=label)
            ax.fill_between(x, y - std, y + std, color=colors[label], alpha=0.2, linewidth=0)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("Singular value rank")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("log(σ / σ₁)")
    handles = [Line2D([], [], color=colors[g], label=g) for g in groups]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", fontsize=7, frameon=False,
                   ncol=legend_columns(handles, width, fontsize=7))
    titled(fig, title, width)
    return fig


def run_spectra_figure(sv_repr: np.ndarray, sv_emb: np.ndarray) -> Figure:
    """One run's singular-value spectra, representations and embeddings (Figure S5): the log of
    each singular value over the largest, against its index."""
    figure = new_figure(8, 3)
    axes = figure.subplots(1, 2)
    for ax, values, title in ((axes[0], sv_repr, "representations"),
                              (axes[1], sv_emb, "embeddings")):
        s = np.asarray(values, dtype=np.float64)
        s = s / max(float(s.max(initial=0.0)), 1e-30)
        ax.plot(np.log(np.clip(s, 1e-30, None)))
        ax.set(title=title, xlabel="singular value index", ylabel="log singular value")
    return figure


def run_matrices_figure(cov: np.ndarray, gram: np.ndarray, k: int = 64) -> Figure:
    """One run's covariance of the first ``k`` embedding dimensions and Gram matrix of the first
    ``k`` samples (Figure S8), on a symmetric colour scale."""
    figure = new_figure(8, 4)
    axes = figure.subplots(1, 2)
    cov, gram = cov[:k, :k], gram[:k, :k]
    for ax, matrix, title in ((axes[0], cov, f"covariance (first {len(cov)} dims)"),
                              (axes[1], gram, f"Gram (first {len(gram)} samples)")):
        lim = float(np.abs(matrix).max(initial=0.0)) or 1.0
        image = ax.imshow(matrix, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        figure.colorbar(image, ax=ax, shrink=0.8)
    return figure


def histogram_figure(counts: dict[tuple[Any, ...], np.ndarray], *, order: Sequence[str],
                     title: str) -> Figure:
    """Figure S4: one panel per network group ``(dataset, backbone, epochs, method, projector,
    dim)`` (methods of ``order`` first), its histogram of negative-pair cosines as bars over
    [-1, 1] and, dashed, the counts of a uniform spread on the sphere of its dim."""
    from sslbench.report.labels import method_key
    from sslbench.report.negatives import bin_centres, uniform_counts

    def rank(key: tuple[Any, ...]) -> tuple[Any, ...]:
        method = key[3]
        first = order.index(method) if method in order else len(order)
        return (first, method_key(method), *key[:3], key[4], key[5])

    keys = sorted(counts, key=rank)
    settings = {k[:3] for k in keys}
    columns = min(4, max(1, len(keys)))
    rows = -(-max(1, len(keys)) // columns)
    width = max(PANEL_SIZE * columns, 6.0)
    fig = new_figure(width, 2.8 * rows + 1.0)
    grid = fig.add_gridspec(rows, columns)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(grid[i // columns, i % columns])
        values = np.asarray(counts[key], float)
        centres = bin_centres(len(values))
        step = 2.0 / len(values)
        ax.bar(centres, values, width=step, color="tab:blue", alpha=0.8, linewidth=0)
        expected = uniform_counts(values.sum(), len(values), int(key[5]))
        if expected is not None:
            ax.plot(centres, expected, color="black", linestyle="--", linewidth=1)
        seen = centres[values > 0]
        if len(seen):
            reach = min(1.0, max(abs(seen[0]), abs(seen[-1])) + 2 * step)
            ax.set_xlim(-reach, reach)
        name = f"{key[3]}, {key[4]}, d={key[5]}"
        if len(settings) > 1:
            name += f" ({key[0]}, {key[1]}, {key[2]} ep)"
        ax.set_title("\n".join(textwrap.wrap(name, 36)), fontsize=9)
        ax.set_xlabel("Cosine similarity", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if i % columns == 0:
            ax.set_ylabel("Negative pairs")
    handles = [Line2D([], [], color="tab:blue", linewidth=6, alpha=0.8, label="ours"),
               Line2D([], [], color="black", linestyle="--",
                      label="uniform on the sphere of d dimensions")]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    titled(fig, title, width)
    return fig


def image_grid_figure(images: Sequence[tuple[str, str]], *, title: str) -> Figure:
    """Stored images (``(label, PNG path)``), one row each, their labels as titles."""
    from matplotlib.image import imread

    width = 8.0
    fig = new_figure(width, 3.6 * max(1, len(images)) + 0.6)
    for i, (label, path) in enumerate(images):
        ax = fig.add_subplot(len(images), 1, i + 1)
        ax.imshow(imread(path))
        ax.set_axis_off()
        ax.set_title(label, fontsize=9)
    titled(fig, title, width)
    return fig
