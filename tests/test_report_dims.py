"""The dims report on a small synthetic store built through the Store API: cell values against
hand-computed numbers, and golden outputs in every format."""

from __future__ import annotations

import json
import statistics

import pytest

from sslbench.db import Store
from sslbench.errors import SSLBenchError
from sslbench.report import (
    EmptyReportError,
    dims_frame,
    dims_report,
    render,
    run_show_json,
    runs_list_frame,
    runs_list_json,
)
from sslbench.report.dims import embedding_dim


class _Builder:
    """Records runs the way training and evaluation do (upsert, running, metrics, status)."""

    def __init__(self, store: Store) -> None:
        self.store, self.count = store, 0

    def _id(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count:04d}".ljust(12, "0")

    def pretrain(self, method, projector, dim, seed, online, *, dataset="shapes",
                 status="completed", lr=0.3):
        rid = self._id("p")
        cfg = {"method": method, "dataset": dataset, "backbone": "small", "projector": projector,
               "dim": dim, "epochs": 3, "batch_size": 64, "lr": lr, "seed": seed}
        self.store.upsert_run(run_id=rid, kind="pretrain", config=cfg, command=["t"], env={})
        self.store.set_status(rid, "running")
        for epoch, value in enumerate((online - 10, online + 5, online)):  # final != best
            self.store.log_metrics(rid, epoch * 10, {"online_top1": value, "loss": 3.0 - epoch},
                                   epoch=epoch)
        self.store.set_status(rid, status)
        return rid

    def evaluate(self, parent, linear, *, seed=0, dataset="shapes", status="completed",
                 method=None):
        rid = self._id("e")
        random = parent is None
        cfg = {"source_run": parent, "method": method or ("random" if random else "?"),
               "dataset": dataset, "backbone": "small", "protocol": "linear+knn",
               "random_init": random, "seed": seed}
        if not random:
            cfg["method"] = self.store.get_run(parent).method
        self.store.upsert_run(run_id=rid, kind="eval", config=cfg, command=["t"], env={},
                              parent_id=parent)
        self.store.set_status(rid, "running")
        self.store.log_metrics(rid, 0, {"linear_top1": linear, "knn_top1": linear - 4.0})
        self.store.set_status(rid, status)
        return rid


@pytest.fixture
def store(tmp_path):
    with Store.open(f"sqlite:///{tmp_path / 's.sqlite'}") as opened:
        yield opened


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """One store for the module: the tests only read it, and filling it costs a second or two."""
    with Store.open(f"sqlite:///{tmp_path_factory.mktemp('dims') / 's.sqlite'}") as store:
        yield _fill(store)


def _fill(store: Store) -> Store:
    b = _Builder(store)
    b.evaluate(b.pretrain("simclr", "2048-d", 64, 0, 50.0), 52.0)
    b.evaluate(b.pretrain("simclr", "2048-d", 64, 1, 51.0), 53.0)
    b.evaluate(b.pretrain("simclr", "2048-d", 128, 0, 55.0), 56.5)
    b.evaluate(b.pretrain("vicreg", "2048-d", 64, 0, 60.0), 61.25)
    twice = b.pretrain("vicreg", "2048-d", 128, 0, 62.0)
    b.evaluate(twice, 10.0, seed=0)           # older evaluation: superseded
    b.evaluate(twice, 63.0, seed=1)           # latest completed evaluation: used
    b.evaluate(twice, 99.0, seed=2, status="failed")  # not completed: ignored
    b.evaluate(b.pretrain("vicreg", "2048-d", 128, 1, 70.0, status="failed"), 99.0)
    b.pretrain("vicreg", "2048-d", 256, 0, 80.0, status="running")
    b.evaluate(b.pretrain("vicreg", "8192-8192-d", 64, 0, 65.0), 66.0)
    b.pretrain("simclr", "2048-d", 128, 5, 54.0)  # completed, never evaluated
    b.evaluate(b.pretrain("simclr", "2048-d", 64, 0, 30.0, dataset="cifar10"), 31.0,
               dataset="cifar10")
    b.evaluate(None, 20.0, seed=0)
    b.evaluate(None, 21.0, seed=1)
    b.evaluate(None, 99.0, seed=2, status="killed")
    return store


