"""Naming runs as the paper does, report filters, and the pure pandas steps of the reports
(seed statistics, wide stat frames, published values beside cells, agreement, the regression),
each against an independent computation."""

from __future__ import annotations

import datetime as dt
import math
import statistics

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from sslbench.errors import ConfigError
from sslbench.report.filters import ReportFilters
from sslbench.report.frames import (
    agreement,
    agreement_text,
    linear_fit,
    only,
    published_frame,
    seed_stats,
    wide,
    with_paper,
)
from sslbench.report.labels import (
    cka_label,
    embedding_dim,
    method_label,
    projector_families,
    projector_widths,
)


def test_method_labels():
    assert method_label("vicreg") == "VICReg"
    assert method_label("vicreg-exp") == "VICReg-exp"
    assert method_label("simclr-center") == "SimCLR w/ centering"
    assert method_label("simclr-dimstd") == "SimCLR w/ dim std"
    tuned = {"loss.temperature": 0.15, "batch_size": 2048, "lr": 0.5, "optimizer": "lars",
             "weight_decay": 1e-6}  # Table S6's row and Appendix D, typed from the paper
    assert method_label("simclr", tuned) == "SimCLR-Tuned"
    # τ alone is not the recipe: every other ingredient must be the paper's too.
    for key, other in (("batch_size", 128), ("lr", 0.3), ("optimizer", "adamw"),
                       ("weight_decay", 1e-4), ("loss.temperature", 0.5)):
        label = method_label("simclr", {**tuned, key: other})
        tau = 0.5 if key == "loss.temperature" else 0.15
        assert label == f"SimCLR τ={tau:g}", (key, label)
    assert method_label("simclr", {**tuned, "batch_size": None}) == "SimCLR τ=0.15"
    assert method_label("simclr", {"loss.temperature": 0.1}) == "SimCLR τ=0.1"
    assert method_label("simclr") == "SimCLR"  # nothing recorded: nothing claimed
    assert method_label("simclr", tuned, ["simclr-orig"]) == "SimCLR-Orig"  # the user's word
    assert method_label("simclr", {"loss.temperature": 0.5}, ["simclr-tuned"]) == (
        "SimCLR-Tuned")
    assert method_label("my-new-loss") == "my-new-loss"


def test_projector_widths_and_embedding_dim():
    assert projector_widths("8192-8192-d", 512) == (8192, 8192, 512)
    assert projector_widths("D-D-D", 64) == (64, 64, 64)
    assert projector_widths("none", 64) == ()
    assert projector_widths("2048-x", 64) is None
    assert projector_widths("2048-d", None) is None
    assert embedding_dim("2048-d", 128) == 128
    assert embedding_dim("512-512-96", 128) == 96
    assert embedding_dim("none", 32) == 32
    assert embedding_dim("none", None) is None


@pytest.mark.parametrize(("spec", "dim", "families"), [
    ("8192-8192-d", 512, ("8192-8192-d",)),
    ("8192-8192-d", 8192, ("8192-8192-d", "d-d-d")),    # the same architecture
    ("d-d-d", 8192, ("d-d-d", "8192-8192-d")),
    ("2048-2048-d", 2048, ("2048-2048-d", "d-d-d")),
    ("8192-8192-512", 512, ("8192-8192-d",)),            # literal widths mapped
    ("2048-256", 256, ("2048-d",)),
    ("8192-8192-8192", 8192, ("d-d-d", "8192-8192-d")),
    ("8192-8192-512", 256, ("8192-8192-512",)),          # last width != dim: not mapped
    ("512-d", 64, ("512-d",)),
    ("512-512-128", 128, ("512-512-128",)),
    (" 2048-D ", 64, ("2048-d",)),
])
def test_projector_families(spec, dim, families):
    assert projector_families(spec, dim) == families


def test_cka_labels():
    assert cka_label("VICReg", 1024) == "VICReg-1024"
    assert cka_label("SimCLR-Tuned", 2048) == "SimCLR-2048"
    assert cka_label("SimCLR-Orig", 2048) == "SimCLR-Orig-2048"
    assert cka_label("SimCLR τ=0.5", 64) == "SimCLR τ=0.5 d=64"
    assert cka_label("Random", 0) == "Random"


def _runs() -> pd.DataFrame:
    utc = dt.timezone.utc
    return pd.DataFrame({
        "dataset": ["a", "a", "b"], "backbone": ["r18", "r50", "r18"], "epochs": [10, 20, 10],
        "tags": [["sweep:s1", "x"], [], ["sweep:s2"]],
        "created_at": pd.to_datetime([dt.datetime(2024, 1, 1, 23, 59, tzinfo=utc),
                                      dt.datetime(2024, 1, 2, 0, 1, tzinfo=utc),
                                      dt.datetime(2024, 2, 1, tzinfo=utc)], utc=True)})


