"""--preset paper reproduces Table S6 exactly; explicit flags override; bad combinations fail."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from sslbench.errors import ConfigError
from sslbench.presets import table_s6
from sslbench.train.setup import resolve_train_config

S6 = (Path(__file__).resolve().parents[1] / "sslbench" / "report" / "published"
      / "table_s6_hparams.csv")
NAMES = {"VICReg": "vicreg", "VICReg-exp": "vicreg-exp", "VICReg-ctr": "vicreg-ctr",
         "SimCLR-Tuned": "simclr"}


def _rows():
    with open(S6) as fh:
        yield from csv.DictReader(fh)


def _dims(text: str) -> list[int]:
    all_dims = [256, 512, 1024, 2048, 8192]
    if text in ("All", "all", ""):
        return all_dims
    if text.startswith("not-"):
        return [d for d in all_dims if d != int(text[4:])]
    return [int(text)]


def test_paper_preset_matches_table_s6_cell_for_cell():
    checked = 0
    for row in _rows():
        method = NAMES[row["method"]]
        for dim in _dims(row["dims"]):
            cfg = resolve_train_config({"preset": "paper", "method": method, "dim": dim,
                                        "data_root": "/unused"})
            assert cfg.batch_size == int(row["batch_size"]) and cfg.lr == float(row["base_lr"])
            assert (cfg.backbone, cfg.epochs, cfg.optimizer, cfg.weight_decay) == (
                "resnet50", 100, "lars", 1e-6)
            assert cfg.warmup_epochs == 10 and cfg.projector == "8192-8192-d" and cfg.dim == dim
            expected = {"sim_coeff": row["sim"], "std_coeff": row["var"], "cov_coeff": row["cov"],
                        "temperature": row["tau"]}
            for key, value in expected.items():
                if value not in ("", "-", "–"):
                    assert cfg.loss[key] == pytest.approx(float(value)), (method, dim, key)
            checked += 1
    assert checked == 20  # 5 VICReg + 5 VICReg-exp + 5 VICReg-ctr + 5 SimCLR-Tuned cells


def test_explicit_flags_override_the_preset():
    cfg = resolve_train_config({"preset": "paper", "method": "vicreg", "dim": 512,
                                "batch_size": 256, "projector": "2048-d"}, {"cov_coeff": 3.0})
    assert cfg.batch_size == 256 and cfg.projector == "2048-d" and cfg.loss["cov_coeff"] == 3.0
    assert cfg.loss["sim_coeff"] == 25.0 and cfg.lr == 0.3
    assert cfg.preset == "paper"
    plain = resolve_train_config({"preset": "paper", "method": "vicreg", "dim": 512})
    assert plain.run_id != cfg.run_id


def test_preset_is_not_identity_only_its_values_are():
    a = resolve_train_config({"preset": "tiny", "method": "simclr"})
    values = {k: v for k, v in a.to_dict().items()
              if k not in ("preset", "loss", "data_root", "device", "num_workers", "log_every")}
    b = resolve_train_config(values, dict(a.loss))
    assert a.run_id == b.run_id


def test_tiny_preset_is_the_demo_sweeps_run_at_dim_64():
    """--preset tiny reads the demo's one definition (sweeps/demo.toml): same runs, same ids."""
    from sslbench.runs.plan import resolve_sweep
    from sslbench.runs.sweepfile import load_sweep

    demo = {(c.method, c.dim): c.run_id for _, c in resolve_sweep(load_sweep("demo"))}
    for method in ("simclr", "vicreg"):
        assert resolve_train_config({"preset": "tiny", "method": method}).run_id == \
            demo[(method, 64)]


@pytest.mark.parametrize("method,dim", [("barlow", 512), ("vicreg", 300), ("scl", 2048)])
def test_paper_preset_without_a_row(method, dim):
    with pytest.raises(ConfigError, match="preset paper"):
        resolve_train_config({"preset": "paper", "method": method, "dim": dim})


def test_table_s6_function_spot_checks():
    assert table_s6("vicreg", 256)["loss"]["cov_coeff"] == 4.0
    assert table_s6("vicreg", 8192)["loss"]["cov_coeff"] == 0.5
    assert table_s6("vicreg-exp", 8192)["lr"] == 0.8 and table_s6("vicreg-exp", 512)["lr"] == 0.5
    assert table_s6("simclr", 1024) == {"batch_size": 2048, "lr": 0.5,
                                        "loss": {"temperature": 0.15}}
