"""The reports read the runs a recipe at a time (sslbench.report.recipes) against the per-run
path they replace (every run's frame, its cells, seed_stats), on seeded random stores: the grid's
seed statistics the same to the bit, the same runs behind the captions, the same errors; and
every report's text the same from the recipes broadcast to their runs as from every run's
params and summaries."""

from __future__ import annotations

import datetime as dt
import math
import random
import re

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import update

from sslbench.db import Store
from sslbench.db.models import Run
from sslbench.db.records import NewRun
from sslbench.report import capacity, cka, dims, grid, hparams, probes, query
from sslbench.report.base import EmptyReportError
from sslbench.report.filters import ReportFilters
from sslbench.report.frames import seed_stats
from sslbench.report.grid import GRID_ROWS, grid_cells, grid_stats, simclr_note
from sslbench.report.labels import LABEL_TAGS
from sslbench.report.output import report_text
from sslbench.report.query import (
    PRETRAIN_METRICS,
    PRETRAIN_PARAMS,
    augment_text,
    normalize_runs,
    pretrain_runs,
    settings_text,
)
from sslbench.report.registry import REPORTS, build_report

METHODS = ("vicreg", "simclr", "simclr", "simclr-sq", "simclr-center")
PROJECTORS = ("8192-8192-d", "2048-d", "d-d-d", "2048-2048-d", "8192-8192-512", "512-d", None)
TAGS = ("simclr-orig", "simclr-tuned", "sweep:s1", "x")
DAY0 = dt.datetime(2024, 3, 1, 12, tzinfo=dt.timezone.utc)
FILTERS = (ReportFilters(), ReportFilters(dataset="imagenet"), ReportFilters(sweep="s1"),
           ReportFilters(backbone="resnet18"), ReportFilters(epochs=100),
           ReportFilters(tag="simclr-orig"), ReportFilters(since=dt.date(2024, 3, 2)),
           ReportFilters(until=dt.date(2024, 3, 2)), ReportFilters(dataset="none"))


def _recipe(rng: random.Random) -> dict:
    method = rng.choice(METHODS)
    cfg = {"method": method, "dataset": rng.choice(("imagenet", "cifar10")),
           "backbone": rng.choice(("resnet50", "resnet18")), "projector": rng.choice(PROJECTORS),
           "dim": rng.choice((256, 512, 2048, 8192, 8192.0, None)),
           "batch_size": rng.choice((2048, 1024)), "lr": rng.choice((0.5, 0.3)),
           "optimizer": "lars", "weight_decay": 1e-6, "augment": rng.choice(("byol", "small")),
           "loss": {"temperature": rng.choice((0.15, 0.5))} if method != "vicreg" else {}}
    if rng.random() < 0.8:
        cfg["epochs"] = rng.choice((100, 200))
    return cfg


