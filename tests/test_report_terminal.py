"""Every report read in an 80- and a 120-column terminal, on a store that holds every kind of
row (ours in several settings, the paper's, Δ, random init, several seeds, cells only one side
has, large numbers, long labels): no truncation mark, no line wider than the terminal, every
word of every cell, header and heading whole on one line; and the listings a user reads in the
terminal (``runs list``, ``compare``'s matrix, a single report as HTML)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from rich.cells import cell_len
from test_report_tables import Builder, fill_paper_store

from sslbench.db import Store
from sslbench.report import REPORTS, Report, build_report, write_report
from sslbench.report.render import Layout, panel_grids, render

WIDTHS = (80, 120)
#: The reports this store is built to exercise (a report added later may need other data).
KNOWN = ("dims", "table-s5", "fig1", "fig-s6", "table-s2-s3", "table-s4", "cka", "knn",
         "spectra", "fig2", "fig-s3", "fig-s4", "fig-s7", "fig-s8", "hparams", "tune")
_BOX = re.compile(r"[\s\u2500-\u257f]+")  # white space and box-drawing characters


def fill_small_runs(store: Store, folder: Path | None = None) -> None:
    """A CPU-sized setting beside the paper's: shapes / tiny / 5 epochs, two methods, two
    seeds, SimCLR's variants, a random-init network for every protocol, analyses on 256
    samples (with negative-pair histograms and, given a ``folder``, matrix images)."""
    b = Builder(store, start=50_000)
    shapes = dict(dataset="shapes", backbone="tiny", epochs=5, batch_size=128)
    runs = [b.pretrain("vicreg", "2048-d", dim, seed, 30.0 + dim / 8 + seed, **shapes)
            for dim in (16, 64) for seed in (0, 1)]
    runs.append(b.pretrain("simclr", "2048-d", 16, 0, 25.0, temperature=0.5, **shapes))
    for method, top1 in (("simclr-center", 24.0), ("simclr-dimstd", 26.0), ("simclr-abs", 27.0)):
        b.pretrain(method, "2048-d", 16, 0, top1, **shapes)
    on_shapes = dict(dataset="shapes", backbone="tiny")
    for i, run in enumerate(runs):
        b.evaluate(run, "fast-linear", {"fast_linear_top1": 40.0 + i}, probe_augment="flip",
                   probe_standardize=True, linear_epochs=100, batch_size=256, lr=0.25)
        b.evaluate(run, "knn", {"knn_top1": 35.0 + i})
        b.evaluate(run, "linear", {"linear_top1": 38.0 + i}, linear_epochs=3, batch_size=256,
                   lr=0.25, probe_augment="flip", probe_standardize=True)
    hist = {"neg_cos_hist": [0.0] * 36 + [10.0, 40.0, 90.0, 120.0, 120.0, 90.0, 40.0, 10.0]
            + [0.0] * 36}
    analysed = [b.evaluate(runs[0], "analysis", {**_analysis(16), "n": 256}, series={
        "sv_repr": [5.0, 2.5, 1.0], "sv_emb": [3.0, 1.5], **hist})]
    for protocol, metrics in (("fast-linear", {"fast_linear_top1": 12.0}),
                              ("knn", {"knn_top1": 11.0}),
                              ("analysis", {**_analysis(16), "n": 256})):
        done = b.evaluate(None, protocol, metrics, projector="2048-d", dim=16, **on_shapes,
                          series=hist if protocol == "analysis" else None)
        analysed += [done] if protocol == "analysis" else []
    b.cka([runs[0], runs[4], "random"], [[1.0, 0.61, 0.12], [0.61, 1.0, 0.08],
                                         [0.12, 0.08, 1.0]], dataset="shapes")
    for i, eval_id in enumerate(analysed if folder is not None else ()):
        path = Path(folder) / eval_id / "matrices.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_matrices_png(path, seed=i)
        store.log_artifact(eval_id, "figure", str(path))
    fill_study(store, runs[:4])


def fill_study(store: Store, run_ids: list[str]) -> None:
    """A tuning study (``sslbench tune``) over the shapes runs, in the store's database: three
    completed trials with long parameter names, one pruned."""
    import optuna

    from sslbench.runs.tune import SPEC_ATTR, storage

    study = optuna.create_study(study_name="shapes-vicreg-loss-weights-and-learning-rate",
                                storage=storage(store.url), direction="maximize")
    study.set_user_attr(SPEC_ATTR, json.dumps({
        "base": {"epochs": 5}, "pruner": {"name": "median"},
        "objective": {"metric": "fast_linear_top1", "protocol": "fast-linear",
                      "direction": "maximize"}}))
    space = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
             "std_coeff": optuna.distributions.FloatDistribution(5.0, 100.0, log=True),
             "cov_coeff": optuna.distributions.FloatDistribution(0.1, 10.0, log=True)}
    points = [(0.002, 25.0, 1.0, 40.0), (0.0061, 42.6, 1.6, 43.5), (0.0155, 8.3, 0.4, 41.0),
              (0.05, 90.0, 9.0, None)]
    for run_id, (lr, std, cov, value) in zip(run_ids, points):
        state = optuna.trial.TrialState.COMPLETE if value else optuna.trial.TrialState.PRUNED
        study.add_trial(optuna.trial.create_trial(
            params={"lr": lr, "std_coeff": std, "cov_coeff": cov}, distributions=space,
            value=value, state=state, user_attrs={"run_id": run_id},
            intermediate_values={} if value else {1: 12.0}))


def write_matrices_png(path: Path, seed: int) -> None:
    """A small image like the analysis protocol's (two matrices side by side)."""
    from matplotlib.image import imsave

    rng = np.random.default_rng(seed)
    imsave(path, rng.uniform(size=(40, 80, 3)))