def _cell(frame, row, dim):
    key = ("ours", *row) if "source" in frame.index.names else row
    return tuple(frame.loc[key, (dim, stat)] for stat in ("mean", "std", "n"))


SETTING = ("shapes", "small", 3)


def test_cell_values_against_hand_computed_numbers(filled):
    frame = dims_frame(filled, metric="linear_top1", dataset="shapes")
    assert list(frame.index.names) == ["source", "dataset", "backbone", "epochs", "method",
                                       "projector"]
    ours = frame.loc["ours"]
    assert list(dict.fromkeys(c for c in ours.columns.get_level_values("dim")
                              if (ours[(c, "n")] > 0).any())) == [64, 128]  # 256: running
    simclr = (*SETTING, "SimCLR", "2048-d")  # the paper's label, not the registry's "simclr"
    mean, std, n = _cell(frame, simclr, 64)
    assert (mean, n) == (52.5, 2) and std == pytest.approx(statistics.stdev([52.0, 53.0]))
    assert _cell(frame, simclr, 128)[::2] == (56.5, 1)  # seed 5 has no evaluation
    assert _cell(frame, (*SETTING, "VICReg", "2048-d"), 128)[::2] == (63.0, 1)
    wide = (*SETTING, "VICReg", "8192-8192-d")
    assert _cell(frame, wide, 64)[::2] == (66.0, 1) and _cell(frame, wide, 128)[2] == 0
    baseline = (*SETTING, "random init", "-")
    for dim in (64, 128):
        mean, std, n = _cell(frame, baseline, dim)
        assert (mean, n) == (20.5, 2) and std == pytest.approx(statistics.stdev([20.0, 21.0]))
    assert list(ours.index)[-1] == baseline
    # VICReg 8192-8192-d is a row of Table S2: the paper's row follows as a reference, with
    # no Δ (shapes is not ImageNet).
    paper = frame.loc["paper"]
    assert list(paper.index) == [("ImageNet-1k", "ResNet-50", 100, "VICReg", "8192-8192-d")]
    assert paper.iloc[0][(256, "mean")] == 65.11
    assert "Δ ours − paper" not in frame.index.get_level_values("source")


def test_online_metric_uses_final_not_best(filled):
    frame = dims_frame(filled, metric="online_top1", dataset="shapes")
    assert _cell(frame, (*SETTING, "SimCLR", "2048-d"), 64)[::2] == (50.5, 2)
    assert _cell(frame, (*SETTING, "SimCLR", "2048-d"), 128)[::2] == (54.5, 2)
    assert "random init" not in frame.index.get_level_values("method")  # no online probe


def test_filters_and_method_order(filled):
    both = dims_frame(filled, metric="linear_top1")
    assert set(both.loc["ours"].index.get_level_values("dataset")) == {"cifar10", "shapes"}
    only = dims_frame(filled, metric="linear_top1", dataset="shapes",
                      methods=("vicreg", "simclr"))
    assert list(only.loc["ours"].index.get_level_values("method")) == [
        "VICReg", "VICReg", "SimCLR", "random init"]
    simclr = dims_frame(filled, metric="linear_top1", methods=("simclr",))
    assert set(simclr.index.get_level_values("method")) == {"SimCLR", "random init"}


def test_empty_store_says_what_to_run(store):
    with pytest.raises(SSLBenchError) as info:
        dims_frame(store)
    assert isinstance(info.value, EmptyReportError)
    message = str(info.value)
    assert "\n" not in message and "sslbench demo" in message and "sslbench train" in message


def test_no_evaluations_says_what_to_run(store):
    _Builder(store).pretrain("simclr", "2048-d", 64, 0, 40.0)
    with pytest.raises(EmptyReportError, match="sslbench eval"):
        dims_frame(store, metric="linear_top1")
    with pytest.raises(EmptyReportError, match="dataset cifar10"):
        dims_frame(store, dataset="cifar10")
    assert dims_frame(store, metric="online_top1").shape == (1, 3)  # "SimCLR": no paper row


