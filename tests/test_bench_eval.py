"""`sslbench bench eval` end to end at a tiny size: the JSON it prints and what it measured."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_bench_eval_compares_both_protocols(tmp_path, monkeypatch):
    from sslbench.bench import eval as bench_eval

    monkeypatch.setenv("SSLBENCH_HOME", str(tmp_path))
    result = bench_eval.run(pretrain_epochs=1, linear_epochs=2, device="cpu")
    assert result["dataset"] == "shapes" and result["probe_augment"] == "flip"
    assert result["fast_s"] > 0 and result["paper_s"] > 0
    assert result["speedup"] == pytest.approx(result["paper_s"] / result["fast_s"], rel=0.1)
    assert 0 <= result["fast_top1"] <= 100 and 0 <= result["paper_top1"] <= 100
    assert result["top1_delta"] == round(result["fast_top1"] - result["paper_top1"], 2)
    assert list(tmp_path.iterdir()) == []  # it worked in a temporary home of its own


def test_bench_eval_json_through_the_cli(cli, monkeypatch):
    from sslbench.bench import eval as bench_eval

    seen = {}

    def fake_run(**kwargs):
        seen.update(kwargs)
        return {"speedup": 21.0, "top1_delta": 0.1}

    monkeypatch.setattr(bench_eval, "run", fake_run)
    out = cli("bench", "eval", "--probe-augment", "crop-flip", "--format", "json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == {"speedup": 21.0, "top1_delta": 0.1}
    assert seen["probe_augment"] == "crop-flip"
