"""The report benchmark on a small synthetic store: the bulk-written store reads back like one
the Store API writes (summaries agree with the history), covers Table S5's grid, is cached, and
the result has the documented keys."""

from __future__ import annotations

import json

import pytest

from sslbench.bench import report as bench
from sslbench.db import Store
from sslbench.db.values import flatten
from sslbench.report import build_report

# The benchmark end to end on a small store: slow.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    return bench.run(n_runs=200, n_points=4_000, repeats=2, folder=folder,
                     report_all=False), folder


def test_result_keys_and_caching(result):
    out, folder = result
    assert set(out) == {"report", "runs", "configs", "metric_points", "seconds", "target_s",
                        "repeats", "all_seconds", "all_target_s", "store_build_s", "cached"}
    assert out["all_seconds"] is None and out["all_target_s"] == 20.0
    assert (out["report"], out["runs"], out["configs"], out["metric_points"],
            out["target_s"]) == ("table-s5", 200, 100, 4_000, 2.0)
    assert out["seconds"] == min(out["repeats"]) and len(out["repeats"]) == 2
    assert out["cached"] is False and out["store_build_s"] > 0
    json.dumps(out)
    again = bench.run(n_runs=200, n_points=4_000, repeats=1, folder=folder)
    assert again["cached"] is True and again["store_build_s"] == 0.0
    assert len(list(folder.glob("*.sqlite"))) == 1  # no temporary file left behind


def test_store_reads_back_like_a_store_api_store(result):
    _, folder = result
    path = next(folder.glob("*.sqlite"))
    with Store.open(f"sqlite:///{path}", create=False) as store:
        runs = store.find_runs(kind="pretrain", status="completed")
        assert len(runs) == 200
        history = store.metrics_frame(runs[7].run_id)
        assert len(history) == 20  # 4000 points / 200 runs
        stats = store.summary_stats(runs[7].run_id)
        for key, group in history.groupby("key"):
            values = group.sort_values("step")["value"]
            assert stats[key]["final"] == values.iloc[-1]
            assert stats[key]["count"] == len(values)
            best = values.max() if key == "online_top1" else values.min()
            assert stats[key]["best"] == best
        for run in (runs[7], runs[-1]):  # params are the flattened config, as upsert_run does
            assert store.params(run.run_id) == dict(flatten(run.config))
        frame = build_report("table-s5", store).frame
    ours = frame.loc["ours"]
    counts = ours.xs("n", axis=1, level="stat")
    # The bench runs are ImageNet-style (imagefolder, resnet50, 100 epochs), so the paper's
    # grid is filled in; its SimCLR runs (batch 1024) are named by their τ, not SimCLR-Orig /
    # -Tuned, whose rows stay empty.
    methods = set(ours.index.get_level_values("method"))
    assert methods == {"VICReg", "VICReg-exp", "VICReg-ctr", "SimCLR-Orig", "SimCLR-Tuned",
                       "SimCLR τ=0.5", "SimCLR τ=0.15"}
    assert len(ours) == 28 and set(counts.columns) == {256, 512, 1024, 2048, 8192}
    filled = counts[counts.sum(axis=1) > 0]
    # 200 runs over 100 cells: 2 seeds each; d-d-d at 2048/8192 also holds the aliased runs.
    assert filled.min().min() == 2 and filled.max().max() == 4
    assert len(frame.loc["paper"]) == 20
    assert set(frame.loc["Δ ours − paper"].index.get_level_values("method")) == {
        "VICReg", "VICReg-exp", "VICReg-ctr"}


def test_configs_of_their_own_are_the_grid_with_learning_rates_of_their_own(tmp_path):
    """--configs: the grid's cells again and again, a learning rate each time; Table S5 groups
    them into its cells, and the store holds a recipe per config."""
    out = bench.run(n_runs=600, n_points=1_200, repeats=1, folder=tmp_path, report_all=False,
                    configs=300)
    assert (out["runs"], out["configs"], out["cached"]) == (600, 300, False)
    (path,) = tmp_path.glob("*-c300-*.sqlite")
    with Store.open(f"sqlite:///{path}", create=False) as store:
        recipes, runs = store.recipe_runs(params=("lr",), summaries=(), tags=())
        assert len(recipes) == 300 and set(recipes["runs"]) == {2}
        assert sorted(set(recipes["param.lr"])) == [0.3, 0.3001, 0.3002]
        counts = build_report("table-s5", store).frame.loc["ours"].xs("n", axis=1,
                                                                       level="stat")
    filled = counts[counts.sum(axis=1) > 0]
    assert filled.min().min() == 6 and filled.max().max() == 12  # 3 learning rates x 2 seeds
    assert bench.run(n_runs=600, n_points=1_200, repeats=1, folder=tmp_path,
                     report_all=False, configs=300)["cached"] is True


def test_report_all_is_timed_on_the_bench_store(result, tmp_path):
    _, folder = result
    path = next(folder.glob("*.sqlite"))
    seconds = bench.time_report_all(path, tmp_path)
    assert seconds > 0
    page = (tmp_path / "sslbench-report.html").read_text(encoding="utf-8")
    assert page.count("<img") == 3  # fig1, fig-s6, fig-s7: the bench store holds no evaluation
    assert "Table S5: online top-1" in page


def test_a_cached_store_of_an_older_schema_is_upgraded_not_rebuilt(tmp_path):
    """A schema change upgrades the cached store in place (a million runs take hours to build),
    as opening any user's store does, and leaves no backup: the same report from it."""
    from sslbench.db import SCHEMA_VERSION
    from sslbench.report.output import report_text
    from tests.test_store_recipes import as_version_5

    bench.run(n_runs=100, n_points=1_000, repeats=1, folder=tmp_path, report_all=False)
    (path,) = tmp_path.glob("*.sqlite")
    with Store.open(f"sqlite:///{path}", create=False) as store:
        before = report_text(build_report("table-s5", store), "json")
    as_version_5(f"sqlite:///{path}")
    older = path.with_name(path.name.replace(f"-s{SCHEMA_VERSION}-", "-s5-"))
    path.rename(older)
    again = bench.run(n_runs=100, n_points=1_000, repeats=1, folder=tmp_path, report_all=False)
    assert again["cached"] is True and again["store_build_s"] == 0.0
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        path.name]
    with Store.open(f"sqlite:///{path}", create=False) as store:
        assert store.upgraded_from is None
        assert report_text(build_report("table-s5", store), "json") == before
