"""A store at lab scale, in miniature: the synthetic store of the benchmarks (written through the
product's bulk paths), ``runs list`` a page at a time, ``eval --pending`` as one query, bulk run
creation, and ``sslbench bench store`` itself on tiny sizes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from sslbench.bench import store as bench_store
from sslbench.bench.storegen import build
from sslbench.db import Store
from sslbench.db.records import NewRun
from sslbench.db.values import flatten
from sslbench.errors import UnknownRunError

N_RUNS = 250


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('scale') / 'store.sqlite'}"
    with Store.open(url) as store:
        build(store, N_RUNS, 10 * N_RUNS)
        parents = [r.run_id for r in store.find_runs(limit=5)]
        # Completed knn evaluations of the first three runs, a failed one of the fourth, a
        # completed fast-linear one of the fifth.
        for i, (parent, protocol, status) in enumerate(
                zip(parents, ["knn", "knn", "knn", "knn", "fast-linear"],
                    ["completed"] * 3 + ["failed", "completed"])):
            run_id = f"eval-{i}"
            store.upsert_run(run_id=run_id, kind="eval", config={"protocol": protocol},
                             command=[], env={}, parent_id=parent)
            store.set_status(run_id, "running")
            store.set_status(run_id, status)
    return url


def test_the_synthetic_store_is_what_the_store_api_reads(synthetic):
    with Store.open(synthetic, create=False) as store:
        runs = store.find_runs(kind="pretrain")
        assert len(runs) == N_RUNS and {r.status for r in runs} == {"completed"}
        run = runs[123]
        assert store.params(run.run_id) == dict(flatten(run.config))
        history = store.metrics_frame(run.run_id)
        assert len(history) == 10 and not history.duplicated(["key", "step"]).any()
        for key, rows in history.groupby("key"):
            stats = store.summary_stats(run.run_id)[key]
            values = rows.sort_values("step")["value"]
            best = values.max() if key == "online_top1" else values.min()
            assert (stats["final"], stats["best"], stats["count"]) == (
                values.iloc[-1], best, len(values))


def test_runs_list_pages_back_from_the_newest_with_a_footer(synthetic, cli):
    """The first page holds the newest runs (the one just made is there), each page listed
    oldest first; --offset steps back in time."""
    every = [r.run_id for r in Store.open(synthetic, create=False).find_runs()]
    total = N_RUNS + 5
    assert len(every) == total
    page = cli("--db", synthetic, "runs", "list", "--format", "json", "--limit", "10",
               "--offset", "5")
    assert page.exit_code == 0, page.output
    assert [r["run_id"] for r in json.loads(page.stdout)] == every[-15:-5]
    whole = cli("--db", synthetic, "runs", "list", "--format", "json", "--limit", "0")
    assert [r["run_id"] for r in json.loads(whole.stdout)] == every
    first = cli("--db", synthetic, "runs", "list")
    assert first.exit_code == 0, first.output
    assert first.stdout.strip().splitlines()[-1] == (
        f"runs {total - 99}-{total} of {total}: the older ones with --offset 100")
    assert every[-1] in first.stdout and every[-100] in first.stdout
    assert every[-101] not in first.stdout
    oldest = cli("--db", synthetic, "runs", "list", "--offset", "200")
    assert every[0] in oldest.stdout and "older ones" not in oldest.stdout
    past = cli("--db", synthetic, "runs", "list", "--offset", "1000")
    assert past.stdout.strip() == "no runs before the newest 1000: lower --offset"
    filtered = cli("--db", synthetic, "runs", "list", "--kind", "eval", "--format", "json")
    assert [r["run_id"] for r in json.loads(filtered.stdout)] == [f"eval-{i}" for i in range(5)]
    frame = Store.open(synthetic, create=False).runs_frame(params=(), summaries=(), limit=3,
                                                           newest=True)
    assert list(frame["run_id"]) == every[-3:]


@pytest.mark.parametrize("args,needle", [(["--limit", "-1"], "--limit must be positive"),
                                         (["--offset", "-3"], "--offset must be >= 0")])
def test_runs_list_refuses_a_bad_page_in_one_line(synthetic, cli, args, needle):
    result = cli("--db", synthetic, "runs", "list", *args)
    assert result.exit_code == 1 and needle in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_pending_evaluations_are_what_each_run_lacks(synthetic):
    protocols = ("fast-linear", "knn")
    with Store.open(synthetic, create=False) as store:
        found = store.pending_evaluations(protocols)
        # Independently: every completed pretraining run, minus its completed evaluations.
        done = {(r.parent_id, r.config["protocol"]) for r in store.find_runs(
            kind="eval", status="completed")}
        expected = [(r.run_id, p) for r in store.find_runs(kind="pretrain", status="completed")
                    for p in protocols if (r.run_id, p) not in done]
    assert found == expected
    assert len(found) == 2 * N_RUNS - 4  # three knn and one fast-linear done; a failed one not


def test_upsert_runs_creates_the_new_ones_in_one_go(tmp_path):
    with Store.open(f"sqlite:///{tmp_path / 's.sqlite'}") as store:
        store.upsert_run(run_id="old", kind="pretrain", config={"dim": 1}, command=[], env={})
        runs = [NewRun("old", "pretrain", {"dim": 9}, [], {}),
                NewRun("new", "pretrain", {"dim": 2, "loss": {"t": 0.1}}, [], {}),
                NewRun("child", "eval", {"protocol": "knn"}, [], {}, parent_id="new")]
        assert store.upsert_runs(runs) == [False, True, True]
        assert store.params("old") == {"dim": 1} and store.params("new") == {"dim": 2,
                                                                              "loss.t": 0.1}
        assert store.get_run("child").parent_id == "new"
        with pytest.raises(UnknownRunError, match="parent run 'gone' of 'x'"):
            store.upsert_runs([NewRun("x", "eval", {}, [], {}, parent_id="gone")])
        assert store.count_runs() == 3


def test_run_id_prefixes_resolve_as_before(tmp_path):
    with Store.open(f"sqlite:///{tmp_path / 's.sqlite'}") as store:
        for run_id in ("abcd_123", "abcd%456", "abce0001"):
            store.upsert_run(run_id=run_id, kind="pretrain", config={}, command=[], env={})
        assert store.resolve_run_id("abcd_") == "abcd_123"  # '_' and '%' are literal
        assert store.resolve_run_id("abcd%") == "abcd%456"
        with pytest.raises(UnknownRunError, match="matches several runs"):
            store.resolve_run_id("abcd")
        with pytest.raises(UnknownRunError, match="no run 'abcf'"):
            store.resolve_run_id("abcf")


@pytest.mark.slow  # a benchmark end to end
def test_bench_store_on_tiny_sizes(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # an optional dependency: the note
    out = bench_store.run(runs=300, points=3000, steps=100, writers=3, writer_points=600,
                          step_s=0.0005, report_all=False, folder=tmp_path, configs=150)
    json.dumps(out)
    assert out["ingestion"]["mlflow_points_per_s"] is None and out["ingestion"]["ratio"] is None
    assert "pip install mlflow" in out["ingestion"]["note"]
    assert out["ingestion"]["sslbench_points_per_s"] > 0
    assert out["log_call"]["calls"] == 100 and out["log_call"]["mean_us"] > 0
    assert out["concurrent"]["points"] == 3 * 600  # every point stored, or run() raises
    large = out["large"]
    assert (large["runs"], large["configs"], large["metric_points"], large["eval_pending"]) == (
        300, 150, 3000, 600)
    assert large["report_all_s"] is None and out["targets_met"]["report_all_under_20s"] is None
    assert isinstance(out["targets_met"]["concurrent_100k_points_per_s"], bool)  # SQLite's
    assert len(large["table_s5_each_s"]) == 3
    assert large["table_s5_s"] == sorted(large["table_s5_each_s"])[1]
    assert list(Path(tmp_path).iterdir()) == []  # every store deleted


def test_bench_store_refuses_a_database_that_holds_a_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'busy.sqlite'}"
    with Store.open(url) as store:
        store.upsert_run(run_id="mine", kind="pretrain", config={}, command=[], env={})
    with pytest.raises(Exception, match="already holds an sslbench store"):
        bench_store.ingestion(url, tmp_path, steps=10)
    with Store.open(url) as store:
        assert store.count_runs() == 1
