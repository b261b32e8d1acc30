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

from sslbench.report.frames import only
from sslbench.report.labels import family_key, method_key
from sslbench.report.render import OURS, PAPER, column_labels

_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
PANEL_SIZE = 3.2
#: Smallest y range of an accuracy panel (points): differences of a point or two stay small.
MIN_SPAN = 10.0


def new_figure(width: float, height: float) -> Figure:
    """An empty figure on an Agg canvas (so it can be saved without pyplot)."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, out: str | Path | IO[bytes], fmt: str) -> None:
    """Write ``figure`` as ``fmt`` (``png`` or ``svg``) to a path or binary file object;
    the output carries no creation date, so it is reproducible."""
    from matplotlib import rc_context

    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    with rc_context({"svg.hashsalt": "sslbench"}):  # stable element ids in SVG
        figure.savefig(out, format=fmt, dpi=110, metadata=metadata)


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def titled(fig: Figure, title: str, width: float, fontsize: float = 11) -> None:
    """``title`` as the figure's title, wrapped to the figure's ``width`` (inches) so that it
    is never clipped."""
    chars = max(20, int(width * 72 / (0.6 * fontsize)))  # an average glyph is ~0.6 em wide
    fig.suptitle("\n".join(textwrap.wrap(title, chars)), fontsize=fontsize)


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


def _panel_order(methods: Sequence[str], first: Sequence[str]) -> list[str]:
    order = [m for m in first if m in methods]
    return order + sorted((m for m in methods if m not in order), key=method_key)


def grid_figure(frame: pd.DataFrame, *, title: str, ylabel: str, panels: Sequence[str] = (),
                baseline: pd.DataFrame | None = None) -> Figure:
    """Top-1 against embedding dimension (log2 axis), one panel per method (``panels`` first,
    in order), one colour per projector family: our runs on the top row (± std bars, one
    marker per setting; a dotted line per random-init ``baseline``: dataset, backbone,
    protocol, mean), the paper's on the row below, each row with its own y scale."""
    ours, paper = only(frame, OURS), only(frame, PAPER)
    ours = ours[ours.xs("n", axis=1, level="stat").sum(axis=1) > 0]
    families = sorted(set(ours.index.get_level_values("projector"))
                      | set(paper.index.get_level_values("projector")), key=family_key)
    colors = dict(zip(families, _colors(len(families))))
    rows = [(part, _panel_order(list(dict.fromkeys(part.index.get_level_values("method"))),
                                panels), label)
            for part, label in ((ours, "ours"), (paper, "paper")) if len(part)]
    if not rows:
        rows = [(ours, ["(no data)"], "ours")]
    columns = max(len(order) for _, order, _ in rows)
    width = max(PANEL_SIZE * columns, 6.0)
    fig = new_figure(width, (PANEL_SIZE + 0.3) * len(rows) + 1.2)
    axes = fig.subplots(len(rows), columns, squeeze=False)
    settings = list(dict.fromkeys(tuple(k[:3]) for k in ours.index))
    markers = {s: _MARKERS[i % len(_MARKERS)] for i, s in enumerate(settings)}
    for (part, order, label), row_axes in zip(rows, axes):
        values: list[float] = []
        for ax, method in zip(row_axes, order):
            values += _draw_grid_panel(ax, part, method, colors, markers)
            if label == "ours" and baseline is not None:
                values += _draw_baseline(ax, baseline, settings)
            ax.set_title(f"{label}: {method}", fontsize=10)
        for ax in row_axes[len(order):]:
            ax.set_visible(False)
        for ax in row_axes[:len(order)]:
            spread_ylim(ax, values, MIN_SPAN)
            if ax is not row_axes[0]:
                ax.tick_params(labelleft=False)
        row_axes[0].set_ylabel(ylabel if label == "ours" else f"{ylabel}, paper")
    handles = [Line2D([], [], color=colors[f], label=f) for f in families]
    if len(settings) > 1:
        handles += [Line2D([], [], color="gray", marker=markers[s], linestyle="",
                           label=", ".join(map(str, s))) for s in settings]
    if baseline is not None and len(baseline):
        handles.append(Line2D([], [], color="black", linestyle=":", label=baseline_label(
            baseline)))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5),
               fontsize=8, frameon=False)
    titled(fig, title, width)
    return fig


