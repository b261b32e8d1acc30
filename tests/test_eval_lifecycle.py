"""One lifecycle for every evaluation: ``eval``, ``duality`` and ``compare`` all go through
``sslbench.evaluate.run.evaluate``, so each protocol is registered once, keeps the run id it
always had, reuses a completed run instead of opening a new attempt, and fails the same way."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from sslbench.config import EVAL_PROTOCOLS, EvalConfig, replace
from sslbench.evaluate.compare import CKAConfig
from sslbench.evaluate.protocols import PROTOCOLS, ProtocolResult
from tests.conftest import TINY_TRAIN, completed, copy_home, invoke_in, run_cli, shared_home

if TYPE_CHECKING:
    from sslbench.db import Store

Trained = tuple[Path, str, str]  # a home with two completed tiny runs: (home, run A, run B)

# --------------------------------------------------------------------------- the registry

# A value other than the default for every field some protocol's id reads.
CHANGED = {"linear_epochs": 5, "batch_size": 64, "lr": 1.0, "probe_standardize": False,
           "probe_augment": "none", "samples": 7}


def test_every_protocol_is_registered_with_the_configs_id_fields() -> None:
    assert set(PROTOCOLS) == set(EvalConfig.PROTOCOL_FIELDS)
    assert set(EVAL_PROTOCOLS) <= set(PROTOCOLS)
    assert set(CHANGED) == {f for fields in EvalConfig.PROTOCOL_FIELDS.values() for f in fields}
    for name, protocol in PROTOCOLS.items():
        assert protocol.name == name
        assert protocol.id_fields == EvalConfig.PROTOCOL_FIELDS[name]


@pytest.mark.parametrize("name", sorted(set(PROTOCOLS) - {"cka"}))
def test_exactly_the_id_fields_change_the_run_id(name: str) -> None:
    base = EvalConfig(source_run="abc", protocol=name, probe_augment="flip")
    for field, value in CHANGED.items():
        changed = replace(base, **{field: value}).run_id != base.run_id
        assert changed == (field in PROTOCOLS[name].id_fields), field


def _comparison(samples: int = 64, **changes: Any) -> CKAConfig:
    run = EvalConfig(source_run="abc", method="simclr", dim=16, **changes)
    return CKAConfig((run, replace(run, source_run=None, method="random")), samples)


def test_the_cka_id_is_the_one_comparisons_always_had() -> None:
    """protocol, runs, samples, dataset hashed as before the registry (stored ones reused)."""
    cfg = _comparison()
    assert cfg.run_id == "6f6cd3e606dc"
    assert cfg.to_dict() == {"protocol": "cka", "runs": ["abc", "random"], "samples": 64,
                             "dataset": "shapes", "labels": ["simclr-16-abc", "random"]}
    assert PROTOCOLS["cka"].id_fields == ("samples",)
    assert _comparison(samples=32).run_id != cfg.run_id
    assert _comparison(linear_epochs=5, lr=1.0).run_id == cfg.run_id


# --------------------------------------------------------------------------- through the CLI

def _add_a_one_epoch_run(source: Path) -> Callable[[Path], list[str]]:
    def build(home: Path) -> list[str]:
        copy_home(source, home)
        result = invoke_in(home, "train", *TINY_TRAIN, "--epochs", "1")
        assert result.exit_code == 0, result.output
        with _store(home) as store:
            by_epochs = {r.config["epochs"]: r.run_id for r in store.find_runs(kind="pretrain")}
        return [by_epochs[2], by_epochs[1]]
    return build


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_simclr: Path) -> Trained:
    """A home holding two completed tiny runs (A: the session's 2-epoch `tiny_simclr` run,
    B: 1 epoch), built once per session; tests copy it."""
    home, (a, b) = shared_home(tmp_path_factory, "simclr-tiny-and-1-epoch",
                               _add_a_one_epoch_run(tiny_simclr))
    return home, a, b


def _store(home: Path) -> Store:
    from sslbench.db import Store

    return Store.open(f"sqlite:///{home / 'db' / 'sslbench.sqlite'}", create=False)


def _copy(trained: Trained, to: Path) -> Trained:
    source, a, b = trained
    return copy_home(source, to), a, b


def _ok(result: Any) -> str:
    """The stdout of a successful command, run in-process (the ``cli`` fixture's result) or
    through the real CLI (run_cli's)."""
    if not isinstance(result, subprocess.CompletedProcess):
        result = completed(result)
    assert result.returncode == 0, result.stdout + result.stderr
    return str(result.stdout)


def _only_eval(home: Path) -> Any:
    """The one evaluation run in the store (whichever command wrote it)."""
    with _store(home) as store:
        (run,) = store.find_runs(kind="eval")
        return run, store.attempts(run.run_id)


@pytest.mark.slow
def test_a_repeated_duality_reuses_its_eval_run(trained: Trained, home: Path, cli: Any) -> None:
    _, a, _ = _copy(trained, home)
    first = json.loads(_ok(cli("duality", a, "--samples", "128", "--format", "json")))
    again = _ok(cli("duality", a, "--samples", "128"))
    run, attempts = _only_eval(home)
    assert first["reused"] is False and first["run_id"] == a
    assert first["eval_run_id"] == run.run_id
    assert again.splitlines()[-1] == f"eval run {run.run_id} [reused]"
    assert f"{first['l_c']:.4g}" in again
    assert run.status == "completed" and run.parent_id == a
    assert run.config["protocol"] == "duality" and run.config["samples"] == 128
    assert [x["status"] for x in attempts] == ["completed"]


@pytest.mark.slow
def test_a_repeated_compare_reuses_its_eval_run(trained: Trained, home: Path, cli: Any) -> None:
    _, a, b = _copy(trained, home)
    args = ["compare", a, b, "--samples", "64"]
    first = json.loads(_ok(cli(*args, "--format", "json")))
    again = json.loads(_ok(cli(*args, "--format", "json")))
    table = _ok(cli(*args))
    run, attempts = _only_eval(home)
    assert (first["reused"], again["reused"]) == (False, True)
    assert first["eval_run_id"] == again["eval_run_id"] == run.run_id
    assert first["matrix"] == again["matrix"] and len(first["matrix"]) == 3
    assert first["runs"] == [a, b, "random"] == run.config["runs"]
    assert table.splitlines()[-1] == f"eval run {run.run_id} [reused]"
    assert run.status == "completed" and run.method == "cka" and run.parent_id is None
    assert [x["status"] for x in attempts] == ["completed"]


def test_no_cka_is_gone(cli: Any) -> None:
    result = cli("compare", "abc", "--no-cka")
    assert result.exit_code == 2 and "--no-cka" in result.output


@pytest.mark.slow
def test_a_protocol_failing_on_its_input_fails_the_run_once_in_one_line(
        trained: Trained, home: Path, cli: Any) -> None:
    _, a, _ = _copy(trained, home)
    checkpoint = home / "runs" / a / "checkpoint.pt"
    checkpoint.rename(checkpoint.with_suffix(".moved"))  # the backbone file stays: inputs pass
    result = run_cli(["duality", a, "--samples", "128"], home)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: no checkpoint at") and "Traceback" not in result.stderr
    run, attempts = _only_eval(home)
    assert run.status == "failed" and run.error == lines[0].removeprefix("error: ")
    assert [(x["status"], x["failure_class"]) for x in attempts] == [("failed", "input")]
    # Fixed, the same command computes it: a failed run is retried, never reused.
    checkpoint.with_suffix(".moved").rename(checkpoint)
    assert "[reused]" not in _ok(cli("duality", a, "--samples", "128"))
    run, attempts = _only_eval(home)
    assert [x["status"] for x in attempts] == ["failed", "completed"]


@pytest.mark.slow
def test_a_protocol_bug_fails_the_run_with_its_traceback(
        trained: Trained, home: Path, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _, a, b = _copy(trained, home)

    def broken(cfg: Any, cache: Any) -> ProtocolResult:
        raise RuntimeError("a bug in the protocol")

    monkeypatch.setitem(PROTOCOLS, "cka", dataclasses.replace(PROTOCOLS["cka"], run=broken))
    with pytest.raises(RuntimeError, match="a bug in the protocol"):
        cli("compare", a, b, "--samples", "64")
    run, attempts = _only_eval(home)
    assert run.status == "failed" and run.method == "cka"
    assert "Traceback" in run.error and "RuntimeError: a bug in the protocol" in run.error
    assert [(x["status"], x["failure_class"]) for x in attempts] == [("failed", "error")]


@pytest.mark.slow
def test_duality_refuses_a_run_that_a_live_process_owns(
        trained: Trained, home: Path, cli: Any) -> None:
    from sslbench.evaluate.run import eval_config_for

    _, a, _ = _copy(trained, home)
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with _store(home) as store:
            cfg = eval_config_for(store, a, protocol="duality", samples=128)
            store.upsert_run(run_id=cfg.run_id, kind="eval", config=cfg.to_dict(),
                             command=["t"], env={}, parent_id=a)
            store.set_status(cfg.run_id, "running", pid=owner.pid)
        result = cli("duality", a, "--samples", "128")
    finally:
        owner.kill()
        owner.wait()
    assert result.exit_code == 1 and f"owned by pid {owner.pid}" in result.output
    run, attempts = _only_eval(home)
    assert run.status == "running" and len(attempts) == 1
