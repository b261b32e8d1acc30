"""The paper's published numbers, shipped as CSVs in ``published/``: Tables 1, S1-S6, Figure S2,
the baselines it quotes, and the values its text states for Figures 2, S3 and S7.

The CSV files hold the tables exactly as printed (Table S4 keeps its ``1M`` / ``65k``
abbreviations); this module parses them into lookups keyed the way the reports key their cells:

* :func:`table_s5`: ``{(method, projector family, dim): online top-1}`` (Table S5, Figure 1/S6);
* :func:`table_s2_s3`: ``{(method, family, dim, probe): top-1}`` with probe ``online`` or
  ``offline`` (Tables S2 and S3);
* :func:`table_s4`: one dict per row of Table S4, numbers parsed;
* :func:`table_s6`: one dict per row of Table S6 (strings as printed, ``""`` for an empty cell);
* :func:`fig_s2_cka`: ``(labels, matrix)`` of Figure S2;
* :func:`table_1` (normalisation per method), :func:`table_s1` (augmentations, per view),
  :func:`quoted_baselines`, :func:`fig2_stated`, :func:`fig_s3_stated`, :func:`fig_s7_stated`:
  rows as printed, numbers parsed (NaN where the paper gives none).

Paper method labels are the paper's: VICReg, VICReg-exp, VICReg-ctr, SimCLR-Orig, SimCLR-Tuned.
"""

from __future__ import annotations

import csv
import functools
import math
from importlib import resources
from typing import Any

#: The setting of every published number (the paper's Appendix D: ImageNet-1k, ResNet-50), as
#: the (dataset, backbone, epochs) of the paper's rows in the reports.
PAPER_SETTING = ("ImageNet-1k", "ResNet-50", 100)
PAPER_SETTING_TEXT = "ImageNet-1k, ResNet-50, 100 epochs"
#: Dataset names under which a run may be ImageNet-1k: ``imagefolder`` (what ``--preset paper``
#: reads from ``--data-root``; the store does not know which folder it was) and ``imagenet``.
IMAGENET_DATASETS = ("imagefolder", "imagenet")
#: The paper's offline linear protocol (Appendix E), as the eval params that record it.
PAPER_OFFLINE_PROBE = {"linear_epochs": 100, "probe_augment": "crop-flip",
                       "probe_standardize": False, "batch_size": 1024}
PAPER_OFFLINE_PROBE_TEXT = ("100 epochs, batch 1024, base lr 0.25 (VICReg) or 1.4 (VICReg-exp), "
                            "random resized crop + flip, raw representations")
#: Table S5's row order (Figure 1's panels, left to right) and projector families.
PAPER_METHODS = ("VICReg", "VICReg-exp", "VICReg-ctr", "SimCLR-Orig", "SimCLR-Tuned")
PAPER_FAMILIES = ("d-d-d", "8192-8192-d", "2048-d", "2048-2048-d")
PAPER_DIMS = (256, 512, 1024, 2048, 8192)
#: The regression of offline on online top-1 the paper states under Table S3.
PAPER_REGRESSION = {"slope": 0.97, "intercept": 2.1, "r2": 1.0}
#: Batch size N of Table S4 (1024 ImageNet images).
TABLE_S4_N = 1024
TABLE_S4_COLUMNS = ("n2_over_m", "sum_row4_colsnormalized", "n2", "m2_over_n",
                    "sum_col4_rowsnormalized", "m2")
_SUFFIX = {"k": 1e3, "M": 1e6}


def comparable(dataset: Any, backbone: Any, epochs: Any) -> bool:
    """Whether our runs of this setting can be compared number for number with the paper's:
    ImageNet-1k (:data:`IMAGENET_DATASETS`), ResNet-50, 100 epochs."""
    return (str(dataset) in IMAGENET_DATASETS and str(backbone) == "resnet50"
            and str(epochs) == "100")


def read_csv(name: str) -> list[dict[str, str]]:
    """Rows of ``published/<name>`` as dicts of the printed strings."""
    folder = resources.files("sslbench.report").joinpath("published")
    text = folder.joinpath(name).read_text("utf-8")
    return list(csv.DictReader(text.splitlines()))


def parse_number(text: str) -> float:
    """A printed number: ``"128.19" -> 128.19``, ``"65k" -> 65000``, ``"1M" -> 1e6``, ``"" ->
    NaN``."""
    text = text.strip()
    if not text:
        return math.nan
    if text[-1] in _SUFFIX:
        return float(text[:-1]) * _SUFFIX[text[-1]]
    return float(text)


@functools.cache
def table_s5() -> dict[tuple[str, str, int], float]:
    """Table S5: ``{(method, family, dim): online top-1}`` (100 cells)."""
    return {(r["method"], r["projector"], int(r["dim"])): float(r["top1"])
            for r in read_csv("table_s5_online_top1.csv")}


@functools.cache
def table_s2_s3() -> dict[tuple[str, str, int, str], float]:
    """Tables S2 (VICReg) and S3 (VICReg-exp): ``{(method, family, dim, probe): top-1}``."""
    out = {}
    for r in read_csv("table_s2_s3_online_offline.csv"):
        key = (r["method"], r["projector"], int(r["dim"]))
        out[key + ("online",)] = float(r["online_top1"])
        out[key + ("offline",)] = float(r["offline_top1"])
    return out


