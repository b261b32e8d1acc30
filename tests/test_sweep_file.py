"""Sweep files: grid expansion against an independent product, overrides, excludes, --set,
${VAR}, the shipped files, and every bad input as a one-line ConfigError."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from sslbench.errors import ConfigError
from sslbench.runs.sweepfile import expand, load_sweep, parse_set, shipped_sweeps


def _write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _one_line_error(info: pytest.ExceptionInfo, *needles: str) -> str:
    message = str(info.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


BASIC = """
name = "t"
[fixed]
dataset = "shapes"
epochs = 2
[grid]
method = ["simclr", "vicreg"]
dim = [16, 64, 256]
seed = [0, 1]
"""


def test_grid_is_the_cartesian_product_in_file_order(tmp_path):
    spec = load_sweep(_write(tmp_path, BASIC))
    cells = expand(spec)
    expected = [dict(method=m, dim=d, seed=s) for m in ("simclr", "vicreg")
                for d in (16, 64, 256) for s in (0, 1)]
    assert [c.coords for c in cells] == expected
    assert all(c.settings["dataset"] == "shapes" and c.settings["epochs"] == 2 for c in cells)
    assert cells[0].label == "method=simclr, dim=16, seed=0"
    assert spec.name == "t" and spec.tag == "sweep:t"


def test_overrides_and_excludes(tmp_path):
    text = BASIC + """
