"""`sslbench demo` takes its settings from one place, the shipped sweep file ``demo.toml``: an
edit there reaches the demo command and ``--preset tiny`` alike, and the command's own flags
(--epochs, --dims, --device) are laid over the file the way ``sslbench sweep --set`` would."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslbench.runs import demo


@pytest.fixture
def edited_demo_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped sweep folder, copied with the demo's learning rate changed to 0.005."""
    import sslbench.runs.sweepfile as sweepfile
    from sslbench import presets

    assert presets.DEMO_SWEEP_FILE == sweepfile.SHIPPED_DIR / "demo.toml"
    for path in sweepfile.SHIPPED_DIR.glob("*.toml"):
        (tmp_path / path.name).write_text(path.read_text())
    text = (tmp_path / "demo.toml").read_text()
    assert text.count("lr = 0.002") == 1
    (tmp_path / "demo.toml").write_text(text.replace("lr = 0.002", "lr = 0.005"))
    # Both readers look where the package ships the file; point both at the copy.
    monkeypatch.setattr(sweepfile, "SHIPPED_DIR", tmp_path)
    monkeypatch.setattr(presets, "DEMO_SWEEP_FILE", tmp_path / "demo.toml")
    return tmp_path / "demo.toml"


def test_an_edit_of_the_sweep_file_reaches_the_demo_and_the_tiny_preset(edited_demo_file):
    from sslbench.train.setup import resolve_train_config

    demo_runs = {(c.method, c.dim): c for c in demo.demo_configs(demo.demo_spec())}
    assert {c.lr for c in demo_runs.values()} == {0.005}
    tiny = resolve_train_config({"preset": "tiny", "method": "vicreg"})
    assert tiny.lr == 0.005 and tiny.run_id == demo_runs[("vicreg", 64)].run_id


def test_integers_in_the_file_name_the_same_runs_through_both_readers(edited_demo_file):
    from sslbench.train.setup import resolve_train_config

    text = edited_demo_file.read_text().replace("lr = 0.005", "lr = 1")
    edited_demo_file.write_text(text)
    demo_run = {c.dim: c for c in demo.demo_configs(demo.demo_spec()) if c.method == "simclr"}[64]
    tiny = resolve_train_config({"preset": "tiny", "method": "simclr"})
    assert tiny.lr == demo_run.lr == 1.0 and tiny.run_id == demo_run.run_id


def test_the_commands_flags_override_the_file():
    spec = demo.demo_spec(epochs=2, dims=[64, 16, 64], device="cpu")
    configs = demo.demo_configs(spec)
    assert [(c.method, c.dim) for c in configs] == [
        ("simclr", 64), ("simclr", 16), ("vicreg", 64), ("vicreg", 16)]  # a repeat is one run
    assert {(c.epochs, c.device, c.lr, c.backbone) for c in configs} == {(2, "cpu", 0.002, "tiny")}
    defaults = demo.demo_configs(demo.demo_spec())
    assert {c.epochs for c in defaults} == {10} and len(defaults) == 6


def test_one_baseline_per_backbone_with_the_commands_device():
    spec = demo.demo_spec(device="cpu")
    bases = demo.demo_baselines(spec, demo.demo_configs(spec), "cpu")
    assert [(b.method, b.backbone, b.dataset, b.device) for b in bases] == [
        ("random", "tiny", "shapes", "cpu")]