def s4_bounds(n: float, m: float) -> dict[str, float]:
    """The Lemma 3.4 bounds (a = 1) for N samples and M dimensions, keyed like Table S4."""
    return {"n2_over_m": n * n / m, "n2": n * n, "m2_over_n": m * m / n, "m2": m * m}


@functools.cache
def table_s4() -> tuple[dict[str, Any], ...]:
    """Table S4 rows: ``experiment``, ``projector`` (literal widths), ``m`` (its last width),
    ``printed`` (the row as printed) and every column of :data:`TABLE_S4_COLUMNS` as a number.

    The bound columns (N²/M, N², M²/N, M²) are exact functions of N = 1024 and M, which the
    printed ``1M`` / ``65k`` / ``67M`` truncate; they are given exactly. The measured sums are
    parsed from the print (``83k`` -> 83000)."""
    rows = []
    for r in read_csv("table_s4_norm_bounds.csv"):
        m = int(r["projector"].split("-")[-1])
        row: dict[str, Any] = {"experiment": r["experiment"], "projector": r["projector"],
                               "m": m, "printed": dict(r)}
        row.update({k: parse_number(r[k]) for k in TABLE_S4_COLUMNS})
        row.update(s4_bounds(TABLE_S4_N, m))
        rows.append(row)
    return tuple(rows)


@functools.cache
def table_s6() -> tuple[dict[str, str], ...]:
    """Table S6 rows as printed: method, dims (``256`` / ``not-8192`` / ``all``), batch_size,
    base_lr, sim, var, cov, tau (``""`` where the paper has no value)."""
    return tuple(read_csv("table_s6_hparams.csv"))


def s6_row(method: str, dim: int) -> dict[str, str] | None:
    """The Table S6 row that applies to ``method`` at embedding dimension ``dim`` (or None)."""
    for row in table_s6():
        if row["method"] != method:
            continue
        dims = row["dims"]
        if dims == "all" or (dims == "not-8192" and dim != 8192) or (
                dims.isdigit() and int(dims) == dim):
            return row
    return None


@functools.cache
def fig_s2_cka() -> tuple[tuple[str, ...], tuple[tuple[float, ...], ...]]:
    """Figure S2: row labels (``VICReg-1024`` ... ``SimCLR-8192``, ``Random``) and the
    symmetric 13 x 13 linear-CKA matrix."""
    rows = read_csv("fig_s2_cka.csv")
    labels = tuple(r[""] for r in rows)
    columns = [c for c in rows[0] if c]
    matrix = tuple(tuple(float(r[c]) for c in columns) for r in rows)
    return labels, matrix


def cka_lookup() -> dict[tuple[str, str], float]:
    """``{(row label, column label): CKA}`` of Figure S2, both orders."""
    labels, matrix = fig_s2_cka()
    return {(a, b): matrix[i][j] for i, a in enumerate(labels) for j, b in enumerate(labels)}


def _parsed(name: str, numbers: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    """Rows of ``published/<name>`` with the ``numbers`` columns parsed (``""`` -> NaN)."""
    return tuple({k: parse_number(v) if k in numbers else v for k, v in row.items()}
                 for row in read_csv(name))


@functools.cache
def table_1() -> tuple[dict[str, str], ...]:
    """Table 1: what each method normalises (rows: dimension centering, embedding norm,
    dimension norm; columns: VICReg ... SimCLR B), as printed (✓, ✗, –, √N, ...)."""
    return tuple(read_csv("table_1_normalization.csv"))


@functools.cache
def table_s1() -> tuple[dict[str, Any], ...]:
    """Table S1: BYOL's augmentation parameters, one row per parameter, ``view_1`` and
    ``view_2`` as numbers."""
    return _parsed("table_s1_augmentations.csv", ("view_1", "view_2"))


@functools.cache
def quoted_baselines() -> tuple[dict[str, Any], ...]:
    """The top-1 values the paper quotes from other papers (method, epochs, dim, top1,
    source, note)."""
    return _parsed("quoted_baselines.csv", ("epochs", "dim", "top1"))


@functools.cache
def fig2_stated() -> tuple[dict[str, Any], ...]:
    """Figure 2's text: the 1000-epoch runs (SimCLR w/ dim std 72.6, VICReg 73.3)."""
    return _parsed("fig2_stated.csv", ("epochs", "top1"))


@functools.cache
def fig_s3_stated() -> tuple[dict[str, Any], ...]:
    """Figure S3's text: SimCLR-abs 68.71 against SimCLR-Tuned's 68.61 (method, projector,
    dim, top1, note)."""
    return _parsed("fig_s3_stated.csv", ("dim", "top1"))


@functools.cache
def fig_s7_stated() -> tuple[dict[str, Any], ...]:
    """Figure S7's text: parameter counts (millions) and top-1 it states (method, projector,
    params_m, top1, note)."""
    return _parsed("fig_s7_stated.csv", ("params_m", "top1"))


def quoted_text() -> str:
    """The quoted baselines in one sentence, for captions."""
    parts = [f"{r['method']} {r['top1']:g}" + (f" at d = {r['dim']:g}" if r["dim"] == r["dim"]
                                               else "") + f" ({r['source']}, {r['note']})"
             for r in quoted_baselines()]
    return "Quoted by the paper (100 epochs): " + "; ".join(parts) + "."
