"""Tuning specs: a TOML search space over train options, read and checked before anything exists.

A tuning spec (``sslbench tune SPEC.toml``; see ``sslbench/runs/studies/*.toml``)::

    name = "simclr-lr"                   # the study's name (default: the file name)
    description = "SimCLR's learning rate and temperature on shapes"
    trials = 24                          # default for --trials

    [base]                               # like a sweep's [fixed]: any train option, preset or
    method = "simclr"                    # loss hyperparameter every trial shares
    dataset = "shapes"
    epochs = 10

    [space]                              # what the sampler chooses, per trial
    lr = { low = 1e-4, high = 1e-2, log = true }   # a float range (linear unless log)
    temperature = { low = 0.05, high = 0.5 }
    dim = { low = 16, high = 256, step = 16 }      # an int range: the option is an integer
    batch_size = [64, 128, 256]                    # choices (also: { choices = [...] })

    [objective]                          # what the study maximises (or minimises)
    metric = "fast_linear_top1"          # a metric of the protocol below, or of the
    protocol = "fast-linear"             # pretraining run itself when no protocol is given
    direction = "maximize"               # (its final value, e.g. online_top1)

    [sampler]
    name = "tpe"                         # tpe, random or grid (grid: choices only)
    seed = 0

    [pruner]                             # stops a trial early on its per-epoch metric
    name = "median"                      # median, asha (successive halving) or none
    metric = "online_top1"               # online_top1 (maximize) or epoch_loss (minimize)
    min_epochs = 1                       # never before this many epochs
    startup_trials = 3                   # median: trials that finish before any is pruned
    reduction_factor = 3                 # asha: 1/3 of the trials go on at each rung

    [[start]]                            # points tried first, in order (e.g. a known recipe);
    lr = 0.002                           # every space key, each value within its range
    temperature = 0.2

    [eval]                               # options of the objective's evaluation, as a sweep's
    [scheduler]                          # as a sweep's
    [slurm]                              # as a sweep's

A bad spec -- unknown keys, a space key that is no option, an empty, inverted or (log) non-positive
range, an objective no run stores -- is one ConfigError naming the file. This module imports
neither Optuna nor torch; :mod:`sslbench.runs.tune` turns the spec into a study.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sslbench.config import EPOCH_METRICS, EVAL_PROTOCOLS, PROTOCOL_METRICS
from sslbench.errors import ConfigError
from sslbench.runs import sbatch
from sslbench.runs.sweepfile import (
    check_settings,
    check_value,
    checked_name,
    eval_section,
    find_toml_file,
    loss_key_types,
    parse_set,
    read_toml,
    scheduler_section,
    substitute,
    toml_table,
    train_key_types,
)

TOP_KEYS = ("name", "description", "trials", "base", "space", "start", "objective", "sampler",
            "pruner", "eval", "scheduler", "slurm")
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "asha", "none")
DIRECTIONS = ("maximize", "minimize")
#: The per-epoch metrics a pruner may watch, with the direction in which they improve.
PRUNE_METRICS = {"online_top1": "maximize", "epoch_loss": "minimize"}


@dataclass(frozen=True)
class Param:
    """One dimension of the space: a float or int range (``log``, ``step``) or choices."""

    name: str
    kind: str  # "float", "int" or "choice"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "choice":
            return {"choices": list(self.choices)}
        out: dict[str, Any] = {"type": self.kind, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class TuneSpec:
    name: str
    path: Path
    description: str = ""
    trials: int | None = None
    base: dict[str, Any] = field(default_factory=dict)
    space: tuple[Param, ...] = ()
    start: tuple[dict[str, Any], ...] = ()
    metric: str = "online_top1"
    protocol: str | None = None
    direction: str = "maximize"
    sampler: str = "tpe"
    seed: int = 0
    pruner: str = "median"
    prune_metric: str = "online_top1"
    min_epochs: int = 1
    startup_trials: int = 3
    reduction_factor: int = 3
    eval_options: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=dict)
    slurm: dict[str, Any] = field(default_factory=dict)
    #: Train settings every trial takes unless the base or the space sets them (the backend's:
    #: ``SweepSpec.defaults``); not part of the study's signature.
    defaults: dict[str, Any] = field(default_factory=dict)

    def signature(self) -> dict[str, Any]:
        """What a study keeps of its spec: a rerun of the study must match all of it, since
        the trials already told were measured under it (the sampler and the trial budget may
        change; the pruner is rebuilt from it by every worker)."""
        return {"base": self.base, "space": {p.name: p.to_dict() for p in self.space},
                "objective": {"metric": self.metric, "protocol": self.protocol,
                              "direction": self.direction},
                "eval": self.eval_options,
                "pruner": {"name": self.pruner, "metric": self.prune_metric,
                           "min_epochs": self.min_epochs, "startup_trials": self.startup_trials,
                           "reduction_factor": self.reduction_factor}}

    def grid_size(self) -> int:
        """How many points the space has (grid sampler: choices only)."""
        return math.prod(len(p.choices) for p in self.space)


SHIPPED_DIR = Path(__file__).with_name("studies")


def find_tune_file(source: str | Path) -> Path:
    """A path to a TOML file, or the name of a shipped spec (``sslbench/runs/studies/``)."""
    return find_toml_file(source, SHIPPED_DIR, "tuning spec")


def load_tune(source: str | Path, sets: list[str] | tuple[str, ...] = (),
              env: Mapping[str, str] | None = None) -> TuneSpec:
    """Read and check a tuning spec; ``sets`` (``KEY=VALUE``) replace values of ``[base]``."""
    path = find_tune_file(source)
    return build_tune(read_toml(path, "tuning spec"), path, parse_set(sets),
                      os.environ if env is None else env)


def build_tune(data: Mapping[str, Any], path: Path, sets: Mapping[str, Any],
               env: Mapping[str, str]) -> TuneSpec:
    where = str(path)
    name = checked_name(data, path, TOP_KEYS, "a tuning spec")
    trials = data.get("trials")
    if trials is not None and (check_value(where, "trials", trials, int) < 1):
        raise ConfigError(f"{where}: trials must be >= 1, got {trials}")
    types = {**train_key_types(), **loss_key_types()}
    base = check_settings(f"{where} [base]", toml_table(data, "base", where), types)
    for key, value in sets.items():
        if key not in types:
            raise ConfigError(f"--set {key}: unknown key; valid keys: {', '.join(sorted(types))}")
        base[key] = check_value("--set", key, value, types[key])
    base = {k: substitute(where, k, v, env) for k, v in base.items()}
    space = tuple(_param(f"{where} [space]", key, raw, types)
                  for key, raw in toml_table(data, "space", where).items())
    if not space:
        raise ConfigError(f"{where}: the search space is empty: add a [space] table, e.g. "
                          "lr = { low = 1e-4, high = 1e-2, log = true }")
    both = sorted(set(base) & {p.name for p in space})
    if both:
        raise ConfigError(f"{where}: {both[0]} is both in [base] and in [space]: keep one")
    start = _start(where, data.get("start", []), space, types)
    objective = _objective(where, toml_table(data, "objective", where))
    sampler = _sampler(where, toml_table(data, "sampler", where), space)
    pruner = _pruner(where, toml_table(data, "pruner", where), objective["direction"])
    _, options, _ = eval_section(where, toml_table(data, "eval", where))
    return TuneSpec(name=name, path=path, description=str(data.get("description", "")),
                    trials=trials, base=base, space=space, start=start, **objective, **sampler,
                    **pruner, eval_options=options,
                    scheduler=scheduler_section(where, toml_table(data, "scheduler", where)),
                    slurm=sbatch.check_table(f"{where} [slurm]",
                                             toml_table(data, "slurm", where)))


def _param(where: str, key: str, raw: Any, types: Mapping[str, type]) -> Param:
    if key not in types:
        raise ConfigError(f"{where}: unknown option {key!r}; the space ranges over train options "
                          f"and loss hyperparameters: {', '.join(sorted(types))}")
    kind = types[key]
    if isinstance(raw, dict) and set(raw) == {"choices"}:
        raw = raw["choices"]
    if isinstance(raw, list):
        if not raw:
            raise ConfigError(f"{where}: {key} = [] has no choices: give at least one")
        values = tuple(check_value(where, key, v, kind) for v in raw)
        if len(set(values)) != len(values):
            raise ConfigError(f"{where}: {key} lists a choice twice: remove the repeat")
        return Param(key, "choice", choices=values)
    if not isinstance(raw, dict) or not {"low", "high"} <= set(raw) \
            or set(raw) - {"low", "high", "log", "step"}:
        raise ConfigError(f"{where}: {key} must be a range {{ low = ..., high = ... }} (with "
                          "optional log = true or step = ...) or a list of choices")
    if kind not in (int, float):
        raise ConfigError(f"{where}: {key} is {kind.__name__} option: give it a list of choices, "
                          "not a range")
    low, high = (check_value(where, f"{key}.{b}", raw[b], kind) for b in ("low", "high"))
    log = check_value(where, f"{key}.log", raw.get("log", False), bool)
    step = raw.get("step")
    if step is not None:
        step = check_value(where, f"{key}.step", step, kind)
        if step <= 0:
            raise ConfigError(f"{where}: {key}.step must be positive, got {step}")
        if log:
            raise ConfigError(f"{where}: {key} has both log = true and a step: keep one")
    if not low < high:
        raise ConfigError(f"{where}: {key} = {{ low = {low}, high = {high} }} is "
                          f"{'empty' if low == high else 'inverted'}: low must be below high "
                          "(a single value belongs in [base])")
    if log and low <= 0:
        raise ConfigError(f"{where}: {key} is a log range from {low}: a log range must start "
                          "above 0")
    return Param(key, "int" if kind is int else "float", low, high, log, step)


def _start(where: str, raw: Any, space: tuple[Param, ...],
           types: Mapping[str, type]) -> tuple[dict[str, Any], ...]:
    if not isinstance(raw, list) or not all(isinstance(p, dict) for p in raw):
        raise ConfigError(f"{where}: start must be an array of tables ([[start]])")
    params = {p.name: p for p in space}
    out = []
    for i, point in enumerate(raw):
        label = f"{where} [[start]] #{i + 1}"
        if set(point) != set(params):
            missing = sorted(set(params) - set(point)) or sorted(set(point) - set(params))
            raise ConfigError(f"{label}: a start point gives every key of [space] and no other "
                              f"({missing[0]!r} does not fit)")
        checked = check_settings(label, point, {k: types[k] for k in params})
        for key, value in checked.items():
            p = params[key]
            inside = value in p.choices if p.kind == "choice" else p.low <= value <= p.high
            if not inside:
                raise ConfigError(f"{label}: {key} = {value} is outside the space "
                                  f"({p.to_dict()})")
        out.append(checked)
    return tuple(out)


def _objective(where: str, table: Mapping[str, Any]) -> dict[str, Any]:
    label = f"{where} [objective]"
    check_settings(label, table, {"metric": str, "protocol": str, "direction": str})
    protocol = table.get("protocol")
    if protocol is not None and protocol not in EVAL_PROTOCOLS:
        raise ConfigError(f"{label}: unknown protocol {protocol!r}; use "
                          f"{', '.join(EVAL_PROTOCOLS)}, or none for a pretraining metric")
    metric = table.get("metric", "online_top1")
    known = PROTOCOL_METRICS[protocol] if protocol else EPOCH_METRICS
    if metric not in known:
        source = f"the {protocol} protocol" if protocol else "a pretraining run"
        raise ConfigError(f"{label}: no run stores {metric!r} as the metric of {source}; "
                          f"choose {', '.join(known)}"
                          + ("" if protocol else ", or name a protocol (protocol = "
                             "\"fast-linear\")"))
    direction = table.get("direction", "maximize")
    if direction not in DIRECTIONS:
        raise ConfigError(f"{label}: direction must be maximize or minimize, got {direction!r}")
    return {"metric": metric, "protocol": protocol, "direction": direction}


def _sampler(where: str, table: Mapping[str, Any], space: tuple[Param, ...]) -> dict[str, Any]:
    label = f"{where} [sampler]"
    check_settings(label, table, {"name": str, "seed": int})
    name = table.get("name", "tpe")
    if name not in SAMPLERS:
        raise ConfigError(f"{label}: unknown sampler {name!r}; use {', '.join(SAMPLERS)}")
    ranges = [p.name for p in space if p.kind != "choice"]
    if name == "grid" and ranges:
        raise ConfigError(f"{label}: the grid sampler needs choices, but {ranges[0]} is a range: "
                          "list its values")
    seed = table.get("seed", 0)
    if seed < 0:
        raise ConfigError(f"{label}: seed must be >= 0, got {seed}")
    return {"sampler": name, "seed": seed}


def _pruner(where: str, table: Mapping[str, Any], direction: str) -> dict[str, Any]:
    label = f"{where} [pruner]"
    check_settings(label, table, {"name": str, "metric": str, "min_epochs": int,
                                  "startup_trials": int, "reduction_factor": int})
    name = table.get("name", "median")
    if name not in PRUNERS:
        raise ConfigError(f"{label}: unknown pruner {name!r}; use {', '.join(PRUNERS)}")
    metric = table.get("metric", "online_top1")
    if metric not in PRUNE_METRICS:
        raise ConfigError(f"{label}: the pruner watches a per-epoch metric: "
                          f"{', '.join(PRUNE_METRICS)}, not {metric!r}")
    if name != "none" and PRUNE_METRICS[metric] != direction:
        raise ConfigError(f"{label}: {metric} improves by going {PRUNE_METRICS[metric][:3]}, but "
                          f"the study's direction is {direction}: watch "
                          f"{'online_top1' if direction == 'maximize' else 'epoch_loss'}")
    out = {"pruner": name, "prune_metric": metric, "min_epochs": table.get("min_epochs", 1),
           "startup_trials": table.get("startup_trials", 3),
           "reduction_factor": table.get("reduction_factor", 3)}
    for key, least in (("min_epochs", 1), ("startup_trials", 0), ("reduction_factor", 2)):
        if out[key] < least:
            raise ConfigError(f"{label}: {key} must be >= {least}, got {out[key]}")
    return out
