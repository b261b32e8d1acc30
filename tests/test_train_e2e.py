"""Train -> store -> eval -> report, through the CLI, on tiny real data."""

from __future__ import annotations

import json
import math
import sqlite3

import numpy as np
import pytest

from tests.conftest import TINY_TRAIN, copy_home, invoke_in, shared_home

# Every test here trains or drives the real CLI end to end: seconds to a minute each.
pytestmark = pytest.mark.slow


def _json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _train_vicreg(home):
    return _json(invoke_in(home, "train", "--method", "vicreg", *TINY_TRAIN, "--format", "json"))


@pytest.fixture(scope="session")
def _trained_once(tmp_path_factory):
    """A home holding the completed tiny VICReg run, trained once per session; the train
    command's JSON output."""
    return shared_home(tmp_path_factory, "vicreg-tiny", _train_vicreg)


@pytest.fixture
def trained(_trained_once, home):
    """The tiny VICReg run (the train command's JSON output), in a copy of its home as this
    test's SSLBENCH_HOME."""
    source, run = _trained_once
    copy_home(source, home)
    return run


def test_train_records_everything(cli, home, trained):
    run = trained
    assert run["status"] == "completed" and run["method"] == "vicreg"
    assert run["dataset"] == "shapes"
    cfg = run["config"]
    # every hyperparameter of the resolved config is in the store, including resolved defaults
    for key, value in dict(method="vicreg", projector="64-d", dim=16, epochs=2, batch_size=64,
                           lr=0.3, seed=0, train_samples=256, optimizer="lars").items():
        assert cfg[key] == value
    assert cfg["loss"] == {"sim_coeff": 25.0, "std_coeff": 25.0, "cov_coeff": 1.0,
                           **{k: v for k, v in cfg["loss"].items()
                              if k not in ("sim_coeff", "std_coeff", "cov_coeff")}}
    assert 0.0 <= run["summary"]["online_top1"] <= 100.0
    shown = _json(cli("runs", "show", run["run_id"], "--format", "json"))
    assert shown["config"] == cfg
    assert {a["kind"] for a in shown["artifacts"]} >= {"checkpoint", "backbone"}
    env = shown["env"]
    for key in ("python", "torch", "torchvision", "host", "devices", "git_commit"):
        assert key in env


def test_metrics_and_params_read_back(cli, home, trained):
    from sslbench.db import Store

    store = Store.open()
    run_id = trained["run_id"]
    frame = store.metrics_frame(run_id)
    keys = set(frame["key"])
    assert {"loss", "inv", "var", "cov", "lr", "online_top1", "epoch_loss",
            "images_per_s"} <= keys
    # one online_top1 per epoch, no duplicated (key, step)
    assert len(frame[frame.key == "online_top1"]) == 2
    assert not frame.duplicated(["key", "step"]).any()
    assert store.summary(run_id)["online_top1"] == pytest.approx(
        frame[frame.key == "online_top1"].sort_values("step")["value"].iloc[-1])
    params = store.params(run_id)
    assert params["dim"] == 16 and params["loss.sim_coeff"] == 25.0
    # numeric params are queryable as numbers
    with sqlite3.connect(home / "db" / "sslbench.sqlite") as con:
        cols = [r[1] for r in con.execute("pragma table_info(params)")]
        assert "value_num" in cols
        hits = con.execute("select count(*) from params where key='dim' and value_num > 8"
                           ).fetchone()[0]
    assert hits == 1


def test_same_command_reuses_the_run(cli, home, trained):
    again = _json(cli("train", "--method", "vicreg", *TINY_TRAIN, "--format", "json"))
    assert again["run_id"] == trained["run_id"]
    listed = _json(cli("runs", "list", "--format", "json"))
    assert len(listed) == 1
    # an execution-only change (device) keeps the identity
    third = _json(cli("train", "--method", "vicreg", *TINY_TRAIN, "--device", "cpu",
                      "--format", "json"))
    assert third["run_id"] == trained["run_id"]


