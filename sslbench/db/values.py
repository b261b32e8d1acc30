"""Pure conversions between Python values and store columns (no SQL here).

* Configs are flattened into dotted keys; each leaf becomes ``(value_type, value_text,
  value_num)``. Numbers and bools also land in ``value_num`` so that SQL can compare them as
  numbers (``WHERE key = 'lr' AND value_num > 0.1``); strings are stored as is (so
  ``value_text = 'simclr'`` works); lists, empty dicts and None are stored as JSON text.
* :func:`metric_goal` says whether a metric is better high or low.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

#: Substrings that mark an accuracy-like metric (better when higher).
_MAX_MARKERS = ("top1", "top5", "acc", "rank")


def metric_goal(key: str) -> str:
    """``"max"`` for accuracy-like keys (containing top1/top5/acc/rank), else ``"min"``."""
    low = key.lower()
    return "max" if any(marker in low for marker in _MAX_MARKERS) else "min"


def flatten(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(dotted_key, leaf)`` pairs; non-empty mappings are descended into.

    ``{"a": 1, "loss": {"tau": 0.1}}`` gives ``("a", 1), ("loss.tau", 0.1)``.
    """
    for key in sorted(config, key=str):
        value = config[key]
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from flatten(value, prefix=name + ".")
        else:
            yield name, value


#: What :func:`leaves` gives for a key that a config does not have.
MISSING: Any = object()


def leaves(configs: Sequence[Any], key: str, missing: Any = MISSING) -> list[Any]:
    """The leaf that :func:`flatten` names ``key`` (a dotted key: ``"loss.tau"``) in each of
    ``configs`` (JSON objects: dicts, lists and scalars), or ``missing``: the runs' param
    ``key``, read off their configs without flattening them. The dots can be read several ways
    (``"a.b"``: ``a`` then ``b``, or the key ``"a.b"`` itself): every config is walked the
    first way a level at a time, those where that finds no leaf the next way, and so on. A
    config has at most one leaf of a name (a store's params are keyed by name)."""
    found: list[Any] = [MISSING] * len(configs)
    todo: Sequence[int] = range(len(configs))
    names = key.split(".")
    for joins in itertools.product((False, True), repeat=len(names) - 1):
        path = [names[0]]
        for join, name in zip(joins, names[1:]):
            path[-1:] = [f"{path[-1]}.{name}"] if join else [path[-1], name]
        values = configs if len(todo) == len(configs) else [configs[i] for i in todo]
        for name in path:  # flatten descends into non-empty dicts only
            values = [v.get(name, MISSING) if type(v) is dict and v else MISSING
                      for v in values]
        for i, value in zip(todo, values):
            found[i] = MISSING if type(value) is dict and value else value
        todo = [i for i in todo if found[i] is MISSING]
        if not todo:
            break
    for i in todo:
        found[i] = missing
    return found


def encode_param(value: Any) -> tuple[str, str | None, float | None]:
    """One leaf -> ``(value_type, value_text, value_num)``.

    bool -> ("bool", "true"/"false", 1/0); int -> ("int", "128", 128.0); float -> ("float",
    repr, value, NaN as NULL); str -> ("str", text, None); None -> ("null", None, None);
    anything else (lists, tuples, empty dicts) -> ("json", JSON text, None).
    """
    if isinstance(value, bool):
        return "bool", "true" if value else "false", float(value)
    if isinstance(value, int):
        return "int", str(value), float(value)
    if isinstance(value, float):
        return "float", repr(value), None if math.isnan(value) else value
    if isinstance(value, str):
        return "str", value, None
    if value is None:
        return "null", None, None
    return "json", json.dumps(value, sort_keys=True, default=str), None


def decode_param(value_type: str, value_text: str | None) -> Any:
    """Inverse of :func:`encode_param` (``float("nan")`` and ``inf`` included)."""
    if value_type == "bool":
        return value_text == "true"
    if value_type == "int":
        return int(value_text or "0")
    if value_type == "float":
        return float(value_text or "nan")
    if value_type == "str":
        return value_text
    if value_type == "null" or value_text is None:
        return None
    return json.loads(value_text)


def to_metric_value(name: str, value: Any) -> float | None:
    """A metric as a float, NaN as None (stored as NULL). Non-numbers raise ValueError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"metric {name!r} must be a number, got {type(value).__name__}") from None
    return None if math.isnan(number) else number


def from_db_float(value: float | None) -> float:
    """A nullable float column back to a float, NULL as NaN."""
    return math.nan if value is None else float(value)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    if isinstance(obj, tuple):
        return list(obj)
    return str(obj)  # paths, enums, dtypes: their text is what a reader wants


def to_json(value: Mapping[str, Any]) -> str:
    """A mapping as sorted-key JSON (sets sorted, tuples as lists, anything else as its text)."""
    return json.dumps(dict(value), sort_keys=True, default=_json_default)


def recipe(config: Mapping[str, Any], method: str | None, dataset: str | None
           ) -> tuple[str, str]:
    """``(key, config_json)`` of a run's recipe: the config without its top-level ``seed`` as
    :func:`to_json` writes it, and the SHA-256 (hex) of that text with the run's method and
    dataset. Runs differing only in their seed share the key; a config read back from the store
    (``json.loads``) gives the key it was created with."""
    text = to_json({k: v for k, v in config.items() if k != "seed"})
    key = hashlib.sha256(json.dumps([text, method, dataset]).encode()).hexdigest()
    return key, text


#: The prefix of the tags that record which Slurm job ran a run (``slurm:1234_0``): where a
#: run ran, not what it is, so they stay out of its tag set.
JOB_TAG = "slurm:"


def tagset(tags: Iterable[str]) -> tuple[str, str]:
    """``(key, tags_json)`` of a run's tag set: its tags but the Slurm job tags
    (:data:`JOB_TAG`), unique and sorted, as JSON, and the SHA-256 (hex) of that text. The
    reports group runs by recipe and tag set: the seeds of a recipe that different jobs ran,
    or that were tagged in another order, stay one group."""
    text = json.dumps(sorted({t for t in tags if not t.startswith(JOB_TAG)}))
    return hashlib.sha256(text.encode()).hexdigest(), text