@pytest.mark.parametrize(("filters", "kept"), [
    (ReportFilters(), [0, 1, 2]),
    (ReportFilters(dataset="a"), [0, 1]),
    (ReportFilters(backbone="r18"), [0, 2]),
    (ReportFilters(epochs=10), [0, 2]),
    (ReportFilters(sweep="s1"), [0]),
    (ReportFilters(tag="x"), [0]),
    (ReportFilters(sweep="s1", tag="y"), []),
    (ReportFilters(since=dt.date(2024, 1, 2)), [1, 2]),
    (ReportFilters(until=dt.date(2024, 1, 1)), [0]),
    (ReportFilters(since=dt.date(2024, 1, 2), until=dt.date(2024, 1, 2)), [1]),
])
def test_filters_keep(filters, kept):
    runs = _runs()
    assert list(runs.index[filters.keep(runs)]) == kept


def test_filters_from_options_and_errors():
    f = ReportFilters.from_options(sweep="s", since="2024-01-02", until=None, epochs="100",
                                   dataset="")
    assert f == ReportFilters(sweep="s", since=dt.date(2024, 1, 2), epochs=100)
    assert f.tags == ("sweep:s",) and f.describe() == "sweep s; epochs 100; since 2024-01-02"
    with pytest.raises(ConfigError, match="not a date"):
        ReportFilters.from_options(since="yesterday")
    with pytest.raises(ConfigError, match="after --until"):
        ReportFilters.from_options(since="2024-02-01", until="2024-01-01")
    with pytest.raises(ConfigError, match="unknown report filter 'colour'"):
        ReportFilters.from_options(colour="red")
    with pytest.raises(ConfigError, match="--epochs"):
        ReportFilters.from_options(epochs="ten")


def test_seed_stats_against_statistics():
    cells = pd.DataFrame({"m": ["a", "a", "a", "b"], "d": [1, 1, 1, 1],
                          "value": [1.0, 2.0, 4.5, 7.0]})
    stats = seed_stats(cells, ("m", "d")).set_index("m")
    assert stats.loc["a", "mean"] == pytest.approx(statistics.mean([1.0, 2.0, 4.5]))
    assert stats.loc["a", "std"] == pytest.approx(statistics.stdev([1.0, 2.0, 4.5]))
    assert stats.loc["a", "n"] == 3 and stats.loc["b", "n"] == 1
    assert math.isnan(stats.loc["b", "std"])


def test_wide_orders_rows_the_paper_way_and_adds_missing_cells():
    stats = pd.DataFrame({"method": ["VICReg", "SimCLR-Tuned", "Zeta"],
                          "projector": ["2048-d", "d-d-d", "512-d"], "dim": [512, 256, 256],
                          "mean": [1.0, 2.0, 3.0], "std": [0.5, math.nan, math.nan],
                          "n": [2, 1, 1]})
    frame = wide(stats, ("method", "projector"), "dim",
                 extra_rows=[("VICReg", "d-d-d")], extra_columns=[8192])
    assert list(frame.index) == [("VICReg", "d-d-d"), ("VICReg", "2048-d"),
                                 ("SimCLR-Tuned", "d-d-d"), ("Zeta", "512-d")]
    assert list(dict.fromkeys(frame.columns.get_level_values("dim"))) == [256, 512, 8192]
    assert frame.loc[("VICReg", "2048-d"), (512, "mean")] == 1.0
    assert frame.loc[("VICReg", "d-d-d"), (256, "n")] == 0
    assert frame[[c for c in frame.columns if c[1] == "n"]].dtypes.eq("int64").all()


def _ours() -> pd.DataFrame:
    """Two settings, one of them the paper's (ImageNet, ResNet-50, 100 epochs)."""
    stats = pd.DataFrame({
        "dataset": ["imagefolder", "imagefolder", "imagefolder", "shapes"],
        "backbone": ["resnet50", "resnet50", "resnet50", "tiny"], "epochs": [100, 100, 100, 5],
        "method": ["A", "A", "B", "A"], "projector": ["p"] * 4, "dim": [1, 2, 1, 1],
        "mean": [10.0, 20.0, 30.0, 12.0], "std": [math.nan] * 4, "n": [1, 3, 1, 2]})
    return wide(stats, ("dataset", "backbone", "epochs", "method", "projector"), "dim")