def test_a_cell_averages_seeds_of_one_recipe_never_two_recipes(store):
    """Runs of one method and dim that differ in another hyperparameter (a tuning study's
    trials) are rows of their own, named by what differs; seeds of one recipe are averaged, and
    one recipe is one row across the dimensions."""
    b = _Builder(store)
    for seed, online in ((0, 40.0), (1, 44.0)):
        b.pretrain("vicreg", "2048-d", 64, seed, online, lr=0.3)
    b.pretrain("vicreg", "2048-d", 64, 0, 30.0, lr=0.01)
    b.pretrain("vicreg", "2048-d", 256, 0, 50.0, lr=0.01)  # alone in its cell, in lr=0.01's row
    frame = dims_frame(store, metric="online_top1")  # no paper rows: no recipe is the paper's
    assert "source" not in frame.index.names
    cells = {(key[frame.index.names.index("method")], dim): (row[(dim, "mean")],
                                                            row[(dim, "n")])
             for key, row in frame.iterrows() for dim in (64, 256) if row[(dim, "n")]}
    assert cells == {("VICReg lr=0.3", 64): (42.0, 2), ("VICReg lr=0.01", 64): (30.0, 1),
                     ("VICReg lr=0.01", 256): (50.0, 1)}


def test_embedding_dim():
    assert embedding_dim("2048-d", 128) == 128
    assert embedding_dim("8192-8192-d", 64) == 64
    assert embedding_dim("512-512-96", 128) == 96
    assert embedding_dim("none", 32) == 32


GOLDEN_MARKDOWN = """\
**linear_top1 (%) by embedding dimension**

*ours: shapes, small, 3 epochs*

| method | projector | 64 | 128 |
| --- | --- | ---: | ---: |
| VICReg | 2048-d | 61.25 | 63.00 |
| VICReg | 8192-8192-d | 66.00 | – |
| SimCLR | 2048-d | 52.50 ± 0.71 (2) | 56.50 |
| random init | - | 20.50 ± 0.71 (2) | 20.50 ± 0.71 (2) |

*paper: ImageNet-1k, ResNet-50, 100 epochs*

| method | projector | 256 | 512 | 1024 | 2048 | 8192 |
| --- | --- | ---: | ---: | ---: | ---: | ---: |
| VICReg | 8192-8192-d | 65.11 | 66.64 | 67.96 | 68.00 | 68.02 |
"""

GOLDEN_CSV = """\
source,dataset,backbone,epochs,method,projector,dim,mean,std,n
ours,shapes,small,3,VICReg,2048-d,64,61.25,,1
ours,shapes,small,3,VICReg,2048-d,128,63.0,,1
ours,shapes,small,3,VICReg,8192-8192-d,64,66.0,,1
ours,shapes,small,3,SimCLR,2048-d,64,52.5,0.7071067811865476,2
ours,shapes,small,3,SimCLR,2048-d,128,56.5,,1
ours,shapes,small,3,random init,-,64,20.5,0.7071067811865476,2
ours,shapes,small,3,random init,-,128,20.5,0.7071067811865476,2
paper,ImageNet-1k,ResNet-50,100,VICReg,8192-8192-d,256,65.11,,1
paper,ImageNet-1k,ResNet-50,100,VICReg,8192-8192-d,512,66.64,,1
paper,ImageNet-1k,ResNet-50,100,VICReg,8192-8192-d,1024,67.96,,1
paper,ImageNet-1k,ResNet-50,100,VICReg,8192-8192-d,2048,68.0,,1
paper,ImageNet-1k,ResNet-50,100,VICReg,8192-8192-d,8192,68.02,,1
"""

GOLDEN_LATEX = r"""\begin{table}[t]
\centering
\caption{linear\_top1 (\%) by embedding dimension.}
\par\emph{ours: shapes, small, 3 epochs}

\begin{tabular}{llrr}
\toprule
method & projector & 64 & 128 \\
\midrule
VICReg & 2048-d & 61.25 & 63.00 \\
VICReg & 8192-8192-d & 66.00 & -- \\
SimCLR & 2048-d & 52.50 $\pm$ 0.71 (2) & 56.50 \\
random init & - & 20.50 $\pm$ 0.71 (2) & 20.50 $\pm$ 0.71 (2) \\
\bottomrule
\end{tabular}
\medskip
\par\emph{paper: ImageNet-1k, ResNet-50, 100 epochs}

\begin{tabular}{llrrrrr}
\toprule
method & projector & 256 & 512 & 1024 & 2048 & 8192 \\
\midrule
VICReg & 8192-8192-d & 65.11 & 66.64 & 67.96 & 68.00 & 68.02 \\
\bottomrule
\end{tabular}
\end{table}
"""