def test_online_probe_on_its_own_view_trains_the_same_backbone(cli, home, trained):
    """--probe-view offline: another run, whose probe learns from one view augmented as the
    offline probes' (flips on shapes) through the backbone in eval mode; the view is drawn
    after the step's two, so the backbone trains bit for bit as with --probe-view views, and
    whatever the probe's lr (the demo's change of its online probe)."""
    import torch

    from sslbench.db import Store

    run = _json(cli("train", "--method", "vicreg", *TINY_TRAIN, "--probe-view", "offline",
                    "--probe-lr", "0.3", "--format", "json"))
    assert run["run_id"] != trained["run_id"] and run["config"]["probe_view"] == "offline"
    assert trained["config"]["probe_view"] == "views"
    store = Store.open()
    frames = [store.metrics_frame(r["run_id"]).set_index(["key", "step"])["value"]
              for r in (trained, run)]
    criterion = ["loss", "inv", "var", "cov", "epoch_loss"]
    views, offline = (f[f.index.get_level_values("key").isin(criterion)] for f in frames)
    assert len(views) >= 6 and views.equals(offline)
    weights = [torch.load(home / "runs" / r["run_id"] / "backbone.pt",
                          weights_only=True)["backbone"] for r in (trained, run)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert frames[0].xs("online_top1", level="key").ne(
        frames[1].xs("online_top1", level="key")).any()


def test_eval_export_and_report(cli, home, trained):
    run_id = trained["run_id"]
    evs = _json(cli("eval", run_id, "--linear-epochs", "5", "--format", "json"))
    assert [e["config"]["protocol"] for e in evs] == ["fast-linear", "knn"]
    assert all(e["kind"] == "eval" and e["parent_id"] == run_id for e in evs)
    summary = {k: v for e in evs for k, v in e["summary"].items()}
    assert 0 <= summary["fast_linear_top1"] <= 100 and 0 <= summary["knn_top1"] <= 100
    assert len([k for k in summary if k.startswith("knn_top1/")]) == 36
    again = _json(cli("eval", run_id, "--linear-epochs", "5", "--format", "json"))
    assert [e["run_id"] for e in again] == [e["run_id"] for e in evs]
    base = _json(cli("eval", "--random-init", "--linear-epochs", "5", "--format", "json"))
    assert all(e["config"]["random_init"] is True for e in base)

    out = home / "feats.npz"
    result = cli("export-features", run_id, "--split", "test", "--out", out)
    assert result.exit_code == 0, result.output
    arrays = np.load(out)
    assert arrays["features"].dtype == np.float32 and arrays["labels"].dtype == np.int64
    assert arrays["features"].shape[0] == arrays["labels"].shape[0] > 0
    assert arrays["features"].shape[1] == 256  # the small backbone's representation

    table = _json(cli("report", "dims", "--metric", "fast_linear_top1", "--format", "json"))
    text = json.dumps(table)
    assert "vicreg" in text.lower() and "random" in text.lower()
    for fmt in ("table", "markdown", "csv", "latex"):
        assert cli("report", "dims", "--metric", "knn_top1", "--format", fmt).exit_code == 0


def test_pending_offline_linear_and_analysis(cli, home, trained):
    run_id = trained["run_id"]
    evs = _json(cli("eval", "--pending", "--protocol", "linear,analysis", "--linear-epochs",
                    "1", "--samples", "128", "--format", "json"))
    assert sorted(e["config"]["protocol"] for e in evs) == ["analysis", "linear"]
    assert all(e["parent_id"] == run_id for e in evs)
    summary = {k: v for e in evs for k, v in e["summary"].items()}
    assert 0 <= summary["linear_top1"] <= 100
    assert 1 <= summary["rankme_emb"] <= 16 and 1 <= summary["rankme_repr"] <= 256
    assert summary["n"] == 128 and summary["m"] == 16
    from sslbench.db import Store

    store = Store.open()
    analysis = next(e for e in evs if e["config"]["protocol"] == "analysis")
    sv = store.metrics_frame(analysis["run_id"], "sv_emb")
    assert len(sv) == 16 and (sv.sort_values("step")["value"].diff().dropna() <= 1e-9).all()
    pngs = [a for a in store.artifacts(analysis["run_id"]) if a["path"].endswith(".png")]
    assert len(pngs) == 2
    # nothing left to do
    assert _json(cli("eval", "--pending", "--protocol", "linear,analysis", "--format",
                     "json")) == []


def test_compare_cka(cli, home, trained):
    other = _json(cli("train", "--method", "simclr", *TINY_TRAIN, "--format", "json"))
    out = _json(cli("compare", trained["run_id"], other["run_id"], "--samples", "200",
                    "--format", "json"))
    m = np.array(out["matrix"])
    assert m.shape == (3, 3) and np.allclose(np.diag(m), 1) and np.allclose(m, m.T)
    assert out["labels"][-1] == "random"


def test_duality_on_run_and_random(cli, home, trained):
    rep = _json(cli("duality", trained["run_id"], "--samples", "128", "--format", "json"))
    assert rep["n"] == 128 and rep["m"] == 16
    assert rep["thm33_lhs"] == pytest.approx(rep["thm33_rhs"], rel=1e-9)
    rnd = _json(cli("duality", "--samples", "64", "--m", "32", "--format", "json"))
    assert math.isclose(rnd["thm33_lhs"], rnd["thm33_rhs"], rel_tol=1e-9)


def test_every_method_trains_one_step(cli, home):
    from sslbench.losses import criterion_names

    for name in criterion_names():
        result = cli("train", "--method", name, *TINY_TRAIN, "--epochs", "1",
                     "--train-samples", "64", "--format", "json")
        run = _json(result)
        assert run["status"] == "completed", name
        assert run["method"] == name


def test_non_finite_loss_stops_the_run_as_failed(cli, home, monkeypatch):
    import sslbench.losses as losses

    real = losses.build_criterion

    def exploding(name, **hp):
        crit = real(name, **hp)

        def forward(z1, z2):
            out = crit(z1, z2)
            out["cov"] = out["cov"] * float("nan")
            out["loss"] = out["loss"] + out["cov"]
            return out
        return forward
    monkeypatch.setattr(losses, "build_criterion", exploding)
    result = cli("train", "--method", "vicreg", *TINY_TRAIN)
    assert result.exit_code == 1
    assert "non-finite at step 0" in result.stderr and "cov" in result.stderr
    listed = _json(cli("runs", "list", "--format", "json"))
    assert listed[0]["status"] == "failed" and "cov" in listed[0]["error"]


def test_help_is_instant_and_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys, runpy; sys.argv=['sslbench','--help']\n"
            "try:\n    runpy.run_module('sslbench', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported by --help'\n"
            "assert 'pandas' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Commands" in out.stdout