def test_with_paper_rows_of_their_own_and_deltas_only_where_comparable():
    from sslbench.report.published import comparable

    paper = published_frame({("A", "p", 1): 10.5, ("A", "p", 2): 23.0, ("B", "p", 2): 5.0,
                             ("C", "p", 4): 1.0}, ("method", "projector"), "dim")
    frame = with_paper(_ours(), paper, comparable=lambda key: comparable(*key[:3]))
    assert frame.index.names[0] == "source"
    assert list(dict.fromkeys(frame.index.get_level_values("source"))) == [
        "ours", "paper", "Δ ours − paper"]
    assert list(dict.fromkeys(frame.columns.get_level_values("dim"))) == [1, 2, 4]
    # The paper's rows carry the paper's setting, never ours.
    printed = only(frame, "paper")
    assert set(printed.index.droplevel([3, 4])) == {("ImageNet-1k", "ResNet-50", 100)}
    assert printed.loc[("ImageNet-1k", "ResNet-50", 100, "C", "p"), (4, "mean")] == 1.0
    assert printed.loc[("ImageNet-1k", "ResNet-50", 100, "B", "p"), (2, "n")] == 1
    deltas = only(frame, "Δ ours − paper")
    # Only the comparable setting has Δ rows, and only where both have the cell.
    assert set(deltas.index) == {("imagefolder", "resnet50", 100, "A", "p")}
    row = ("imagefolder", "resnet50", 100, "A", "p")
    assert deltas.loc[row, (1, "mean")] == pytest.approx(10.0 - 10.5)
    assert deltas.loc[row, (2, "mean")] == pytest.approx(20.0 - 23.0)
    assert deltas.loc[row, (2, "n")] == 3  # our runs behind the Δ
    assert deltas.loc[row, (4, "n")] == 0 and math.isnan(deltas.loc[row, (4, "mean")])
    # B has a cell at dim 1, the paper at dim 2: nothing to compare, so no Δ row.
    summary = agreement(frame, tolerance=1.0)
    assert summary["compared"] == 2 and summary["within"] == 1
    assert summary["max_abs_delta"] == pytest.approx(3.0)
    assert summary["at"] == ["imagefolder", "resnet50", "100", "A", "p", "2"]
    assert summary["mean_delta"] == pytest.approx(-1.75)
    assert agreement_text(summary).startswith("2 comparable cells: 1 within ±1 points")


def test_agreement_leaves_trivial_cells_out_and_says_why_there_is_none():
    paper = published_frame({("A", "p", 1): 10.0, ("A", "p", 2): 99.0},
                            ("method", "projector"), "dim")
    frame = with_paper(_ours(), paper, comparable=lambda key: key[0] == "imagefolder")
    summary = agreement(frame, 0.5, trivial=lambda key, dim: dim == 1)
    assert (summary["compared"], summary["trivial"], summary["within"]) == (1, 1, 0)
    text = agreement_text(summary, trivial="dim 1, equal by construction")
    assert text.startswith("1 comparable cells (1 trivial cells left out: dim 1, equal by "
                           "construction): 0 within ±0.5 points")
    nothing = with_paper(_ours(), paper, comparable=lambda key: False)
    assert "Δ ours − paper" not in set(nothing.index.get_level_values("source"))
    none = agreement(nothing, 0.5)
    assert none["compared"] == 0
    assert agreement_text(none, why_none="the settings differ.") == (
        "No Δ: the settings differ.")
    trivial_only = agreement(with_paper(_ours(), paper, comparable=lambda key: True), 0.5,
                             trivial=lambda key, dim: True)
    assert (trivial_only["compared"], trivial_only["trivial"]) == (0, 3)  # A: 2 + shapes A: 1
    assert agreement_text(trivial_only, why_none="nothing else.", trivial="all of them") == (
        "No Δ: nothing else. The only cells both have are trivial (3: all of them).")


def test_linear_fit_against_sklearn():
    rng = np.random.default_rng(0)
    x = rng.uniform(60, 70, size=12)
    y = 0.9 * x + 5 + rng.normal(0, 0.3, size=12)
    fit = linear_fit(x, y)
    model = LinearRegression().fit(x.reshape(-1, 1), y)
    assert fit["slope"] == pytest.approx(model.coef_[0])
    assert fit["intercept"] == pytest.approx(model.intercept_)
    assert fit["r2"] == pytest.approx(model.score(x.reshape(-1, 1), y))
    assert fit["points"] == 12
    assert linear_fit([1.0], [2.0]) is None
    assert linear_fit([3.0, 3.0], [1.0, 2.0]) is None