GOLDEN_TABLE = """\
linear_top1 (%) by embedding dimension
ours: shapes, small, 3 epochs
┏━━━━━━━━━━━━━┳━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━┓
┃ method      ┃ projector   ┃               64 ┃              128 ┃
┡━━━━━━━━━━━━━╇━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━┩
│ VICReg      │ 2048-d      │            61.25 │            63.00 │
│ VICReg      │ 8192-8192-d │            66.00 │                – │
│ SimCLR      │ 2048-d      │ 52.50 ± 0.71 (2) │            56.50 │
│ random init │ -           │ 20.50 ± 0.71 (2) │ 20.50 ± 0.71 (2) │
└─────────────┴─────────────┴──────────────────┴──────────────────┘
paper: ImageNet-1k, ResNet-50, 100 epochs
┏━━━━━━━━┳━━━━━━━━━━━━━┳━━━━━━━┳━━━━━━━┳━━━━━━━┳━━━━━━━┳━━━━━━━┓
┃ method ┃ projector   ┃   256 ┃   512 ┃  1024 ┃  2048 ┃  8192 ┃
┡━━━━━━━━╇━━━━━━━━━━━━━╇━━━━━━━╇━━━━━━━╇━━━━━━━╇━━━━━━━╇━━━━━━━┩
│ VICReg │ 8192-8192-d │ 65.11 │ 66.64 │ 67.96 │ 68.00 │ 68.02 │
└────────┴─────────────┴───────┴───────┴───────┴───────┴───────┘
"""


def test_golden_outputs_in_every_format(filled):
    frame = dims_frame(filled, metric="linear_top1", dataset="shapes")
    title = "linear_top1 (%) by embedding dimension"
    assert render(frame, "markdown", title=title) == GOLDEN_MARKDOWN
    assert render(frame, "csv") == GOLDEN_CSV
    assert render(frame, "latex", title=title) == GOLDEN_LATEX
    assert render(frame, "table", title=title, width=100) == GOLDEN_TABLE
    records = json.loads(render(frame, "json"))
    assert records[0] == {"source": "ours", "dataset": "shapes", "backbone": "small",
                          "epochs": 3, "method": "VICReg", "projector": "2048-d", "dim": 64,
                          "mean": 61.25, "std": None, "n": 1}
    assert records[3]["std"] == pytest.approx(0.7071067811865476) and records[3]["n"] == 2
    assert [(r["method"], r["projector"], r["dim"]) for r in records[:7]] == [
        ("VICReg", "2048-d", 64), ("VICReg", "2048-d", 128), ("VICReg", "8192-8192-d", 64),
        ("SimCLR", "2048-d", 64), ("SimCLR", "2048-d", 128), ("random init", "-", 64),
        ("random init", "-", 128)]


def test_dims_report_title_and_caption(filled):
    report = dims_report(filled, metric="linear_top1", dataset="shapes")
    assert "linear_top1" in report.title
    assert "linear probe" in report.caption and "random init" in report.caption
    assert "mean ± std" in report.caption
    assert ("No Δ: none of our settings is the paper's (ImageNet-1k, ResNet-50, 100 epochs)"
            in report.caption)


def test_run_listings(filled):
    frame = runs_list_frame(filled, kind="pretrain", status="completed", dataset="cifar10")
    assert list(frame["run_id"]) == [r.run_id for r in filled.find_runs(
        kind="pretrain", status="completed", dataset="cifar10")]
    assert frame["online_top1"].tolist() == [30.0] and frame["dim"].tolist() == [64]
    rows = runs_list_json(filled, kind="eval", dataset="cifar10")
    assert len(rows) == 1 and rows[0]["summary"] == {"linear_top1": 31.0, "knn_top1": 27.0}
    assert rows[0]["config"]["random_init"] is False
    json.dumps(rows)
    shown = run_show_json(filled, rows[0]["parent_id"][:6])
    assert shown["children"] == [rows[0]["run_id"]]
    assert shown["summary"]["online_top1"] == 30.0
    assert shown["summary_stats"]["online_top1"]["best"] == 35.0
    assert shown["params"]["dim"] == 64 and shown["attempts"][0]["status"] == "completed"
    json.dumps(shown)
