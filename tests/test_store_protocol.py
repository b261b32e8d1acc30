"""The RunWriter protocol: the Store and the NullStore of non-zero ranks both implement it.

``runtime_checkable`` only checks that the method names exist; the signatures are compared here
one by one, so a method added to the protocol (or a parameter added to one) fails this test until
both implementations have it -- a rank > 0 must never die of a TypeError that rank 0 does not see.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sslbench.db.buffered import BufferedWriter
from sslbench.db.store import Store
from sslbench.db.writer import RunWriter
from sslbench.train.distributed import NullStore

METHODS = sorted(name for name, value in vars(RunWriter).items()
                 if callable(value) and not name.startswith("_"))


def _shape(fn: Callable[..., Any]) -> tuple[list[tuple[str, Any, Any, Any]], Any]:
    """Parameter names, kinds, defaults and resolved annotations (``self`` left out), and the
    resolved return annotation."""
    hints = typing.get_type_hints(fn)
    params = [(p.name, p.kind, p.default, hints.get(p.name))
              for p in list(inspect.signature(fn).parameters.values())[1:]]
    return params, hints.get("return")


def test_the_protocol_is_what_training_and_evaluation_write():
    assert METHODS == ["flush", "heartbeat", "log_artifact", "log_metrics", "log_series",
                       "set_status", "summary", "truncate_metrics"]


@pytest.mark.parametrize("writer", [NullStore, BufferedWriter])
def test_null_store_and_buffered_writer_match_the_protocol_exactly(writer):
    for name in METHODS:
        assert _shape(getattr(writer, name)) == _shape(getattr(RunWriter, name)), name


def test_null_store_is_a_run_writer():
    assert isinstance(NullStore(), RunWriter)


def test_null_store_drops_every_write():
    writer = NullStore()
    writer.set_status("r", "failed", error="e", failure_class="io")
    writer.log_metrics("r", 0, {"loss": 1.0}, epoch=1)
    writer.log_series("r", "sv", [1.0, 2.0], start=3)
    writer.log_artifact("r", "checkpoint", "/x.pt", size=1, sha256="0" * 64)
    writer.heartbeat("r")
    writer.truncate_metrics("r", 3)
    writer.flush()
    assert writer.summary("r") == {}


@pytest.mark.parametrize("name", METHODS)
def test_store_accepts_every_protocol_call(name):
    """Every protocol parameter is in the Store's method, same kind, default and type; the
    Store's extra parameters (``pid``, ``claim``: taking ownership) are optional keywords."""
    theirs, returns = _shape(getattr(Store, name))
    ours, expected = _shape(getattr(RunWriter, name))
    assert returns == expected
    by_name = {p[0]: p for p in theirs}
    for param in ours:
        assert by_name.get(param[0]) == param, (name, param)
    positional = [p for p in theirs if p[1] is not inspect.Parameter.KEYWORD_ONLY]
    assert positional == [p for p in ours if p[1] is not inspect.Parameter.KEYWORD_ONLY]
    extra = [p for p in theirs if p[0] not in {q[0] for q in ours}]
    assert all(p[1] is inspect.Parameter.KEYWORD_ONLY and p[2] is not inspect.Parameter.empty
               for p in extra), extra


def test_a_store_and_its_buffered_writer_are_run_writers(tmp_path: Path):
    with Store.open(f"sqlite:///{tmp_path / 's.sqlite'}") as store:
        assert isinstance(store, RunWriter)
        assert isinstance(BufferedWriter(store), RunWriter)


def _statically_both_are_writers(store: Store) -> list[RunWriter]:
    """Never called: mypy checks these assignments structurally (the same check, at type-check
    time)."""
    return [store, NullStore(), BufferedWriter(store)]
