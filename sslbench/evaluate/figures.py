"""Figures of one run's analysis (matplotlib, Agg backend, written as PNG)."""

from __future__ import annotations

from pathlib import Path

import torch


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def spectra_figure(sv_repr: torch.Tensor, sv_emb: torch.Tensor, path: Path) -> Path:
    """log singular values vs index, representations and embeddings (Figure S5)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3), constrained_layout=True)
    for ax, sv, title in ((axes[0], sv_repr, "representations"), (axes[1], sv_emb, "embeddings")):
        s = sv.double() / sv.double().max().clamp_min(1e-30)
        ax.plot(torch.log(s.clamp_min(1e-30)).numpy())
        ax.set(title=title, xlabel="singular value index", ylabel="log singular value")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def matrices_figure(cov: torch.Tensor, gram: torch.Tensor, path: Path, k: int = 64) -> Path:
    """Covariance of the first k dims and Gram matrix of the first k samples (Figure S8)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), constrained_layout=True)
    for ax, m, title in ((axes[0], cov[:k, :k], f"covariance (first {k} dims)"),
                         (axes[1], gram[:k, :k], f"Gram (first {k} samples)")):
        lim = float(m.abs().max()) or 1.0
        im = ax.imshow(m.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