[[override]]
where = { method = "vicreg", dim = 256 }
set = { cov_coeff = 0.5, lr = 0.2 }
[[override]]
where = { dim = 256 }
set = { lr = 0.1 }
[[exclude]]
method = "simclr"
seed = 1
"""
    cells = expand(load_sweep(_write(tmp_path, text)))
    assert len(cells) == 12 - 3
    assert not any(c.coords["method"] == "simclr" and c.coords["seed"] == 1 for c in cells)
    for c in cells:
        big = c.coords["dim"] == 256
        assert c.settings.get("cov_coeff") == (0.5 if big and c.coords["method"] == "vicreg"
                                               else None)
        assert c.settings.get("lr") == (0.1 if big else None)  # later overrides win
    assert isinstance(cells[0].settings["epochs"], int)


def test_an_override_of_values_that_set_removed_is_dropped_not_refused(tmp_path):
    """--set dim=[64] narrows the grid away from an override's dim = 16 (as `sslbench demo
    --dims 64` does): that override applies to no cell, and the sweep still loads; an override
    that matches nothing while no --set replaced a key it names stays a mistake in the file."""
    text = BASIC + '[[override]]\nwhere = { method = "vicreg", dim = 16 }\nset = { lr = 0.5 }\n'
    path = _write(tmp_path, text)
    assert [c.settings.get("lr") for c in expand(load_sweep(path)) if c.coords["dim"] == 16] \
        == [None, None, 0.5, 0.5]
    narrowed = expand(load_sweep(path, ["dim=[64]"]))
    assert [c.coords["dim"] for c in narrowed] == [64] * 4
    assert all(c.settings.get("lr") is None for c in narrowed)
    typo = _write(tmp_path, text.replace("dim = 16 }", "dim = 32 }"))
    for sets in ([], ["seed=[0]"]):  # a --set, but of none of the override's keys
        with pytest.raises(ConfigError, match="matches no cell"):
            expand(load_sweep(typo, sets))


def test_numbers_are_normalised_ints_accepted_for_floats(tmp_path):
    spec = load_sweep(_write(tmp_path, BASIC.replace("epochs = 2", "epochs = 2\nlr = 1")))
    assert spec.fixed["lr"] == 1.0 and isinstance(spec.fixed["lr"], float)


def test_set_replaces_fixed_values_and_grid_axes(tmp_path):
    spec = load_sweep(_write(tmp_path, BASIC),
                      ["epochs=1", "dim=16", "seed=[3, 4, 5]", "data_root=/some/path"])
    assert spec.fixed["epochs"] == 1 and spec.fixed["data_root"] == "/some/path"
    assert spec.grid["dim"] == [16] and spec.grid["seed"] == [3, 4, 5]
    assert len(expand(spec)) == 2 * 1 * 3
    assert parse_set(["x=true", "y=0.5", "z=abc"]) == {"x": True, "y": 0.5, "z": "abc"}


def test_environment_variables_fill_placeholders(tmp_path):
    path = _write(tmp_path, BASIC.replace('dataset = "shapes"',
                                          'dataset = "shapes"\ndata_root = "${ROOT}/x"'))
    assert load_sweep(path, env={"ROOT": "/d"}).fixed["data_root"] == "/d/x"
    with pytest.raises(ConfigError) as info:
        load_sweep(path, env={})
    _one_line_error(info, "ROOT", "--set data_root=")
    assert load_sweep(path, ["data_root=/given"], env={}).fixed["data_root"] == "/given"


BAD = [
    ("unknown top key", BASIC + "\n[grids]\nx = [1]\n", "unknown key 'grids'"),
    ("unknown config key", BASIC.replace("epochs = 2", "epoch = 2"), "unknown key 'epoch'"),
    ("loss table", BASIC.replace("epochs = 2", "loss = {}"), "loss hyperparameters by name"),
    ("type error", BASIC.replace("epochs = 2", 'epochs = "2"'), "must be an integer"),
    ("bool for int", BASIC.replace("epochs = 2", "epochs = true"), "must be an integer"),
    ("grid type error", BASIC.replace("[16, 64, 256]", '[16, "64"]'), "must be an integer"),
    ("empty axis", BASIC.replace("[16, 64, 256]", "[]"), "empty grid axis"),
    ("empty grid", 'name = "t"\n[fixed]\nepochs = 1\n', "grid is empty"),
    ("duplicate value", BASIC.replace("[16, 64, 256]", "[16, 64, 16]"), "duplicate cell"),
    ("scalar axis", BASIC.replace("[16, 64, 256]", "16"), "must be a list"),
    ("fixed and grid", BASIC.replace("epochs = 2", "dim = 8"), "both in [fixed] and in [grid]"),
    ("bad name", BASIC.replace('name = "t"', 'name = "a b"'), "name = 'a b'"),
    ("unmatched override", BASIC + '[[override]]\nwhere = { dim = 999 }\nset = { lr = 1.0 }\n',
     "matches no cell"),
    ("override of grid key", BASIC + '[[override]]\nwhere = { dim = 16 }\nset = { dim = 8 }\n',
     "changes the grid key"),
    ("override shape", BASIC + '[[override]]\ndim = 16\n', "where = {"),
    ("unmatched exclude", BASIC + "[[exclude]]\nmethod = \"barlow\"\n", "matches no cell"),
    ("all excluded", BASIC + "[[exclude]]\nepochs = 2\n", "every cell of the grid is excluded"),
    ("bad protocol", BASIC + '[eval]\nprotocols = ["linaer"]\n', "unknown protocol 'linaer'"),
    ("bad eval option", BASIC + '[eval]\nprotocols = ["knn"]\nepochs = 3\n', "unknown key"),
    ("bad probe augment", BASIC + '[eval]\nprotocols = ["linear"]\nprobe_augment = "rot"\n',
     "unknown probe_augment 'rot'"),
    ("bad standardize", BASIC + '[eval]\nprotocols = ["linear"]\nprobe_standardize = 1\n',
     "probe_standardize"),
    ("bad attempts", BASIC + "[scheduler]\nmax_attempts = 0\n", "must be >= 1"),
    ("bad regex", BASIC + '[scheduler]\ntransient = ["("]\n', "not a valid regex"),
    ("bad slurm key", BASIC + '[slurm]\npartitions = "gpu"\n', "unknown Slurm option 'partitions'"),
    ("not toml", "name = \n", "not valid TOML"),
]


@pytest.mark.parametrize("text, needle", [(t, n) for _, t, n in BAD], ids=[b[0] for b in BAD])
def test_bad_sweep_files_are_one_line_errors(tmp_path, text, needle):
    with pytest.raises(ConfigError) as info:
        expand(load_sweep(_write(tmp_path, text)))
    _one_line_error(info, needle)


def test_bad_set_and_missing_file(tmp_path):
    path = _write(tmp_path, BASIC)
    for item, needle in (("epochs", "KEY=VALUE"), ("nope=1", "unknown key"),
                         ("dim=[]", "empty grid axis"), ("epochs=x", "must be an integer")):
        with pytest.raises(ConfigError) as info:
            load_sweep(path, [item])
        _one_line_error(info, needle)
    with pytest.raises(ConfigError) as info:
        load_sweep(tmp_path / "missing.toml")
    _one_line_error(info, "no sweep file", "demo")


def test_shipped_sweeps_parse_and_have_the_expected_grids():
    assert {"demo", "table-s5"} <= set(shipped_sweeps())
    demo = load_sweep("demo")
    assert [c.coords for c in expand(demo)] == [
        dict(method=m, dim=d) for m, d in itertools.product(("simclr", "vicreg"), (16, 64, 256))]
    assert demo.fixed["projector"] == "512-d" and demo.fixed["dataset"] == "shapes"
    assert demo.protocols == ("fast-linear", "knn") and demo.baseline
    s5 = load_sweep("table-s5", env={"IMAGENET_ROOT": "/imagenet"})
    cells = expand(s5)
    assert len(cells) == 4 * 4 * 5
    assert {c.coords["method"] for c in cells} == {"vicreg", "vicreg-exp", "vicreg-ctr",
                                                    "simclr"}
    assert {c.coords["projector"] for c in cells} == {"d-d-d", "8192-8192-d", "2048-d",
                                                       "2048-2048-d"}
    assert sorted({c.coords["dim"] for c in cells}) == [256, 512, 1024, 2048, 8192]
    assert s5.fixed["preset"] == "paper" and s5.fixed["data_root"] == "/imagenet"
    with pytest.raises(ConfigError) as info:
        load_sweep("table-s5", env={})
    _one_line_error(info, "IMAGENET_ROOT", "--set data_root")


def test_the_documented_example_is_a_valid_sweep(tmp_path):
    import sslbench.runs.sweepfile as module

    doc = module.__doc__
    start = doc.index("::\n") + 3
    block = doc[start:doc.index("\nKeys of")]
    text = "\n".join(line[4:] for line in block.splitlines())
    spec = load_sweep(_write(tmp_path, text), env={"IMAGENET_ROOT": "/data"})
    cells = expand(spec)
    assert len(cells) == 2 * 3 - 1 and spec.name == "dims"
    assert [c.settings.get("cov_coeff") for c in cells] == [None, None, None, None, 0.5]
    assert spec.slurm["setup"] == ["source ~/venv/bin/activate"]
