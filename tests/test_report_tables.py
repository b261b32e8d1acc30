"""Golden tests of every named report on a small synthetic store written through the Store API
(the way training and evaluation write it), against numbers computed by hand; filters, select,
error paths, and the output formats (CSV / JSON round trips, LaTeX structure).

``Builder`` and ``fill_paper_store`` are imported by test_report_figures.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import math
import re
import statistics

import numpy as np
import pandas as pd
import pytest

import sslbench.db.store as store_module
from sslbench.db import Store
from sslbench.errors import ConfigError, SSLBenchError
from sslbench.report import (
    REPORTS,
    EmptyReportError,
    ReportFilters,
    build_report,
    report_options,
    write_report,
)
from sslbench.report.render import records
from tests.conftest import assert_imports_none_of

SQRT2 = math.sqrt(2)


@contextlib.contextmanager
def _clock(when: dt.datetime | None):
    """Runs created inside get ``when`` as their creation time."""
    if when is None:
        yield
        return
    saved = store_module.utcnow
    store_module.utcnow = lambda: when
    try:
        yield
    finally:
        store_module.utcnow = saved


class Builder:
    """Records runs as training / evaluation / `sslbench compare` do."""

    def __init__(self, store: Store, start: int = 0) -> None:
        self.store, self.count = store, start  # ids from start + 1: two builders, one store

    def _id(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count:05d}".ljust(12, "0")

    def pretrain(self, method, projector, dim, seed, online, *, best=None, dataset="imagenet",
                 backbone="resnet50", epochs=100, temperature=0.15, tags=(), batch_size=1024,
                 lr=0.3, cov=1.0, status="completed", when=None):
        rid = self._id("p")
        loss = ({"temperature": temperature} if method.startswith("simclr") else
                {"sim_coeff": 25.0, "std_coeff": 25.0, "cov_coeff": cov})
        cfg = {"method": method, "dataset": dataset, "backbone": backbone, "projector": projector,
               "dim": dim, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
               "optimizer": "lars", "weight_decay": 1e-6, "warmup_epochs": 10, "loss": loss}
        with _clock(when):
            self.store.upsert_run(run_id=rid, kind="pretrain", config=cfg, command=["t"],
                                  env={}, tags=list(tags))
        self.store.set_status(rid, "running")
        peak = online + 2.0 if best is None else best
        for epoch, value in enumerate((online - 10.0, peak, online)):  # final != best
            self.store.log_metrics(rid, (epoch + 1) * 10, {"online_top1": value,
                                                           "loss": 3.0 - epoch}, epoch=epoch)
        self.store.set_status(rid, status)
        return rid

    def evaluate(self, parent, protocol, metrics, *, series=None, status="completed",
                 dataset="imagenet", backbone="resnet50", projector="none", dim=0, **extra):
        rid = self._id("e")
        cfg = {"source_run": parent, "protocol": protocol, "dataset": dataset,
               "backbone": backbone, "random_init": parent is None, "seed": 0,
               "projector": projector, "dim": dim, "method": "random", **extra}
        if parent is not None:
            pc = self.store.get_run(parent).config
            cfg.update(projector=pc["projector"], dim=pc["dim"], dataset=pc["dataset"],
                       backbone=pc["backbone"], method=pc["method"])
        self.store.upsert_run(run_id=rid, kind="eval", config=cfg, command=["t"], env={},
                              parent_id=parent)
        self.store.set_status(rid, "running")
        self.store.log_metrics(rid, 0, metrics)
        for key, values in (series or {}).items():
            self.store.log_series(rid, key, values)
        self.store.set_status(rid, status)
        return rid

    def cka(self, run_ids, matrix, *, dataset="imagenet"):
        rid = self._id("c")
        cfg = {"protocol": "cka", "runs": run_ids, "samples": 64, "dataset": dataset,
               "labels": [f"stored-{i}" for i in range(len(run_ids))]}
        self.store.upsert_run(run_id=rid, kind="eval", config=cfg, command=["t"], env={},
                              method="cka", dataset=dataset)
        self.store.set_status(rid, "running")
        n = len(run_ids)
        self.store.log_metrics(rid, 0, {f"cka/{i}/{j}": matrix[i][j]
                                        for i in range(n) for j in range(i, n)})
        self.store.set_status(rid, "completed")
        return rid


def _analysis(lower, row4, m2_over_n, col4, m, *, n=1024):
    return {"rankme_repr": 100.0, "rankme_emb": 40.0, "n": n, "m": m,
            "lemma34_rows_lower": lower, "sum_row4_colsnormalized": row4,
            "lemma34_rows_upper": float(n * n), "lemma34_cols_lower": m2_over_n,
            "sum_col4_rowsnormalized": col4, "lemma34_cols_upper": float(m * m)}


def fill_paper_store(store: Store) -> dict[str, str]:
    """The synthetic store of these tests; returns the run ids by name."""
    b, ids = Builder(store), {}
    ids["V1"] = b.pretrain("vicreg", "8192-8192-d", 256, 0, 60.0, best=62.0)
    ids["V2"] = b.pretrain("vicreg", "8192-8192-d", 256, 1, 62.0, best=64.0)
    ids["V3"] = b.pretrain("vicreg", "8192-8192-d", 8192, 0, 67.0, cov=0.5)
    ids["E1"] = b.pretrain("vicreg-exp", "8192-8192-d", 1024, 0, 66.0)
    ids["S1"] = b.pretrain("simclr", "2048-d", 512, 0, 64.0, temperature=0.5)
    ids["S2"] = b.pretrain("simclr", "8192-8192-512", 512, 0, 68.0, batch_size=2048, lr=0.5)
    ids["S3"] = b.pretrain("simclr", "2048-d", 512, 1, 63.0, tags=["simclr-orig"])
    ids["S4"] = b.pretrain("simclr", "8192-8192-d", 8192, 0, 68.5, batch_size=2048, lr=0.5)
    ids["S5"] = b.pretrain("simclr", "2048-d", 1024, 0, 61.0)  # τ 0.15 alone: not Tuned
    ids["Q"] = b.pretrain("simclr-sq", "2048-d", 512, 0, 55.0)
    ids["C"] = b.pretrain("vicreg", "2048-d", 256, 0, 40.0, dataset="cifar10",
                          backbone="resnet18", epochs=200, tags=["sweep:small"],
                          when=dt.datetime(2024, 3, 1, 12, tzinfo=dt.timezone.utc))
    b.pretrain("vicreg", "8192-8192-d", 256, 2, 99.0, status="failed")
    b.pretrain("vicreg", "8192-8192-d", 256, 3, 99.0, status="running")
    b.evaluate(ids["V1"], "linear", {"linear_top1": 10.0})  # superseded by the next one
    for name, offline in (("V1", 60.5), ("V2", 61.5), ("V3", 67.5), ("E1", 65.5)):
        # The paper's protocol, recorded before the augmentation and standardisation were.
        b.evaluate(ids[name], "linear", {"linear_top1": offline}, linear_epochs=100,
                   batch_size=1024, lr=0.25)
    b.evaluate(ids["S2"], "linear", {"linear_top1": 67.0}, probe_augment="flip",
               probe_standardize=True)
    b.evaluate(ids["V3"], "linear", {"linear_top1": 99.0}, status="failed")
    for name, knn in (("V1", 55.0), ("V2", 56.0), ("V3", 62.0), ("S1", 58.0), ("S2", 64.0)):
        b.evaluate(ids[name], "knn", {"knn_top1": knn, "knn_k": 20.0})
    for name, value in (("V1", 50.0), ("V2", 52.0)):
        b.evaluate(ids[name], "fast-linear", {"fast_linear_top1": value})
    b.evaluate(None, "fast-linear", {"fast_linear_top1": 10.0})
    b.evaluate(ids["V3"], "analysis", _analysis(128.0, 130.0, 65536.0, 90000.0, 8192),
               series={"sv_repr": [4.0, 2.0, 1.0, 0.5], "sv_emb": [2.0, 1.0, 0.0]})
    b.evaluate(ids["S2"], "analysis", _analysis(2048.0, 2100.0, 256.0, 300.0, 512),
               series={"sv_repr": [3.0, 3.0], "sv_emb": [1.0, 0.1]})
    b.evaluate(None, "analysis", _analysis(128.0, 300.0, 65536.0, 70000.0, 8192),
               projector="8192-8192-8192", dim=8192)
    ids["CKA"] = b.cka([ids["V3"], ids["S4"], "random"],
                       [[1.0, 0.85, 0.2], [0.85, 1.0, 0.1], [0.2, 0.1, 1.0]])
    return ids


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "s.sqlite"
    with Store.open(f"sqlite:///{path}") as store:
        ids = fill_paper_store(store)
        yield store, ids


@pytest.fixture
def empty(tmp_path):
    with Store.open(f"sqlite:///{tmp_path / 'e.sqlite'}") as store:
        yield store


def _cell(frame, row, column, source="ours"):
    key = (source, *row) if "source" in frame.index.names else row
    return {s: frame.loc[key, (column, s)] for s in ("mean", "std", "n")}


ROW = ("imagenet", "resnet50", 100)
PAPER = ("ImageNet-1k", "ResNet-50", 100)
DELTA = "Δ ours − paper"


def _rows(frame, source):
    return [k[1:] for k in frame.index if k[0] == source]


# ------------------------------------------------------------------------------ table-s5

def test_table_s5_cells_against_hand_computed_numbers(paper):
    store, _ = paper
    frame = build_report("table-s5", store).frame
    assert list(frame.index.names) == ["source", "dataset", "backbone", "epochs", "method",
                                       "projector"]
    vic = _cell(frame, (*ROW, "VICReg", "8192-8192-d"), 256)
    assert (vic["mean"], vic["n"]) == (61.0, 2)  # failed / running: out
    assert vic["std"] == pytest.approx(statistics.stdev([60.0, 62.0]))
    assert _cell(frame, (*PAPER, "VICReg", "8192-8192-d"), 256, "paper")["mean"] == 65.01
    assert _cell(frame, (*ROW, "VICReg", "8192-8192-d"), 256, DELTA)["mean"] == pytest.approx(
        61.0 - 65.01)
    # 8192-8192-d at d = 8192 is d-d-d: the run fills both rows, as in the paper.
    for family in ("8192-8192-d", "d-d-d"):
        assert _cell(frame, (*ROW, "VICReg", family), 8192)["mean"] == 67.0
        assert _cell(frame, (*ROW, "VICReg", family), 8192, DELTA)["mean"] == pytest.approx(
            67.0 - 68.13)
    orig = _cell(frame, (*ROW, "SimCLR-Orig", "2048-d"), 512)  # the simclr-orig tag only
    assert (orig["mean"], orig["n"]) == (63.0, 1)
    assert _cell(frame, (*ROW, "SimCLR τ=0.5", "2048-d"), 512)["mean"] == 64.0
    tuned = _cell(frame, (*ROW, "SimCLR-Tuned", "8192-8192-d"), 512)  # literal 8192-8192-512
    assert (tuned["mean"], tuned["n"]) == (68.0, 1)
    assert _cell(frame, (*ROW, "SimCLR-Tuned", "8192-8192-d"), 512, DELTA)["mean"] == (
        pytest.approx(68.0 - 68.61))
    # τ = 0.15 with batch 1024 and lr 0.3 is not the tuned recipe: no paper name, no Δ.
    assert _cell(frame, (*ROW, "SimCLR τ=0.15", "2048-d"), 1024)["mean"] == 61.0
    assert (*ROW, "SimCLR τ=0.15", "2048-d") not in _rows(frame, DELTA)
    assert (*ROW, "SimCLR-sq", "2048-d") not in _rows(frame, DELTA)
    missing = _cell(frame, (*ROW, "VICReg-ctr", "2048-d"), 2048)  # complete: listed, empty
    assert missing["n"] == 0
    # The cifar10 runs are not in the paper's setting: no Δ, and no grid filled in for them.
    assert [r for r in _rows(frame, "ours") if r[0] == "cifar10"] == [
        ("cifar10", "resnet18", 200, "VICReg", "2048-d")]
    assert not [r for r in _rows(frame, DELTA) if r[0] == "cifar10"]
    assert set(r[:3] for r in _rows(frame, "paper")) == {PAPER}
    assert len(_rows(frame, "paper")) == 20
    assert len(_rows(frame, "ours")) == 20 + 3 + 1  # the grid, τ 0.5, τ 0.15, sq; cifar10
    assert sorted(_rows(frame, DELTA)) == sorted([
        (*ROW, "VICReg", "d-d-d"), (*ROW, "VICReg", "8192-8192-d"),
        (*ROW, "VICReg-exp", "8192-8192-d"), (*ROW, "SimCLR-Orig", "2048-d"),
        (*ROW, "SimCLR-Tuned", "d-d-d"), (*ROW, "SimCLR-Tuned", "8192-8192-d")])


def test_table_s5_published_rows_equal_the_paper(paper):
    from sslbench.report.published import table_s5

    frame = build_report("table-s5", paper[0]).frame
    for (method, family, dim), value in table_s5().items():
        assert frame.loc[("paper", *PAPER, method, family), (dim, "mean")] == value


def test_table_s5_select_best_and_caption(paper):
    store, _ = paper
    report = build_report("table-s5", store, select="best")
    assert _cell(report.frame, (*ROW, "VICReg", "8192-8192-d"), 256)["mean"] == 63.0
    assert "best value over the epochs" in report.caption
    final = build_report("table-s5", store)
    for text in ("value at the final epoch", "Ours: cifar10, resnet18, 200 epochs; imagenet, "
                 "resnet50, 100 epochs", "Paper (Table S5): ImageNet-1k, ResNet-50, 100 epochs",
                 "in rows of its own", "Δ = ours − paper where our setting is the paper's",
                 "SimCLR-Tuned: simclr with Table S6's whole recipe (τ 0.15, batch 2048",
                 "Quoted by the paper (100 epochs): SimCLR 64.7 (Chen et al. 2020a, originally "
                 "reported); SimCLR 66.8", "VICReg 55.9 at d = 256"):
        assert text in final.caption
    deltas = final.frame.loc[DELTA].xs("mean", axis=1, level="stat").to_numpy().ravel()
    compared = int((~np.isnan(deltas)).sum())
    assert final.notes["agreement"]["compared"] == compared == 8
    within = int((np.abs(deltas[~np.isnan(deltas)]) <= 1.0).sum())
    assert f"{compared} comparable cells: {within} within ±1 points" in final.caption


GOLDEN_S5_MARKDOWN = """\
**Table S5: online top-1 (%) by method, projector and embedding dim**