def baseline_label(baseline: pd.DataFrame) -> str:
    """The legend entry of the random-init lines: ``random init (fast-linear probe)``."""
    protocols = ", ".join(dict.fromkeys(baseline["protocol"]))
    return f"random init ({protocols})"


def _draw_grid_panel(ax: Any, part: pd.DataFrame, method: str, colors: dict[str, Any],
                     markers: dict[tuple[Any, ...], str]) -> list[float]:
    """One method's lines (± std bars when there are several seeds); returns the values."""
    means = part.xs("mean", axis=1, level="stat")
    stds = np.nan_to_num(part.xs("std", axis=1, level="stat").to_numpy(float))
    counts = part.xs("n", axis=1, level="stat").to_numpy()
    dims = np.array(column_labels(part), dtype=float)
    values: list[float] = []
    for i, key in enumerate(part.index):
        if key[3] != method:
            continue
        ok = counts[i] > 0
        mean = means.iloc[i].to_numpy(float)
        ax.errorbar(dims[ok], mean[ok], yerr=stds[i][ok], color=colors[key[4]], capsize=2,
                    marker=markers.get(tuple(key[:3]), "o"), markersize=4, linewidth=1.5)
        values += list(mean[ok] - stds[i][ok]) + list(mean[ok] + stds[i][ok])
    shown = dims[counts.sum(axis=0) > 0]
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(shown), [str(int(d)) for d in shown], rotation=45)
    ax.minorticks_off()
    ax.set_xlabel("Embedding dimension")
    ax.grid(alpha=0.3)
    return values


def _draw_baseline(ax: Any, baseline: pd.DataFrame, settings: list[tuple[Any, ...]]
                   ) -> list[float]:
    """Dotted lines at the random-init value of each (dataset, backbone) of ``settings``."""
    wanted = {s[:2] for s in settings}
    values = []
    for row in baseline.itertuples(index=False):
        if (row.dataset, row.backbone) in wanted:
            ax.axhline(row.mean, color="black", linestyle=":", linewidth=1.2)
            values.append(float(row.mean))
    return values


def _heatmap(fig: Figure, ax: Any, matrix: np.ndarray, labels: Sequence[str], title: str) -> None:
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_title(title, fontsize=10)
    if len(labels) <= 16:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if not math.isnan(matrix[i, j]):
                    ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=5.5,
                            color="black" if matrix[i, j] > 0.6 else "white")
    fig.colorbar(image, ax=ax, shrink=0.8)


def cka_figure(ours: pd.DataFrame, paper: tuple[Sequence[str], Any] | None, *,
               title: str) -> Figure:
    """Heat maps of linear CKA (colour scale 0 to 1): ours (a square frame, labels as index and
    columns) and, when given, the paper's Figure S2 ``(labels, matrix)`` beside it."""
    panels = 2 if paper is not None else 1
    largest = max(len(ours), len(paper[0]) if paper is not None else 0)
    side = max(4.0, 0.5 * largest + 2.0)
    fig = new_figure(side * panels + 1.0, side)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    _heatmap(fig, axes[0], ours.to_numpy(float), [str(c) for c in ours.columns], "ours")
    if paper is not None:
        labels, matrix = paper
        _heatmap(fig, axes[1], np.asarray(matrix, float), list(labels), "paper (Figure S2)")
    titled(fig, title, fig.get_figwidth())
    return fig


def spectra_figure(frame: pd.DataFrame, *, title: str) -> Figure:
    """Figure S5: log singular values (normalised by the largest) against their index, panel
    (a) representations and (b) embeddings; one line per group (mean over seeds, ± std band);
    ``frame`` as :func:`sslbench.report.spectra.spectra_frame` returns it."""
    from sslbench.report.spectra import spectrum_labels

    spaces = (("repr", "(a) representations"), ("emb", "(b) embeddings"))
    width = 2 * PANEL_SIZE + 1.5
    fig = new_figure(width, PANEL_SIZE + 0.8)
    axes = fig.subplots(1, 2, squeeze=False)[0]
    data = frame.reset_index().assign(label=spectrum_labels(frame))
    groups = list(dict.fromkeys(data["label"]))
    colors = dict(zip(groups, _colors(len(groups))))
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
        fig.legend(handles=handles, loc="outside lower center", ncol=1 if len(handles) > 4 else
                   2, fontsize=7, frameon=False)
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
