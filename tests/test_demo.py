"""`sslbench demo` takes its settings from one place, the shipped sweep file ``demo.toml``: an
edit there reaches the demo command and ``--preset tiny`` alike, and the command's own flags
(--epochs, --dims, --device) are laid over the file the way ``sslbench sweep --set`` would."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslbench.config import replace
from sslbench.runs import demo


@pytest.fixture
def edited_demo_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped sweep folder, copied with the demo's weight decay changed to 5e-4."""
    import sslbench.runs.sweepfile as sweepfile
    from sslbench import presets

    assert presets.DEMO_SWEEP_FILE == sweepfile.SHIPPED_DIR / "demo.toml"
    for path in sweepfile.SHIPPED_DIR.glob("*.toml"):
        (tmp_path / path.name).write_text(path.read_text())
    text = (tmp_path / "demo.toml").read_text()
    assert text.count("weight_decay = 1e-4") == 1
    (tmp_path / "demo.toml").write_text(text.replace("weight_decay = 1e-4", "weight_decay = 5e-4"))
    # Both readers look where the package ships the file; point both at the copy.
    monkeypatch.setattr(sweepfile, "SHIPPED_DIR", tmp_path)
    monkeypatch.setattr(presets, "DEMO_SWEEP_FILE", tmp_path / "demo.toml")
    return tmp_path / "demo.toml"


def test_an_edit_of_the_sweep_file_reaches_the_demo_and_the_tiny_preset(edited_demo_file):
    from sslbench.train.setup import resolve_train_config

    demo_runs = {(c.method, c.dim): c for c in demo.demo_configs(demo.demo_spec())}
    assert {c.weight_decay for c in demo_runs.values()} == {5e-4}
    for method in ("simclr", "vicreg"):  # each with its own [[override]]: lr and loss weights
        tiny = resolve_train_config({"preset": "tiny", "method": method})
        assert tiny.weight_decay == 5e-4 and tiny.run_id == demo_runs[(method, 64)].run_id


def test_integers_in_the_file_name_the_same_runs_through_both_readers(edited_demo_file):
    from sslbench.train.setup import resolve_train_config

    text = edited_demo_file.read_text().replace("epochs = 15", "epochs = 15\nmomentum = 1")
    edited_demo_file.write_text(text)
    demo_run = {c.dim: c for c in demo.demo_configs(demo.demo_spec()) if c.method == "simclr"}[64]
    tiny = resolve_train_config({"preset": "tiny", "method": "simclr"})
    assert tiny.momentum == demo_run.momentum == 1.0 and tiny.run_id == demo_run.run_id


def test_the_commands_flags_override_the_file():
    spec = demo.demo_spec(epochs=2, dims=[64, 16, 64], device="cpu")
    configs = demo.demo_configs(spec)
    assert [(c.method, c.dim) for c in configs] == [
        ("simclr", 64), ("simclr", 16), ("vicreg", 64), ("vicreg", 16)]  # a repeat is one run
    assert {(c.epochs, c.device, c.backbone) for c in configs} == {(2, "cpu", "tiny")}
    defaults = demo.demo_configs(demo.demo_spec())
    assert {c.epochs for c in defaults} == {15} and len(defaults) == 6


@pytest.mark.slow
def test_the_demo_runs_through_the_scheduler_and_a_rerun_reuses_every_run(tmp_path: Path):
    """`sslbench demo` as a user types it: its runs and evaluations go through the local
    scheduler (two workers), it prints each pretraining run's top-1s beside the random-init
    backbone's, then the dims table; a second call trains nothing."""
    from tests.conftest import run_cli

    args = ["demo", "--epochs", "1", "--dims", "16", "--device", "cpu", "--workers", "2"]
    first = run_cli(args, tmp_path, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    spec = demo.demo_spec(epochs=1, dims=[16], device="cpu")
    configs = demo.demo_configs(spec)
    assert "demo: 8 runs (8 to run, 0 reused) on cpu:0, cpu:1" in first.stdout
    lines = first.stdout.splitlines()
    for cfg in configs:  # method, dim, run id and three percentages (after the scheduler's log)
        row = next(line.split() for line in lines if line.startswith(f"{cfg.method} "))
        assert row[:3] == [cfg.method, "16", cfg.run_id]
        assert all(0 <= float(v) <= 100 for v in row[3:]) and len(row) == 6
    base = next(line.split() for line in lines if line.startswith("random-init backbone"))
    assert len(base) == 4 and all(0 <= float(v) <= 100 for v in base[2:])
    assert "fast_linear_top1 (%) by embedding dimension" in first.stdout
    assert "random init" in first.stdout
    again = run_cli(args, tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "demo: 8 runs (0 to run, 8 reused)" in again.stdout
    assert not [line for line in again.stdout.splitlines() if line.startswith("start ")]
    assert [line for line in again.stdout.splitlines() if line.startswith("simclr ")] == \
        [line for line in lines if line.startswith("simclr ")]


@pytest.mark.parametrize(("method", "dim", "study"), [
    ("simclr", 64, "demo-simclr"), ("vicreg", 64, "demo-vicreg"),
    ("vicreg", 16, "demo-vicreg-16")])
def test_the_demos_recipe_is_a_trial_of_its_shipped_study(method: str, dim: int, study: str):
    """Each of demo.toml's [[override]]s is a point of its shipped study (inside its space, on
    its base): the demo's run at the study's dim is that trial's run but for the online probe
    (its own view and lr in the demo; the backbone trains bit for bit the same,
    tests/test_train_e2e.py), so its fast-linear top-1 is the trial's."""
    from sslbench.runs.plan import resolve_sweep
    from sslbench.runs.tune import as_sweep
    from sslbench.runs.tunespec import load_tune

    spec = load_tune(study)
    assert spec.base["dim"] == dim
    demo_run = {c.dim: c for c in demo.demo_configs(demo.demo_spec()) if c.method == method}[dim]
    values = {**demo_run.to_dict(), **demo_run.loss}
    point = {param.name: values[param.name] for param in spec.space}
    for param in spec.space:
        assert param.low <= point[param.name] <= param.high, (param.name, point[param.name])
    [(_, trial)] = resolve_sweep(as_sweep(spec, point))
    assert (trial.probe_view, demo_run.probe_view) == ("views", "offline")
    probe = {"probe_view": demo_run.probe_view, "probe_lr": demo_run.probe_lr}
    assert replace(trial, **probe).run_id == demo_run.run_id