*ours: cifar10, resnet18, 200 epochs*

| method | projector | 256 |
| --- | --- | ---: |
| VICReg | 2048-d | 40.00 |

*paper: ImageNet-1k, ResNet-50, 100 epochs*

| method | projector | 256 | 512 | 1024 | 2048 | 8192 |
| --- | --- | ---: | ---: | ---: | ---: | ---: |
| VICReg | d-d-d | 61.36 | 63.50 | 65.35 | 66.74 | 68.13 |
"""

GOLDEN_S5_LATEX = r"""\par\emph{ours: cifar10, resnet18, 200 epochs}

\begin{tabular}{llr}
\toprule
method & projector & 256 \\
\midrule
VICReg & 2048-d & 40.00 \\
\bottomrule
\end{tabular}
\medskip
\par\emph{paper: ImageNet-1k, ResNet-50, 100 epochs}
"""


def test_table_s5_golden_outputs_with_a_sweep_filter(paper):
    report = build_report("table-s5", paper[0], filters=ReportFilters(sweep="small"),
                          complete=False)
    markdown = write_report(report, "markdown")
    assert markdown.startswith(GOLDEN_S5_MARKDOWN)
    assert GOLDEN_S5_LATEX in write_report(report, "latex")
    csv_lines = write_report(report, "csv").splitlines()
    assert csv_lines[:3] == [
        "source,dataset,backbone,epochs,method,projector,dim,mean,std,n",
        "ours,cifar10,resnet18,200,VICReg,2048-d,256,40.0,,1",
        "paper,ImageNet-1k,ResNet-50,100,VICReg,d-d-d,256,61.36,,1"]
    assert len(csv_lines) == 1 + 1 + 100 and not any(DELTA in line for line in csv_lines)
    assert ("No Δ: none of our settings (cifar10, resnet18, 200 epochs) is the paper's "
            "(ImageNet-1k, ResNet-50, 100 epochs)") in report.caption
    data = json.loads(write_report(report, "json"))
    assert data["report"] == "table-s5" and data["notes"]["filters"] == "sweep small"
    assert data["rows"][0] == {"source": "ours", "dataset": "cifar10", "backbone": "resnet18",
                               "epochs": 200, "method": "VICReg", "projector": "2048-d",
                               "dim": 256, "mean": 40.0, "std": None, "n": 1}


@pytest.mark.parametrize(("filters", "settings"), [
    (ReportFilters(dataset="cifar10"), {("cifar10", 200)}),
    (ReportFilters(backbone="resnet50"), {("imagenet", 100)}),
    (ReportFilters(epochs=100), {("imagenet", 100)}),
    (ReportFilters(tag="sweep:small"), {("cifar10", 200)}),
    (ReportFilters(since=dt.date(2024, 1, 1), until=dt.date(2024, 12, 31)), {("cifar10", 200)}),
    (ReportFilters(until=dt.date(2024, 2, 29)), None),
])
def test_filters_select_runs(paper, filters, settings):
    if settings is None:
        with pytest.raises(EmptyReportError, match="until 2024-02-29"):
            build_report("table-s5", paper[0], filters=filters)
        return
    frame = build_report("table-s5", paper[0], filters=filters, complete=False).frame
    assert {(r[0], r[2]) for r in _rows(frame, "ours")} == settings


# ---------------------------------------------------------------------- fig1 / knn / dims

def test_fig1_and_fig_s6_frames_are_the_table(paper):
    store, _ = paper
    table = build_report("table-s5", store).frame
    s6 = build_report("fig-s6", store)
    assert s6.figure is not None and s6.frame.equals(table) and s6.title.startswith(
        "Figure S6")
    fig1 = build_report("fig1", store)
    assert fig1.figure is not None and fig1.title.startswith("Figure 1")
    families = fig1.frame.index.get_level_values("projector")
    assert "2048-2048-d" not in set(families)
    assert fig1.frame.equals(table[table.index.get_level_values("projector") != "2048-2048-d"])


def test_knn_cells_and_the_tuned_orig_gap(paper):
    report = build_report("knn", paper[0])
    frame = report.frame
    assert "source" not in frame.index.names  # the paper prints no k-NN values
    cell = _cell(frame, (*ROW, "VICReg", "8192-8192-d"), 256)
    assert cell["mean"] == 55.5 and cell["n"] == 2
    assert _cell(frame, (*ROW, "SimCLR τ=0.5", "2048-d"), 512)["mean"] == 58.0
    assert (*ROW, "SimCLR-Orig", "2048-d") not in frame.index  # S3 has no k-NN
    assert report.notes["tuned_minus_orig"] is None
    assert "by 5.5 points" in report.caption and "has no run" in report.caption
    # A random-init k-NN evaluation would be its reference line; there is none here.
    assert "Dotted line" not in report.caption


def test_dims_report_default_metric_and_paper_values(paper):
    store, _ = paper
    fast = build_report("dims", store, filters=ReportFilters(dataset="imagenet"))
    assert fast.notes["metric"] == "fast_linear_top1"
    assert list(fast.frame.index.names) == ["dataset", "backbone", "epochs", "method",
                                            "projector"]  # no paper value: no source level
    row = (*ROW, "VICReg", "8192-8192-d")
    assert fast.frame.loc[row, (256, "mean")] == 51.0
    assert fast.frame.loc[(*ROW, "random init", "-"), (256, "mean")] == 10.0
    online = build_report("dims", store, metric="online_top1",
                          filters=ReportFilters(dataset="imagenet"))
    frame = online.frame
    assert frame.loc[("paper", *PAPER, "VICReg", "8192-8192-d"), (256, "mean")] == 65.01
    assert frame.loc[(DELTA, *row), (256, "mean")] == pytest.approx(61.0 - 65.01)
    assert frame.loc[("paper", *PAPER, "SimCLR-Orig", "2048-d"), (512, "mean")] == 64.69
    labels = set(frame.index.get_level_values("method"))
    assert {"SimCLR τ=0.5", "SimCLR-Orig", "SimCLR-Tuned"} <= labels
    assert "simclr" not in labels and "vicreg" not in labels  # the paper's labels
    # A row without a paper name has no paper row to be compared with.
    assert (DELTA, *ROW, "SimCLR τ=0.5", "2048-d") not in frame.index
    assert "Paper (Table S5)" in online.caption


def test_dims_runs_without_a_paper_name_get_no_paper_row(empty):
    b = Builder(empty)
    b.pretrain("simclr", "2048-d", 512, 0, 60.0, temperature=0.15)
    b.pretrain("simclr", "2048-d", 512, 1, 61.0, temperature=0.5)
    b.pretrain("vicreg", "2048-d", 512, 0, 62.0)
    frame = build_report("dims", empty, metric="online_top1").frame
    assert set(_rows(frame, "paper")) == {(*PAPER, "VICReg", "2048-d")}
    assert frame.loc[("paper", *PAPER, "VICReg", "2048-d"), (512, "mean")] == 64.51
    assert _rows(frame, DELTA) == [(*ROW, "VICReg", "2048-d")]
    assert frame.loc[("ours", *ROW, "SimCLR τ=0.15", "2048-d"), (512, "mean")] == 60.0


# -------------------------------------------------------------------------- table-s2-s3

def test_table_s2_s3_pairs_and_regression(paper):
    report = build_report("table-s2-s3", paper[0], filters=ReportFilters(dataset="imagenet"))
    frame = report.frame
    key = (*ROW, "VICReg", "8192-8192-d")
    online, offline = _cell(frame, (*key, "online"), 256), _cell(frame, (*key, "offline"), 256)
    assert (online["mean"], online["n"]) == (61.0, 2)
    assert (offline["mean"], offline["n"]) == (61.0, 2)
    assert offline["std"] == pytest.approx(1 / SQRT2)  # 60.5 and 61.5: the superseded 10.0 out
    assert _cell(frame, (*key, "offline"), 8192)["mean"] == 67.5  # the failed 99.0 is ignored
    assert _cell(frame, (*PAPER, "VICReg", "8192-8192-d", "offline"), 256, "paper")[
        "mean"] == 65.11
    assert _cell(frame, (*key, "offline"), 256, DELTA)["mean"] == pytest.approx(61.0 - 65.11)
    assert _cell(frame, (*key, "online"), 256, DELTA)["mean"] == pytest.approx(61.0 - 65.01)
    assert (*ROW, "SimCLR-Orig", "2048-d", "online") not in _rows(frame, "ours")
    # One point per (method, projector spec, dim), means over seeds.
    x, y = [61.0, 67.0, 66.0, 68.0], [61.0, 67.5, 65.5, 67.0]
    slope, intercept = np.polyfit(x, y, 1)
    fit = report.notes["regression"]["ours"]
    assert fit["points"] == 4 and fit["slope"] == pytest.approx(slope)
    assert fit["intercept"] == pytest.approx(intercept)
    assert fit["r2"] == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2)
    assert report.notes["regression"]["paper_stated"] == {"slope": 0.97, "intercept": 2.1,
                                                          "r2": 1.0}
    assert f"slope {slope:.3f}" in report.caption
    # The SimCLR-Tuned run's probe (flip, standardised, epochs not recorded) is not the
    # paper's; the VICReg ones' are. The caption names every difference.
    probe = ("epochs 100, not recorded (mixed); batch 1024, not recorded (mixed); base lr "
             "0.25, not recorded (mixed); training images crop-flip, flip (mixed); "
             "representations not standardised, standardised (mixed)")
    assert report.notes["probe"] == probe and f"({probe})" in report.caption
    assert report.notes["probe_differences"] == [
        "epochs 100, not recorded (paper 100)", "batch 1024, not recorded (paper 1024)",
        "training images crop-flip, flip (paper crop-flip)",
        "representations not standardised, standardised (paper not standardised)"]
    assert (*ROW, "SimCLR-Tuned", "8192-8192-d", "offline") not in _rows(frame, DELTA)
    dims = build_report("dims", paper[0], metric="linear_top1",
                        filters=ReportFilters(dataset="imagenet"))
    assert probe in dims.caption


def test_table_s2_s3_offline_probe_unlike_the_papers_gets_no_delta(empty):
    b = Builder(empty)
    run = b.pretrain("vicreg", "8192-8192-d", 512, 0, 66.0)
    b.evaluate(run, "linear", {"linear_top1": 60.0}, linear_epochs=3, batch_size=256, lr=0.25,
               probe_augment="flip", probe_standardize=True)
    report = build_report("table-s2-s3", empty)
    key = (*ROW, "VICReg", "8192-8192-d")
    assert _rows(report.frame, DELTA) == [(*key, "online")]
    assert _cell(report.frame, (*key, "online"), 512, DELTA)["mean"] == pytest.approx(
        66.0 - 66.72)
    for text in ("Our offline probes differ from the paper's in: epochs 3 (paper 100); batch "
                 "256 (paper 1024); training images flip (paper crop-flip); representations "
                 "standardised (paper not standardised)",
                 "(epochs 3; batch 256; base lr 0.25; training images flip; representations "
                 "standardised)", "offline probe 100 epochs, batch 1024"):
        assert text in report.caption


def test_probe_text():
    from sslbench.report.query import probe_text

    cells = pd.DataFrame({"eval.probe_augment": ["flip", "flip"],
                          "eval.probe_standardize": [True, 1.0]})
    assert probe_text(cells, "linear_top1") == "training images flip; representations standardised"
    assert probe_text(cells, "fast_linear_top1") == ("training images flip; "
                                                     "representations standardised")
    assert probe_text(cells, "knn_top1") == ""
    crops = cells.assign(**{"eval.probe_augment": ["crop-flip", "flip"]})
    assert probe_text(crops, "fast_linear_top1").startswith("training images flip;")
    assert probe_text(crops, "linear_top1").startswith("training images crop-flip, flip (mixed)")
    old = pd.DataFrame({"eval.probe_augment": [None, "none"],
                        "eval.probe_standardize": [False, np.nan]})
    assert probe_text(old, "fast_linear_top1") == ("training images none; representations "
                                                   "not standardised, standardised (mixed)")
    assert probe_text(old, "linear_top1") == ("training images crop-flip, none (mixed); "
                                              "representations not standardised")
    epochs = cells.assign(**{"eval.linear_epochs": [3, 3.0], "eval.batch_size": [256, 256]})
    assert probe_text(epochs, "linear_top1").startswith("epochs 3; batch 256; training images")


def test_table_s2_s3_published_rows_equal_the_paper(paper):
    from sslbench.report.published import table_s2_s3

    frame = build_report("table-s2-s3", paper[0]).frame
    for (method, family, dim, probe), value in table_s2_s3().items():
        assert frame.loc[("paper", *PAPER, method, family, probe), (dim, "mean")] == value


# ----------------------------------------------------------------------------- table-s4

def test_table_s4_rows_and_paper_values(paper):
    report = build_report("table-s4", paper[0])
    frame = report.frame
    vic = (*ROW, "VICReg", "8192-8192-8192")
    assert _cell(frame, vic, "sum_row4_colsnormalized")["mean"] == 130.0
    printed = (*PAPER, "VICReg", "8192-8192-8192")
    assert _cell(frame, printed, "sum_row4_colsnormalized", "paper")["mean"] == 128.19
    assert _cell(frame, printed, "n2", "paper")["mean"] == 1024.0 ** 2  # "1M" given exactly
    assert _cell(frame, printed, "sum_col4_rowsnormalized", "paper")["mean"] == 83_000
    assert _cell(frame, printed, "ratio_rows", "paper")["mean"] == pytest.approx(83_000 / 65_536)
    assert _cell(frame, vic, "ratio_cols")["mean"] == pytest.approx(130.0 / 128.0)
    assert _cell(frame, vic, "sum_row4_colsnormalized", DELTA)["mean"] == pytest.approx(
        130.0 - 128.19)
    assert math.isnan(_cell(frame, vic, "n2", DELTA)["mean"])  # a bound: equal by construction
    # The random network sits with the trained ones of its dataset and backbone, as in the
    # paper, never with "0 epochs".
    random = (*ROW, "Random", "8192-8192-8192")
    assert _cell(frame, random, "sum_row4_colsnormalized")["mean"] == 300.0
    assert _cell(frame, (*PAPER, "Random", "8192-8192-8192"), "sum_row4_colsnormalized",
                 "paper")["mean"] == 361.34
    assert 0 not in set(frame.index.get_level_values("epochs"))
    simclr = (*ROW, "SimCLR-Tuned", "8192-8192-512")  # compared with the paper's SimCLR row
    assert _cell(frame, simclr, "sum_col4_rowsnormalized", DELTA)["mean"] == pytest.approx(
        300.0 - 433.54)
    assert _cell(frame, (*ROW, "VICReg-ctr", "8192-8192-512"), "sum_row4_colsnormalized")[
        "n"] == 0  # a paper row no run has
    assert list(dict.fromkeys(frame.columns.get_level_values(0)))[:3] == [
        "n2_over_m", "sum_row4_colsnormalized", "n2"]
    summary = report.notes["agreement"]
    assert summary["compared"] == 3 * 2  # the two ratios of the three comparable rows
    assert report.headers["n2_over_m"] == "N²/M"
    assert "N²/M" in write_report(report, "markdown")


# ---------------------------------------------------------------------- spectra and cka

def test_spectra_frame(paper):
    report = build_report("spectra", paper[0])
    assert list(report.frame.index.names) == ["dataset", "backbone", "epochs", "method",
                                              "projector", "dim", "space", "index"]
    frame = report.frame.reset_index()
    v3 = frame[(frame["method"] == "VICReg") & (frame["space"] == "repr")]
    assert v3["index"].tolist() == [0, 1, 2, 3]
    assert v3["mean"].to_numpy() == pytest.approx(np.log([1.0, 0.5, 0.25, 0.125]))
    emb = frame[(frame["method"] == "VICReg") & (frame["space"] == "emb")]
    assert emb["index"].tolist() == [0, 1]  # sigma = 0 has no logarithm
    assert set(frame["method"]) == {"VICReg", "SimCLR-Tuned"}  # the Random one has no series
    dims = build_report("spectra", paper[0], dim=512).frame.index.get_level_values("dim")
    assert set(dims) == {512}
    with pytest.raises(EmptyReportError, match="embedding dim 64"):
        build_report("spectra", paper[0], dim=64)


def test_cka_matrix_labels_and_paper(paper):
    store, ids = paper
    report = build_report("cka", store)
    frame = report.frame
    names = ["VICReg-8192", "SimCLR-8192", "Random"]
    assert [k[-1] for k in frame.index if k[0] == "ours"] == names
    ours = (*ROW,)
    assert frame.loc[("ours", *ours, "VICReg-8192"), ("SimCLR-8192", "mean")] == 0.85
    assert frame.loc[("ours", *ours, "SimCLR-8192"), ("VICReg-8192", "mean")] == 0.85
    assert frame.loc[("paper", *PAPER, "VICReg-8192"), ("SimCLR-8192", "mean")] == 0.89
    assert frame.loc[(DELTA, *ours, "Random"), ("VICReg-8192", "mean")] == pytest.approx(
        0.2 - 0.15)
    # The diagonal is 1 on both sides by definition: never counted as agreement.
    summary = report.notes["agreement"]
    assert (summary["compared"], summary["trivial"]) == (6, 3)
    off = [abs(0.85 - 0.89), abs(0.2 - 0.15), abs(0.1 - 0.14)] * 2
    assert summary["within"] == sum(d <= 0.05 + 1e-12 for d in off)
    assert summary["max_abs_delta"] == pytest.approx(max(off))
    assert "6 comparable cells (3 trivial cells left out: the diagonal, 1 by definition)" in (
        report.caption)
    assert report.notes["cka_run"] == ids["CKA"]
    assert build_report("cka", store, run_id=ids["CKA"][:6]).notes["cka_run"] == ids["CKA"]
    with pytest.raises(SSLBenchError, match="no single completed CKA"):
        build_report("cka", store, run_id="zzzz")
    with pytest.raises(EmptyReportError, match="sslbench compare"):
        build_report("cka", store, filters=ReportFilters(dataset="cifar10"))


def test_cka_diagonal_alone_is_never_an_agreement(empty):
    """The issue's case: only Random has a Figure S2 name, so the one cell both matrices
    have is Random / Random, 1 on both sides by definition."""
    b = Builder(empty)
    run = b.pretrain("simclr", "2048-d", 64, 0, 50.0)  # SimCLR τ=0.15 d=64: not in Figure S2
    b.cka([run, "random"], [[1.0, 0.3], [0.3, 1.0]])
    report = build_report("cka", empty)
    summary = report.notes["agreement"]
    assert (summary["compared"], summary["within"], summary["trivial"]) == (0, 0, 1)
    assert "within" not in report.caption
    assert report.caption.endswith("No Δ: no pair of our networks is a pair Figure S2 names "
                                   "(VICReg-1024, SimCLR-2048, ...). The only cells both have "
                                   "are trivial (1: the diagonal, 1 by definition).")


def test_cka_outside_the_papers_setting_has_no_delta(empty):
    b = Builder(empty)
    first = b.pretrain("vicreg", "2048-d", 1024, 0, 50.0, dataset="shapes", backbone="tiny",
                       epochs=5)
    second = b.pretrain("simclr", "2048-d", 1024, 0, 50.0, dataset="shapes", backbone="tiny",
                        epochs=5)
    b.cka([first, second, "random"], [[1.0, 0.5, 0.1], [0.5, 1.0, 0.2], [0.1, 0.2, 1.0]],
          dataset="shapes")
    report = build_report("cka", empty)
    assert DELTA not in set(report.frame.index.get_level_values("source"))
    assert report.notes["agreement"]["compared"] == 0
    assert ("No Δ: the comparison (shapes, tiny, 5 epochs) is not in the paper's setting"
            in report.caption)
    assert [k[-1] for k in report.frame.index if k[0] == "ours"] == [
        "VICReg-1024", "SimCLR τ=0.15 d=1024", "Random"]


# ------------------------------------------------------------------------------ hparams

def test_hparams_against_table_s6(paper):
    frame = build_report("hparams", paper[0], filters=ReportFilters(dataset="imagenet")).frame
    assert list(frame.index.names) == ["source", "dataset", "backbone", "epochs", "method",
                                       "dim"]
    rows = {k[4:]: r for k, r in zip(frame.index, frame.to_dict("records")) if k[0] == "ours"}
    vic = rows[("VICReg", "256")]
    assert (vic["runs"], vic["cov"], vic["matches"]) == (2, "1", "VICReg: differs in Cov. ν")
    assert frame.loc[("paper", *PAPER, "VICReg", "256"), "cov"] == "4"
    assert rows[("VICReg", "8192")]["matches"] == "VICReg: same"
    tuned = rows[("SimCLR-Tuned", "512")]
    assert (tuned["batch_size"], tuned["base_lr"], tuned["tau"], tuned["matches"]) == (
        "2048", "0.5", "0.15", "SimCLR-Tuned: same")
    assert rows[("SimCLR-Orig", "512")]["matches"] == "no Table S6 row"
    # Why a simclr run is not SimCLR-Tuned, in its own row.
    assert rows[("SimCLR τ=0.5", "512")]["matches"] == (
        "SimCLR-Tuned: differs in batch, base lr, τ")
    assert rows[("SimCLR τ=0.15", "1024")]["matches"] == "SimCLR-Tuned: differs in batch, base lr"
    assert len([k for k in frame.index if k[0] == "paper"]) == 9  # all of Table S6
    assert frame.loc[("paper", *PAPER, "VICReg-exp", "≠ 8192"), "base_lr"] == "0.5"
    assert str(frame["runs"].dtype) == "Int64"


# ------------------------------------------------------------------------- registry, errors

def test_every_report_is_registered_with_its_options():
    assert list(REPORTS)[:15] == ["dims", "table-s5", "fig1", "fig-s6", "table-s2-s3",
                                  "table-s4", "cka", "knn", "spectra", "fig2", "fig-s3",
                                  "fig-s4", "fig-s7", "fig-s8", "hparams"]
    assert report_options("table-s5") == ["complete"]
    assert report_options("dims") == ["metric", "dataset", "methods"]


@pytest.mark.parametrize("name", list(REPORTS))
def test_empty_store_gives_one_line_naming_a_command(empty, name):
    with pytest.raises(EmptyReportError) as info:
        build_report(name, empty)
    message = str(info.value)
    assert "\n" not in message and "`sslbench " in message


def test_build_report_rejects_bad_input(paper):
    store, _ = paper
    with pytest.raises(ConfigError, match="unknown report 'table-s9'.*table-s5"):
        build_report("table-s9", store)
    with pytest.raises(ConfigError, match="--select 'last'"):
        build_report("table-s5", store, select="last")
    with pytest.raises(ConfigError, match="report table-s5 has no option 'metric'"):
        build_report("table-s5", store, metric="knn_top1")
    assert build_report("table-s5", store, complete=None).name == "table-s5"  # None: not given


def test_eval_reports_say_which_evaluation_is_missing(empty):
    Builder(empty).pretrain("vicreg", "2048-d", 256, 0, 50.0)
    with pytest.raises(EmptyReportError, match="--protocol knn"):
        build_report("knn", empty)
    with pytest.raises(EmptyReportError, match="--protocol linear"):
        build_report("table-s2-s3", empty)
    with pytest.raises(EmptyReportError, match="--protocol analysis"):
        build_report("table-s4", empty)
    frame = build_report("table-s5", empty, complete=False).frame
    assert (_rows(frame, "ours"), _rows(frame, DELTA)) == ([(*ROW, "VICReg", "2048-d")],) * 2


# ------------------------------------------------------------------------------- formats

@pytest.mark.parametrize("name", ["table-s5", "table-s2-s3", "table-s4", "cka", "knn", "hparams",
                                  "spectra"])
def test_csv_and_json_round_trip(paper, name):
    report = build_report(name, paper[0])
    expected = pd.DataFrame(records(report.frame))
    back = pd.read_csv(io.StringIO(write_report(report, "csv")), keep_default_na=False,
                       na_values=[""])
    assert list(back.columns) == list(expected.columns) and len(back) == len(expected)
    for column in expected.columns:
        if pd.api.types.is_numeric_dtype(back[column]):
            left = pd.to_numeric(expected[column], errors="coerce").to_numpy(float)
            assert np.allclose(back[column].to_numpy(float), left, equal_nan=True)
        else:
            assert back[column].astype(str).tolist() == expected[column].astype(str).tolist()
    data = json.loads(write_report(report, "json"))
    assert set(data) == {"report", "title", "caption", "notes", "rows"}
    assert data["report"] == name and data["title"] == report.title
    pd.testing.assert_frame_equal(pd.DataFrame(data["rows"]), expected, check_dtype=False)


@pytest.mark.parametrize("name", ["table-s5", "table-s2-s3", "table-s4", "cka", "hparams"])
def test_latex_structure(paper, name):
    text = write_report(build_report(name, paper[0]), "latex")
    assert text.startswith(r"\begin{table}") and text.rstrip().endswith(r"\end{table}")
    tabulars = re.findall(r"\\begin\{tabular\}\{([lr]+)\}(.*?)\\end\{tabular\}", text, re.S)
    assert len(tabulars) == text.count(r"\emph{") >= 2  # one per panel, each headed
    for spec, body in tabulars:
        for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
            assert body.count(rule) == 1
        assert body.index(r"\toprule") < body.index(r"\midrule") < body.index(r"\bottomrule")
        for line in body.splitlines():
            if line.endswith(r"\\"):
                assert line.count("&") + 1 == len(spec), line
    depth = 0
    for ch in re.sub(r"\\[{}%&$#_]", "", text):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    assert text.isascii(), sorted({ch for ch in text if not ch.isascii()})


def test_reports_and_store_never_import_torch(tmp_path):
    assert_imports_none_of(
        "from sslbench.db import Store\n"
        "from sslbench.report import build_report, write_report, REPORTS\n"
        f"store = Store.open({str(tmp_path / 's.sqlite')!r})\n"
        "for name in REPORTS:\n"
        "    try:\n"
        "        build_report(name, store)\n"
        "    except Exception:\n"
        "        pass", "torch", "matplotlib", timeout=120)