def _analysis(m: int, n: int = 256) -> dict[str, float]:
    return {"rankme_repr": 30.0, "rankme_emb": 9.0, "n": n, "m": m, "neg_cos_mean": 0.002,
            "neg_cos_var": 0.0125,
            "lemma34_rows_lower": n * n / m, "sum_row4_colsnormalized": 1.4 * n * n / m,
            "lemma34_rows_upper": float(n * n), "lemma34_cols_lower": m * m / n,
            "sum_col4_rowsnormalized": 2.1 * m * m / n, "lemma34_cols_upper": float(m * m)}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("terminal")
    with Store.open(f"sqlite:///{folder / 's.sqlite'}") as opened:
        fill_paper_store(opened)
        fill_small_runs(opened, folder)
        yield opened


def built(store: Store, name: str) -> Report:
    """Report ``name`` of ``store``: every registered report must build here, so a new one
    comes with its data in :func:`fill_small_runs` (never a skip)."""
    assert name in KNOWN, (f"report {name} is registered but the test store holds nothing for "
                           "it: add its data to fill_small_runs and its name to KNOWN")
    return build_report(name, store)


def _tokens(text: str) -> set[str]:
    return set(_BOX.split(text))


def check_fits(text: str, width: int) -> None:
    """No truncation mark and no line wider than ``width``."""
    assert "…" not in text
    too_wide = [line for line in text.splitlines() if cell_len(line) > width]
    assert not too_wide, too_wide[:3]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", list(REPORTS))
def test_every_report_fits_the_terminal_whole(store, name, width):
    report = built(store, name)
    text = write_report(report, "table", width=width)
    check_fits(text, width)
    tokens = _tokens(text)
    layout = Layout(report.title, report.caption, report.digits, report.headers)
    for heading, grid in panel_grids(report.frame, layout):
        words = [w for cell in [heading, *grid.header, *(c for row in grid.body for c in row)]
                 for w in cell.split()]
        assert words and not [w for w in words if w not in tokens], (heading, [
            w for w in words if w not in tokens][:5])
    for word in report.caption.split():
        assert word in tokens, word


