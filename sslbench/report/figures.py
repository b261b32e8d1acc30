"""Figures of the paper drawn from report frames, with matplotlib's object API (Agg canvas).

No pyplot and no global state: each function returns a new ``matplotlib.figure.Figure`` that
:func:`save_figure` writes as PNG or SVG. matplotlib is imported here only, and this module is
imported only when a figure is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from sslbench.report.labels import family_key, method_key
from sslbench.report.render import column_labels, has_paper

_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
PANEL_SIZE = 3.2


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


def grid_figure(frame: pd.DataFrame, *, title: str, ylabel: str,
                panels: Sequence[str] = ()) -> Figure:
    """One panel per method (``panels`` first, in order, then the other methods with data),
    top-1 against embedding dimension (log2 axis), one colour per projector family: ours solid
    with ± std bars (one marker per setting), the paper's dashed."""
    methods = frame.index.get_level_values("method")
    families = sorted(set(frame.index.get_level_values("projector")), key=family_key)
    colors = dict(zip(families, _colors(len(families))))
    dims = column_labels(frame)
    means = frame.xs("mean", axis=1, level="stat")
    counts = frame.xs("n", axis=1, level="stat")
    paper = frame.xs("paper", axis=1, level="stat") if has_paper(frame) else None
    present = [m for m in dict.fromkeys(methods)
               if (counts[methods == m] > 0).to_numpy().any()
               or (paper is not None and paper[methods == m].notna().to_numpy().any())]
    order = [m for m in panels if m in present]
    order += sorted((m for m in present if m not in order), key=method_key)
    if not order:
        order = ["(no data)"]
    settings = list(dict.fromkeys(tuple(k[:3]) for k, n in zip(frame.index, counts.sum(axis=1))
                                  if n > 0))
    markers = {s: _MARKERS[i % len(_MARKERS)] for i, s in enumerate(settings)}
    fig = new_figure(PANEL_SIZE * len(order), PANEL_SIZE + 0.8)
    axes = fig.subplots(1, len(order), sharey=True, squeeze=False)[0]
    drawn: set[tuple[str, str]] = set()  # the paper's line of each (method, family), once
    for ax, method in zip(axes, order):
        rows = frame[methods == method]
        for key in rows.index:
            family, setting = key[4], tuple(key[:3])
            x = np.array(dims, dtype=float)
            mean = means.loc[key].to_numpy(float)
            ok = counts.loc[key].to_numpy() > 0
            if ok.any():
                std = np.nan_to_num(frame.xs("std", axis=1, level="stat").loc[key].to_numpy(float))
                ax.errorbar(x[ok], mean[ok], yerr=std[ok], color=colors[family], capsize=2,
                            marker=markers.get(setting, "o"), markersize=4, linewidth=1.5)
            if paper is not None and (method, family) not in drawn:
                published = paper.loc[key].to_numpy(float)
                have = ~np.isnan(published)
                if have.any():
                    drawn.add((method, family))
                    ax.plot(x[have], published[have], color=colors[family], linestyle="--",
                            linewidth=1.2, alpha=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks([float(d) for d in dims], [str(d) for d in dims], rotation=45)
        ax.minorticks_off()
        ax.set_title(method, fontsize=10)
        ax.set_xlabel("Embedding dimension")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    handles = [Line2D([], [], color=colors[f], label=f) for f in families]
    if paper is not None:
        handles.append(Line2D([], [], color="black", linestyle="--", label="paper"))
    if len(settings) > 1:
        handles += [Line2D([], [], color="gray", marker=markers[s], linestyle="",
                           label=", ".join(map(str, s))) for s in settings]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6),
               fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    return fig


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
    fig.suptitle(title, fontsize=11)
    return fig


def spectra_figure(frame: pd.DataFrame, *, title: str) -> Figure:
    """Figure S5: log singular values (normalised by the largest) against their index, panel
    (a) representations and (b) embeddings; one line per group (mean over seeds, ± std band)."""
    spaces = (("repr", "(a) representations"), ("emb", "(b) embeddings"))
    fig = new_figure(2 * PANEL_SIZE + 1.5, PANEL_SIZE + 0.8)
    axes = fig.subplots(1, 2, squeeze=False)[0]
    groups = list(dict.fromkeys(frame["label"]))
    colors = dict(zip(groups, _colors(len(groups))))
    for ax, (space, name) in zip(axes, spaces):
        part = frame[frame["space"] == space]
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
    fig.suptitle(title, fontsize=11)
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
