"""What the figures draw, read back from the matplotlib objects and checked against numbers
computed here: ours and the paper's on separate axes with their own scales, the random-init
line where a random-init evaluation exists, y ranges that keep small differences small, and no
text (titles, labels, legends) outside the figure."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from test_report_tables import Builder, fill_paper_store
from test_report_terminal import built, fill_small_runs

from sslbench.db import Store
from sslbench.report import build_report
from sslbench.report.figures import MAX_WIDTH
from sslbench.report.registry import FIGURES

# Table S5, VICReg rows, typed from the paper.
PAPER_VICREG = {"d-d-d": [61.36, 63.50, 65.35, 66.74, 68.13],
                "8192-8192-d": [65.01, 66.72, 68.06, 68.07, 68.13],
                "2048-d": [59.57, 64.51, 64.64, 64.15, 64.06],
                "2048-2048-d": [64.16, 65.87, 66.68, 66.74, 66.78]}


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plots")
    with Store.open(f"sqlite:///{folder / 's.sqlite'}") as store:
        fill_paper_store(store)
        fill_small_runs(store, folder)
        yield store


def _axes(fig) -> dict[str, object]:
    return {ax.get_title().replace("\n", " "): ax for ax in fig.axes if ax.get_visible()
            and ax.get_title()}


def _curves(ax) -> list[tuple[list[float], list[float]]]:
    """(x, y) of every errorbar line of an axis."""
    return [(list(c.lines[0].get_xdata()), list(c.lines[0].get_ydata()))
            for c in ax.containers]


def _baselines(ax) -> list[float]:
    return [float(line.get_ydata()[0]) for line in ax.lines if line.get_linestyle() == ":"]


def test_fig1_draws_ours_and_the_papers_on_separate_axes(paper):
    fig = build_report("fig1", paper).figure()
    axes = _axes(fig)
    assert {t for t in axes if t.startswith("paper: ")} == {
        "paper: VICReg", "paper: VICReg-exp", "paper: VICReg-ctr", "paper: SimCLR-Orig",
        "paper: SimCLR-Tuned"}
    assert {"ours: VICReg", "ours: SimCLR τ=0.5", "ours: SimCLR-Tuned"} <= set(axes)
    # Ours: the means of the final online top-1 of the seeds (60, 62 -> 61 at d = 256).
    ours = _curves(axes["ours: VICReg"])
    assert ([256.0, 8192.0], [statistics.mean([60.0, 62.0]), 67.0]) in ours  # 8192-8192-d
    assert ([256.0], [40.0]) in ours  # cifar10's run, its own marker
    # The paper's: Table S5 as printed, on its own axis; Figure 1 has no 2048-2048-d line.
    printed = _curves(axes["paper: VICReg"])
    dims = [256.0, 512.0, 1024.0, 2048.0, 8192.0]
    for family in ("d-d-d", "8192-8192-d", "2048-d"):
        assert (dims, PAPER_VICREG[family]) in printed
    assert (dims, PAPER_VICREG["2048-2048-d"]) not in printed and len(printed) == 3
    s6 = _curves(_axes(build_report("fig-s6", paper).figure())["paper: VICReg"])
    assert (dims, PAPER_VICREG["2048-2048-d"]) in s6
    # The random-init evaluations (fast-linear: 10.0 on imagenet, 12.0 on shapes) in our
    # panels only, each where its dataset and backbone have runs.
    assert sorted(_baselines(axes["ours: VICReg"])) == [10.0, 12.0]  # both settings' runs
    assert _baselines(axes["ours: VICReg-exp"]) == [10.0]
    assert all(_baselines(ax) for t, ax in axes.items() if t.startswith("ours"))
    assert not any(_baselines(ax) for t, ax in axes.items() if t.startswith("paper"))
    # Each block has one scale of its own, at least 10 points high.
    ours_ylim = {axes[t].get_ylim() for t in axes if t.startswith("ours")}
    paper_ylim = {axes[t].get_ylim() for t in axes if t.startswith("paper")}
    assert len(ours_ylim) == 1 and len(paper_ylim) == 1 and ours_ylim != paper_ylim
    low, high = paper_ylim.pop()
    values = [v for rows in PAPER_VICREG.values() for v in rows[:]]
    assert high - low >= 10.0 and low <= 59.57 and high >= 68.68 and low > min(values) - 5


def test_dims_figure_against_hand_computed_means(tmp_path):
    with Store.open(f"sqlite:///{tmp_path / 's.sqlite'}") as store:
        b = Builder(store)
        top1 = {(16, 0): 40.0, (16, 1): 42.0, (64, 0): 44.0, (64, 1): 46.5}
        for (dim, seed), value in top1.items():
            run = b.pretrain("vicreg", "2048-d", dim, seed, 30.0, dataset="shapes",
                             backbone="tiny", epochs=5)
            b.evaluate(run, "fast-linear", {"fast_linear_top1": value})
        for value in (12.0, 14.0):
            b.evaluate(None, "fast-linear", {"fast_linear_top1": value}, dataset="shapes",
                       backbone="tiny")
        report = build_report("dims", store)
        fig = report.figure()
    axes = _axes(fig)
    assert list(axes) == ["ours: shapes, tiny, 5 epochs"]
    ax = axes["ours: shapes, tiny, 5 epochs"]
    (x, y), = _curves(ax)
    assert x == [16.0, 64.0]
    assert y == pytest.approx([statistics.mean([40.0, 42.0]), statistics.mean([44.0, 46.5])])
    bars = ax.containers[0].lines[2][0].get_segments()  # the ± std bars, one per dim
    assert [s[1][1] - s[0][1] for s in bars] == pytest.approx(
        [2 * statistics.stdev([40.0, 42.0]), 2 * statistics.stdev([44.0, 46.5])])
    assert _baselines(ax) == [statistics.mean([12.0, 14.0])]
    low, high = ax.get_ylim()
    assert high - low >= 10.0  # 13 .. 46.5 spans more; the floor never shrinks it
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["VICReg 2048-d", "random init (fast-linear probe)"]


def _outside(fig) -> list[str]:
    """What is drawn (partly) outside the figure: its titles, legend entries and axis titles
    by name, anything else (tick labels, ...) as the bounding box of all that is drawn."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height

    def out(box) -> bool:
        return box.x0 < -0.5 or box.y0 < -0.5 or box.x1 > width + 0.5 or box.y1 > height + 0.5

    texts = [*fig.texts, *(t for legend in fig.legends for t in legend.get_texts()),
             *(ax.title for ax in fig.axes if ax.get_visible())]
    found = [t.get_text() for t in texts if t.get_text().strip()
             and out(t.get_window_extent(renderer))]
    drawn = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)  # inches -> pixels
    return found + ([f"drawn area {drawn.bounds}"] if out(drawn) else [])


@pytest.mark.parametrize("name", FIGURES)
def test_no_figure_text_is_clipped_and_figures_stay_narrow(paper, name):
    fig = built(paper, name).figure()
    assert _outside(fig) == []
    assert fig.get_figwidth() <= MAX_WIDTH


def test_a_single_panel_keeps_its_whole_title(tmp_path):
    """Figure S1 with one method: one panel, and a title longer than it."""
    with Store.open(f"sqlite:///{tmp_path / 's.sqlite'}") as store:
        b = Builder(store)
        b.evaluate(b.pretrain("vicreg", "2048-d", 64, 0, 30.0), "knn", {"knn_top1": 25.0})
        fig = build_report("knn", store).figure()
    title = fig._suptitle.get_text()
    assert title.replace("\n", " ") == "Figure S1: k-NN top-1 vs embedding dimension"
    assert _outside(fig) == []
    (x, y), = _curves(_axes(fig)["ours: VICReg"])
    assert (x, y) == ([64.0], [25.0])
    low, high = _axes(fig)["ours: VICReg"].get_ylim()
    assert high - low >= 10.0  # one point: the axis is not a 0.1-point zoom
    assert np.isclose((low + high) / 2, 25.0)
