"""Every bad input a user can type: exit code 1, one line naming the problem, no traceback,
and nothing written to the store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.conftest import TINY_TRAIN, run_cli


def assert_one_line_error(result, *needles: str) -> str:
    """The one line of an expected error (exit code 1, no traceback), checked for ``needles``."""
    assert result.exit_code == 1, result.output
    err = result.stderr.strip() if hasattr(result, "stderr") else result.output.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    for needle in needles:
        assert needle in err, err
    return err


def _run_count(home: Path) -> int:
    db = home / "db" / "sslbench.sqlite"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        return con.execute("select count(*) from runs").fetchone()[0]


@pytest.mark.parametrize("flags,needles", [
    (["--method", "simclrr"], ["simclrr", "vicreg"]),
    (["--dataset", "imagenet-2k"], ["imagenet-2k", "shapes"]),
    (["--backbone", "vit"], ["vit", "resnet18"]),
    (["--projector", "8192--d"], ["8192--d"]),
    (["--projector", "abc"], ["abc"]),
    (["--projector", "0-d"], ["0-d"]),
    (["--epochs", "0"], ["--epochs"]),
    (["--batch-size", "0"], ["--batch-size"]),
    (["--dim", "-3"], ["--dim"]),
    (["--lr", "0"], ["--lr"]),
    (["--method", "vicreg", "--batch-size", "1"], ["--batch-size", "vicreg"]),
    (["--method", "simclr", "--batch-size", "1"], ["--batch-size"]),
    (["--method", "simclr", "--lambd", "0.1"], ["--lambd", "simclr"]),
    (["--optimizer", "adam"], ["adam", "lars"]),
    (["--probe-view", "clean"], ["clean", "offline"]),
    (["--device", "cuda:7"], ["cuda"]),
    (["--preset", "paper", "--method", "barlow"], ["barlow", "Table S6"]),
    (["--preset", "galaxy"], ["galaxy"]),
    (["--dataset", "cifar10", "--data-root", "/nonexistent/cifar"], ["/nonexistent/cifar"]),
])
def test_train_bad_input(cli, home, flags, needles):
    result = cli("train", *TINY_TRAIN, *flags)
    if "--device" in flags:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA device exists here")
    assert_one_line_error(result, *needles)
    assert _run_count(home) == 0
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())


@pytest.mark.slow
def test_unknown_run_id(cli, home):
    cli("train", *TINY_TRAIN, "--epochs", "1")
    for args in (["eval", "feedbeefcafe"], ["runs", "show", "feedbeefcafe"],
                 ["export-features", "feedbeefcafe", "--out", "x.npz"],
                 ["duality", "feedbeefcafe"]):
        result = cli(*args)
        assert_one_line_error(result, "feedbeefcafe")


def test_unreachable_database(cli, home):
    result = cli("--db", "postgresql://nobody@127.0.0.1:1/sslbench", "runs", "list")
    assert_one_line_error(result)


def test_foreign_database(cli, home):
    foreign = home / "other.sqlite"
    with sqlite3.connect(foreign) as con:
        con.execute("create table invoices (id integer primary key, total real)")
    result = cli("--db", f"sqlite:///{foreign}", "train", *TINY_TRAIN)
    assert_one_line_error(result, str(foreign.name))
    with sqlite3.connect(foreign) as con:
        tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
    assert tables == {"invoices"}


@pytest.mark.slow
def test_other_schema_version(cli, home):
    cli("train", *TINY_TRAIN, "--epochs", "1")
    db = home / "db" / "sslbench.sqlite"
    from sslbench.db import SCHEMA_VERSION

    with sqlite3.connect(db) as con:
        tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
        meta = "meta" if "meta" in tables else next(t for t in tables if "meta" in t)
        con.execute(f"update {meta} set value = ? where key = 'schema_version'",
                    (str(SCHEMA_VERSION + 1),))
    result = cli("runs", "list")
    assert_one_line_error(result, str(SCHEMA_VERSION + 1))


def test_eval_needs_run_or_random_init(cli, home):
    assert_one_line_error(cli("eval"), "--random-init")


@pytest.mark.parametrize("command", [("eval", "--random-init"), ("bench", "eval")])
def test_bad_probe_augment(cli, home, command):
    assert_one_line_error(cli(*command, "--probe-augment", "rotate"), "rotate", "crop-flip")
    assert _run_count(home) == 0


def test_bad_format(cli, home):
    assert_one_line_error(cli("runs", "list", "--format", "yaml"), "yaml")


@pytest.mark.slow
def test_errors_through_the_real_cli(home):
    """As a user types it: a real process, exit code 1, one line on stderr, no traceback."""
    proc = run_cli(["train", "--method", "nope", "--quiet"], home, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "nope" in proc.stderr