def test_the_store_exercises_every_kind_of_row(store):
    """What the test above relies on: the rows it renders are all there."""
    s5 = build_report("table-s5", store).frame
    sources = set(s5.index.get_level_values("source"))
    assert sources == {"ours", "paper", "Δ ours − paper"}
    settings = {k[1:4] for k in s5.index if k[0] == "ours"}
    assert {("shapes", "tiny", 5), ("imagenet", "resnet50", 100)} <= settings
    counts = s5.xs("n", axis=1, level="stat")
    assert counts.max().max() >= 2 and (counts == 0).any().any()  # seeds, and empty cells
    dims = build_report("dims", store).frame
    assert "random init" in set(dims.index.get_level_values("method"))
    methods = set(s5.index.get_level_values("method"))
    assert "SimCLR τ=0.5" in methods and "SimCLR-Tuned" in methods
    s4 = build_report("table-s4", store).frame
    assert s4.xs("mean", axis=1, level="stat").max().max() > 1e6  # M² = 67,108,864


@pytest.mark.parametrize("width", WIDTHS)
def test_wide_tables_split_into_parts_and_integers_stay_integers(store, width):
    report = build_report("table-s4", store)
    text = write_report(report, "table", width=width)
    assert "67,108,864" in text and "67108864.00" not in text
    if width == 80:
        assert "(part 1 of" in text  # eight quantities do not fit beside the labels
    hparams = write_report(build_report("hparams", store), "table", width=width)
    runs_column = [line for line in hparams.splitlines() if "runs" in line]
    assert runs_column and not re.search(r"\b\d+\.0+\b(?=\s*│\s*(VICReg|SimCLR|–))", hparams)


def test_report_command_uses_the_terminal_width(cli, home, monkeypatch):
    with Store.open() as opened:
        fill_small_runs(opened)
    for columns in WIDTHS:
        monkeypatch.setenv("COLUMNS", str(columns))
        result = cli("report", "table-s5")
        assert result.exit_code == 0, result.output
        check_fits(result.output, columns)
        assert "paper: ImageNet-1k, ResNet-50, 100 epochs" in result.output


def test_runs_list_prints_whole_numbers_with_an_interrupted_run(cli, home, monkeypatch):
    """An evaluation has no ``epochs`` param: the column has gaps, which must not turn the
    numbers of the other runs into 5.00."""
    with Store.open() as opened:
        b = Builder(opened)
        run = b.pretrain("vicreg", "2048-d", 16, 0, 30.0, dataset="shapes", backbone="tiny",
                         epochs=5)
        b.pretrain("vicreg", "2048-d", 32, 3, 30.0, dataset="shapes", backbone="tiny",
                   epochs=5, status="interrupted")
        b.evaluate(run, "knn", {"knn_top1": 20.0})
    monkeypatch.setenv("COLUMNS", "120")
    result = cli("runs", "list")
    assert result.exit_code == 0, result.output
    check_fits(result.output, 120)
    rows = [line for line in result.output.splitlines() if "interrupted" in line]
    # Seeds 0 and 3 share a column, so "3.00" would show its conversion; "0.00" is not checked
    # because a run built in the same instant has a duration of 0.00 s.
    assert rows and not re.search(r"\b(16|32|5|3)\.00\b", result.output)
    cells = [c.strip() for c in rows[0].split("│")]
    assert "32" in cells and "5" in cells and "3" in cells


def test_compare_matrix_has_its_row_labels():
    """``sslbench compare`` renders ``DataFrame(matrix, index=labels, columns=labels)``."""
    import pandas as pd

    labels = ["VICReg-64", "SimCLR τ=0.5 d=64", "Random"]
    frame = pd.DataFrame([[1.0, 0.6, 0.1], [0.6, 1.0, 0.2], [0.1, 0.2, 1.0]], index=labels,
                         columns=labels)
    text = render(frame, "table", width=80)
    rows = [line for line in text.splitlines() if line.startswith("│")]
    assert [r.split("│")[1].strip() for r in rows] == labels


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        if data.strip():
            self.text.append(data.strip())


def test_single_report_html_shows_its_notes_as_html_not_json(store, tmp_path):
    report = build_report("table-s5", store)
    page = _Text()
    page.feed(write_report(report, "html"))
    for text in page.text:
        if text.startswith(("{", "[")):
            with pytest.raises(ValueError):
                json.loads(text)  # no text node is a JSON document
    assert "notes" not in " ".join(page.text).lower() or "li" in page.tags
    assert "agreement" in page.text and "compared" in page.text
    assert str(report.notes["agreement"]["compared"]) in " ".join(page.text)