def fill(store: Store, rng: random.Random, n_runs: int) -> None:
    """Runs of a few recipes (several seeds each), tagged, some by Slurm jobs, on several days,
    some failed, some without a value or with NaN; an evaluation or two, which the grid never
    reads."""
    recipes = [(_recipe(rng), sorted(rng.sample(TAGS, rng.randint(0, 2))))
               for _ in range(n_runs // 4)]
    for i in range(n_runs):
        cfg, tags = rng.choice(recipes)
        if rng.random() < 0.3:  # run by a Slurm job, which every report ignores
            tags = [*tags, f"slurm:{rng.randint(1, 9)}"]
        run_id = f"r{i:05d}"
        store.upsert_runs([NewRun(run_id=run_id, kind="pretrain", config={**cfg, "seed": i},
                                  command=[], env={}, tags=tags)])
        for step in range(rng.choice((0, 1, 3))):
            value = math.nan if rng.random() < 0.1 else rng.uniform(40, 70)
            store.log_metrics(run_id, step, {"online_top1": value})
        status = "completed" if rng.random() < 0.85 else "failed"
        with store._session(write=True) as session:
            session.execute(update(Run).where(Run.run_id == run_id).values(
                status=status, created_at=DAY0 + dt.timedelta(hours=7 * rng.randint(0, 8))))
    store.upsert_runs([NewRun(run_id="e0", kind="eval", config={"protocol": "knn"},
                              command=[], env={}, parent_id="r00000")])


def _sorted(stats: pd.DataFrame) -> pd.DataFrame:
    keys = [*GRID_ROWS, "dim"]
    return stats.sort_values(keys).reset_index(drop=True)[[*keys, "mean", "std", "n"]]


def check_recipes_against_runs(store: Store) -> None:
    """grid_stats (a recipe at a time) against seed_stats over grid_cells (every run), under
    each of FILTERS, both selects, with and without a method filter."""
    for filters in FILTERS:
        for select in ("final", "best"):
            for methods in (None, ("simclr", "simclr-sq")):
                try:
                    cells, runs = grid_cells(store, filters, "online_top1", select)
                except EmptyReportError as err:
                    with pytest.raises(EmptyReportError, match=re.escape(str(err))):
                        grid_stats(store, filters, "online_top1", select)
                    continue
                stats, recipes = grid_stats(store, filters, "online_top1", select,
                                            methods=methods)
                if methods is not None:
                    cells, runs = (f[f["method_name"].isin(methods)] for f in (cells, runs))
                expected = seed_stats(cells, (*GRID_ROWS, "dim"))
                pd.testing.assert_frame_equal(_sorted(stats), _sorted(expected),
                                              check_exact=True, check_dtype=False)
                assert recipes["runs"].sum() == len(runs)
                assert set(recipes.loc[recipes["valued"] > 0, "method_name"]) == set(
                    cells["method_name"])
                for caption in (settings_text, augment_text, simclr_note):
                    assert caption(recipes) == caption(runs)


@pytest.mark.parametrize("seed", range(4))
def test_recipe_statistics_equal_the_per_run_cells(tmp_path, seed):
    with Store.open(f"sqlite:///{tmp_path / 's.sqlite'}") as store:
        fill(store, random.Random(seed), 120)
        check_recipes_against_runs(store)


@pytest.mark.parametrize("seed", range(2))
def test_seed_statistics_do_not_depend_on_the_order_the_store_returns_the_runs(tmp_path, seed):
    """A database without ORDER BY returns the runs in any order (PostgreSQL's parallel and
    synchronized scans do): the statistics, a floating-point sum over each group, must be the
    same bits in every order, on both paths."""
    from sslbench.report.recipes import pretrain_recipes, recipe_seed_stats

    rng = random.Random(seed)
    with Store.open(f"sqlite:///{tmp_path / 's.sqlite'}") as store:
        fill(store, rng, 160)
        recipes, runs = pretrain_recipes(store, ReportFilters(), run_ids=False, parts=("best",))
        cells, _ = grid_cells(store, ReportFilters(), "online_top1", "best")
    # Values whose sum depends on the order of its terms in every group of several.
    runs["best.online_top1"] += [rng.choice((1e16, -1e16, 1.0, 3.0)) for _ in range(len(runs))]
    cells["value"] += [rng.choice((1e16, -1e16, 1.0, 3.0)) for _ in range(len(cells))]
    first = recipe_seed_stats(recipes, runs, "best.online_top1", GRID_ROWS)[0]
    expected = seed_stats(cells, (*GRID_ROWS, "dim"))
    assert (first["n"] > 2).any()
    for state in range(5):
        shuffled = runs.sample(frac=1, random_state=state)
        pd.testing.assert_frame_equal(
            recipe_seed_stats(recipes, shuffled, "best.online_top1", GRID_ROWS)[0], first,
            check_exact=True)
        pd.testing.assert_frame_equal(
            seed_stats(cells.sample(frac=1, random_state=state), (*GRID_ROWS, "dim")),
            expected, check_exact=True)


@pytest.mark.parametrize(("rows", "groups"), [(0, 1), (12, 3), (2000, 5), (2000, 900),
                                              (50_000, 40_000), (50_000, 300)])
def test_grouped_order_is_by_group_then_value_nan_last(rows, groups):
    """Both of grouped_order's ways (a sort per group; every value first when the groups are
    many), with group numbers past 16 bits too: the order a lexicographic sort gives."""
    from sslbench.report.frames import grouped_order

    rng = np.random.default_rng(rows + groups)
    numbers = rng.integers(0, groups, rows)
    values = rng.choice([1.0, 2.0, np.nan, -0.5, 3e16, 7.25], rows)
    expected = np.lexsort((values, numbers))
    for offset in (0, 70_000):
        order = grouped_order(numbers + offset, values)
        assert np.array_equal(np.sort(order), np.arange(rows))
        assert np.array_equal(numbers[order], numbers[expected])
        assert np.array_equal(values[order], values[expected], equal_nan=True)


def per_run_frame(store: Store, filters: ReportFilters, *, metrics=(), params=()) -> pd.DataFrame:
    """The frame pretrain_runs built before it read recipes: every run's params and summaries
    (runs_frame), normalized run by run, filtered in pandas."""
    keys = tuple(dict.fromkeys((*PRETRAIN_PARAMS, *params)))
    wanted = tuple(dict.fromkeys((*PRETRAIN_METRICS, *metrics)))
    frame = normalize_runs(store.runs_frame(kind="pretrain", status="completed",
                                            dataset=filters.dataset, params=keys,
                                            summaries=wanted))
    return frame[filters.keep(frame)].reset_index(drop=True)


EVAL_METRICS = ("linear_top1", "fast_linear_top1", "knn_top1", "rankme_emb", "rankme_repr",
                "neg_cos_var", "neg_cos_mean")


def evaluate_some(store: Store, rng: random.Random, n_evals: int) -> None:
    """Completed evaluations of random pretraining runs (some evaluated twice, some failed)
    holding a random subset of the metrics the evaluation reports read."""
    parents = [r for r in store.runs_frame(kind="pretrain", params=(), summaries=())["run_id"]]
    for i in range(n_evals):
        run_id, parent = f"e{i + 1:04d}", rng.choice(parents)
        store.upsert_runs([NewRun(run_id=run_id, kind="eval", parent_id=parent, command=[],
                                  env={}, config={"protocol": "linear", "seed": i,
                                                  "linear_epochs": rng.choice((3, 100))})])
        metrics = {m: rng.uniform(10, 70) for m in EVAL_METRICS if rng.random() < 0.7}
        store.log_metrics(run_id, 0, metrics)
        with store._session(write=True) as session:
            session.execute(update(Run).where(Run.run_id == run_id).values(
                status="completed" if rng.random() < 0.9 else "failed",
                ended_at=DAY0 + dt.timedelta(hours=i)))


def _texts(store: Store, filters: ReportFilters) -> dict[str, str]:
    out = {}
    for name in REPORTS:
        try:
            report = build_report(name, store, filters=filters)
        except EmptyReportError as err:
            out[name] = f"empty: {err}"
            continue
        out[name] = "\n".join(report_text(report, fmt) for fmt in ("markdown", "json", "csv"))
    return out


def check_reports_against_runs(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """pretrain_runs (recipes broadcast to their runs) holds the per-run frame's values in its
    columns, and every report renders the same text from either."""
    for filters in (FILTERS[0], FILTERS[2], FILTERS[6]):
        for metrics, params in (((), ()), (("online_top1",), ()), ((), ("lr", "momentum"))):
            ours = pretrain_runs(store, filters, metrics=metrics, params=params)
            theirs = per_run_frame(store, filters, metrics=metrics, params=params)
            # a run's tags as the reports see them: those they read, sorted
            read = {*LABEL_TAGS, *filters.tags}
            theirs["tags"] = [sorted(set(tags) & read) for tags in theirs["tags"]]
            pd.testing.assert_frame_equal(ours, theirs[ours.columns], check_exact=True)
        new = _texts(store, filters)
        for module in (capacity, dims, grid, hparams, probes, query, cka):
            if hasattr(module, "pretrain_runs"):
                monkeypatch.setattr(module, "pretrain_runs", per_run_frame)
        assert _texts(store, filters) == new
        monkeypatch.undo()


@pytest.mark.parametrize("seed", range(2))
def test_every_report_reads_the_runs_as_the_per_run_frame_did(tmp_path, seed, monkeypatch):
    with Store.open(f"sqlite:///{tmp_path / 's.sqlite'}") as store:
        fill(store, random.Random(seed), 120)
        evaluate_some(store, random.Random(seed), 60)
        check_reports_against_runs(store, monkeypatch)
