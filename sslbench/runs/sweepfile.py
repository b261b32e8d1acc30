"""Sweep files: a TOML grid over config keys, read and checked before anything is queued.

A sweep file (see ``sslbench/runs/sweeps/*.toml`` for complete examples)::

    name = "dims"                          # tags its runs sweep:dims (default: the file name)
    description = "SimCLR vs VICReg across embedding dims"

    [fixed]                                # settings every cell shares
    dataset = "shapes"
    epochs = 6
    data_root = "${IMAGENET_ROOT}"         # ${VAR}: from the environment (or --set data_root=...)

    [grid]                                 # the cartesian product of these lists, in this order
    method = ["simclr", "vicreg"]
    dim = [16, 64, 256]

    [[override]]                           # per-cell settings: the paper's per-dim loss weights
    where = { method = "vicreg", dim = 256 }
    set = { cov_coeff = 0.5, devices_per_run = 2 }

    [[exclude]]                            # cells to leave out
    method = "simclr"
    dim = 16

    [eval]                                 # evaluations queued after each pretraining run
    protocols = ["fast-linear", "knn"]
    baseline = true                        # plus a random-init baseline per backbone/dataset

    [scheduler]                            # defaults for the command-line flags
    max_attempts = 3
    transient = ["NCCL timeout"]           # regexes: errors matching them are retried

    [slurm]                                # sbatch options for --backend slurm
    partition = "gpu"                      # (sslbench.runs.sbatch.OPTIONS lists every key)
    time = "1-00:00:00"
    setup = ["source ~/venv/bin/activate"] # shell lines run before each task

Keys of ``[fixed]``, ``[grid]``, ``where``, ``set`` and ``[[exclude]]`` are ``TrainConfig`` fields
(``preset`` included), loss hyperparameters (``temperature``, ``cov_coeff``, ...) or execution
settings (:data:`EXECUTION_KEYS`: ``devices_per_run``, the processes a run is trained with; not
part of its config, so not of its id). Unknown
keys, wrong types, numbers that are not finite or do not fit in 64 bits, empty grids, repeated
grid values, overrides that match no cell (unless ``--set`` replaced a key their ``where`` names)
and files that are not UTF-8 are one-line ConfigErrors naming the file. This module imports
neither torch nor the store; the loss hyperparameter names come from ``sslbench.losses`` when a
file is checked.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from sslbench.config import (
    EVAL_PROTOCOLS,
    INT64_MAX,
    PROBE_AUGMENTS,
    EvalConfig,
    TrainConfig,
    replace,
    validate_eval,
)
from sslbench.errors import ConfigError
from sslbench.runs import sbatch

SHIPPED_DIR = Path(__file__).with_name("sweeps")
TOP_KEYS = ("name", "description", "fixed", "grid", "override", "exclude", "eval", "scheduler",
            "slurm")
EVAL_OPTION_KEYS = ("linear_epochs", "batch_size", "lr", "probe_augment", "probe_standardize",
                    "samples", "device", "num_workers")
SCHEDULER_KEYS = {"max_attempts": int, "transient": list, "per_device": int, "workers": int}
#: Cell settings that say how a run executes, not what it computes: they are not in its config
#: and do not change its id (``sslbench.runs.plan`` reads them).
EXECUTION_KEYS: dict[str, type] = {"devices_per_run": int}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


@dataclass(frozen=True)
class Override:
    where: dict[str, Any]
    values: dict[str, Any]
    #: Its ``where`` names a value that ``--set`` replaced: matching no cell is then the
    #: narrowed grid's doing (``sslbench demo --dims 64``), not a mistake in the file.
    narrowed: bool = False


@dataclass(frozen=True)
class Cell:
    """One grid cell: its grid coordinates and every setting (TrainConfig fields + loss keys)."""

    index: int
    coords: dict[str, Any]
    settings: dict[str, Any]

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.coords.items())

    @property
    def devices_per_run(self) -> int:
        """The processes (devices) its pretraining run is trained with (1 unless set)."""
        return int(self.settings.get("devices_per_run", 1))


@dataclass(frozen=True)
class SweepSpec:
    name: str
    path: Path
    description: str = ""
    fixed: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    overrides: tuple[Override, ...] = ()
    excludes: tuple[dict[str, Any], ...] = ()
    protocols: tuple[str, ...] = ()
    eval_options: dict[str, Any] = field(default_factory=dict)
    baseline: bool = False
    scheduler: dict[str, Any] = field(default_factory=dict)
    slurm: dict[str, Any] = field(default_factory=dict)
    #: What groups the runs: "sweep", or "tune" for a tuning study's trials (its runs' tag).
    kind: str = "sweep"
    #: Train settings every cell takes unless it sets them (the backend's, e.g. a Slurm CPU
    #: task's threads: ``sslbench.runs.sbatch.run_defaults``).
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return f"{self.kind}:{self.name}"


# --------------------------------------------------------------------------- keys and types

def loss_key_types() -> dict[str, type]:
    """Every loss hyperparameter of every criterion, with the type of its default."""
    from sslbench.losses import CRITERIA, criterion_defaults

    out: dict[str, type] = {}
    for method in CRITERIA:
        for key, default in criterion_defaults(method).items():
            out.setdefault(key, float if isinstance(default, int) and not isinstance(
                default, bool) else type(default))
    return out


def train_key_types() -> dict[str, type]:
    """TrainConfig fields a sweep may set (all but the resolved ``loss`` mapping)."""
    return {f.name: _TYPES[str(f.type)] for f in dataclasses.fields(TrainConfig)
            if str(f.type) in _TYPES}


def _type_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            list: "a list"}.get(kind, kind.__name__)


def check_value(where: str, key: str, value: Any, kind: type) -> Any:
    """``value`` as ``kind`` (ints are accepted for numbers), else a one-line ConfigError.
    TOML reads ``nan`` and ``inf`` as floats: numbers must also be finite."""
    integer = isinstance(value, int) and not isinstance(value, bool)
    if integer and kind in (int, float) and abs(value) > INT64_MAX:
        raise ConfigError(f"{where}: {key} = {value} is too large: use at most {INT64_MAX} "
                          "(2**63-1)")
    if kind is float and integer:
        return float(value)
    if not isinstance(value, kind) or (kind is int and not integer):
        raise ConfigError(f"{where}: {key} = {value!r} must be {_type_name(kind)}, got "
                          f"{type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {key} must be a finite number, got {value}")
    return value


def check_settings(where: str, table: Mapping[str, Any], types: Mapping[str, type],
                    *, lists: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in types:
            hint = " (set loss hyperparameters by name, e.g. cov_coeff)" if key == "loss" else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint}; valid keys: "
                              f"{', '.join(sorted(types))}")
        if lists:
            if not isinstance(value, list):
                raise ConfigError(f"{where}: {key} must be a list of values, got "
                                  f"{type(value).__name__} (put single values in [fixed])")
            if not value:
                raise ConfigError(f"{where}: {key} = [] is an empty grid axis: give it at least "
                                  "one value or remove it")
            out[key] = [check_value(where, key, v, types[key]) for v in value]
            seen: list[Any] = []
            for v in out[key]:
                if v in seen:
                    raise ConfigError(f"{where}: {key} lists {v!r} twice (a duplicate cell): "
                                      "remove the repeat")
                seen.append(v)
        else:
            out[key] = check_value(where, key, value, types[key])
    return out


# --------------------------------------------------------------------------- loading

def shipped_sweeps() -> dict[str, Path]:
    """The sweep files that ship with sslbench, by name (``demo``, ``table-s5``, ...)."""
    return shipped_files(SHIPPED_DIR)


def shipped_files(folder: Path) -> dict[str, Path]:
    """The TOML files of a folder of the package, by name."""
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def find_toml_file(source: str | Path, folder: Path, what: str) -> Path:
    """A path to a TOML file, or the name of a file shipped in ``folder`` (a ``what``)."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    shipped = shipped_files(folder)
    if str(source) in shipped:
        return shipped[str(source)]
    raise ConfigError(f"no {what} {str(source)!r}: give a path to a .toml file or the name of a "
                      f"shipped one ({', '.join(shipped) or 'none'})")


def find_sweep_file(source: str | Path) -> Path:
    """A path to a TOML file, or the name of a shipped sweep."""
    return find_toml_file(source, SHIPPED_DIR, "sweep file")


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``["epochs=2", "data_root=/x", "dim=[16,64]"]`` -> values parsed as TOML (else text)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r} must look like KEY=VALUE, e.g. --set epochs=2")
        try:
            out[key] = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = text.strip()
    return out


def load_sweep(source: str | Path, sets: Sequence[str] = (),
               env: Mapping[str, str] | None = None) -> SweepSpec:
    """Read, check and return a sweep; ``sets`` (``KEY=VALUE``) replace fixed values or grid
    axes; ``${VAR}`` in strings comes from ``env`` (default: the environment)."""
    path = find_sweep_file(source)
    data = read_toml(path, "sweep")
    return build_spec(data, path, parse_set(sets), os.environ if env is None else env)


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The TOML document at ``path`` (a ``what`` file), or a one-line ConfigError."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: byte {err.object[err.start]:#04x} at offset {err.start} is "
                          f"not UTF-8: save the {what} file as UTF-8 TOML") from None
    except OSError as err:
        raise ConfigError(f"cannot read the {what} file {path}: {err.strerror}") from None


def checked_name(data: Mapping[str, Any], path: Path, top_keys: Sequence[str],
                 what: str) -> str:
    """The document's name (default: the file's stem), after refusing top-level keys that
    ``what`` (e.g. "a sweep file") does not have."""
    unknown = sorted(set(data) - set(top_keys))
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; {what} has "
                          f"{', '.join(top_keys)}")
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(f"{path}: name = {name!r} must be letters, digits, '.', '_' or '-' "
                          "(at most 64)")
    return name


def build_spec(data: Mapping[str, Any], path: Path, sets: Mapping[str, Any],
               env: Mapping[str, str]) -> SweepSpec:
    """The checked :class:`SweepSpec` of a parsed TOML document."""
    where = str(path)
    name = checked_name(data, path, TOP_KEYS, "a sweep file")
    types = {**train_key_types(), **loss_key_types(), **EXECUTION_KEYS}
    fixed = check_settings(f"{where} [fixed]", toml_table(data, "fixed", where), types)
    grid = check_settings(f"{where} [grid]", toml_table(data, "grid", where), types, lists=True)
    both = sorted(set(fixed) & set(grid))
    if both:
        raise ConfigError(f"{where}: {both[0]} is both in [fixed] and in [grid]: keep one")
    fixed, grid = _apply_sets(where, fixed, grid, sets, types)
    if not grid:
        raise ConfigError(f"{where}: the grid is empty: add a [grid] table with at least one "
                          "key and its list of values, e.g. seed = [0]")
    fixed = {k: substitute(where, k, v, env) for k, v in fixed.items()}
    grid = {k: [substitute(where, k, v, env) for v in vs] for k, vs in grid.items()}
    overrides = tuple(_override(where, i, o, types, fixed, grid, set(sets))
                      for i, o in enumerate(_array(data, "override", where)))
    excludes = tuple(check_settings(f"{where} [[exclude]] #{i + 1}", e, types)
                     for i, e in enumerate(_array(data, "exclude", where)))
    protocols, options, baseline = eval_section(where, toml_table(data, "eval", where))
    return SweepSpec(name=name, path=path, description=str(data.get("description", "")),
                     fixed=fixed, grid=grid, overrides=overrides, excludes=excludes,
                     protocols=protocols, eval_options=options, baseline=baseline,
                     scheduler=scheduler_section(where, toml_table(data, "scheduler", where)),
                     slurm=sbatch.check_table(f"{where} [slurm]",
                                              toml_table(data, "slurm", where)))


def toml_table(data: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be a table ([{key}]), got {type(value).__name__}")
    return value


def _array(data: Mapping[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{where}: {key} must be an array of tables ([[{key}]])")
    return value


def _apply_sets(where: str, fixed: dict[str, Any], grid: dict[str, list[Any]],
                sets: Mapping[str, Any], types: Mapping[str, type]
                ) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    fixed, grid = dict(fixed), dict(grid)
    for key, value in sets.items():
        if key not in types:
            raise ConfigError(f"--set {key}: unknown key; valid keys: {', '.join(sorted(types))}")
        if isinstance(value, list) or key in grid:
            values = value if isinstance(value, list) else [value]
            grid.update(check_settings(f"--set {key}", {key: values}, types, lists=True))
            fixed.pop(key, None)
        else:
            fixed[key] = check_value("--set", key, value, types[key])
    return fixed, grid


def substitute(where: str, key: str, value: Any, env: Mapping[str, str]) -> Any:
    if not isinstance(value, str) or "${" not in value:
        return value

    def lookup(match: re.Match[str]) -> str:
        var = match.group(1)
        if not env.get(var):
            raise ConfigError(f"{where}: {key} needs the environment variable {var}, which is "
                              f"not set: export {var}=... or pass --set {key}=...")
        return env[var]
    return _VAR_RE.sub(lookup, value)


def _override(where: str, index: int, raw: Mapping[str, Any], types: Mapping[str, type],
              fixed: Mapping[str, Any], grid: Mapping[str, list[Any]],
              replaced: set[str]) -> Override:
    label = f"{where} [[override]] #{index + 1}"
    extra = sorted(set(raw) - {"where", "set"})
    if extra or not isinstance(raw.get("where"), dict) or not isinstance(raw.get("set"), dict):
        raise ConfigError(f"{label}: write it as where = {{ key = value, ... }} and "
                          "set = { key = value, ... }")
    cond = check_settings(f"{label} where", raw["where"], types)
    for key in cond:
        if key not in grid and key not in fixed:
            raise ConfigError(f"{label}: where uses {key!r}, which is neither a grid key nor a "
                              "fixed setting")
    values = check_settings(f"{label} set", raw["set"], types)
    clash = sorted(set(values) & set(grid))
    if clash:
        raise ConfigError(f"{label}: set changes the grid key {clash[0]!r}: use [[exclude]] "
                          "and another grid value instead")
    return Override(cond, values, narrowed=bool(replaced & set(cond)))


def eval_section(where: str, table: Mapping[str, Any]
                  ) -> tuple[tuple[str, ...], dict[str, Any], bool]:
    label = f"{where} [eval]"
    protocols = table.get("protocols", [])
    if not isinstance(protocols, list) or not all(isinstance(p, str) for p in protocols):
        raise ConfigError(f"{label}: protocols must be a list of names, e.g. "
                          '["fast-linear", "knn"]')
    for protocol in protocols:
        if protocol not in EVAL_PROTOCOLS:
            raise ConfigError(f"{label}: unknown protocol {protocol!r}; use "
                              f"{', '.join(EVAL_PROTOCOLS)}")
    if len(set(protocols)) != len(protocols):
        raise ConfigError(f"{label}: protocols lists a protocol twice")
    baseline = check_value(label, "baseline", table.get("baseline", False), bool)
    eval_types = {f.name: _TYPES[str(f.type)] for f in dataclasses.fields(EvalConfig)
                  if f.name in EVAL_OPTION_KEYS}
    options = check_settings(label, {k: v for k, v in table.items()
                                      if k not in ("protocols", "baseline")}, eval_types)
    if options.get("probe_augment", "auto") not in (*PROBE_AUGMENTS, "auto"):
        raise ConfigError(f"{label}: unknown probe_augment {options['probe_augment']!r}; use "
                          f"{', '.join(PROBE_AUGMENTS)} or auto")
    numbers = {k: v for k, v in options.items() if k != "probe_augment"}
    try:
        validate_eval(replace(EvalConfig(), **numbers))
    except ConfigError as err:
        raise ConfigError(f"{label}: {err}") from None
    return tuple(protocols), options, baseline


def scheduler_section(where: str, table: Mapping[str, Any]) -> dict[str, Any]:
    out = check_settings(f"{where} [scheduler]", table, SCHEDULER_KEYS)
    for key in ("max_attempts", "per_device", "workers"):
        if key in out and out[key] < 1:
            raise ConfigError(f"{where} [scheduler]: {key} must be >= 1, got {out[key]}")
    patterns = out.get("transient", [])
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ConfigError(f"{where} [scheduler]: transient must list regex strings")
        try:
            re.compile(pattern)
        except re.error as err:
            raise ConfigError(f"{where} [scheduler]: transient pattern {pattern!r} is not a "
                              f"valid regex ({err})") from None
    return out


# --------------------------------------------------------------------------- expansion

def _matches(cond: Mapping[str, Any], settings: Mapping[str, Any]) -> bool:
    return all(settings.get(k) == v for k, v in cond.items())


def expand(spec: SweepSpec) -> list[Cell]:
    """The cells of the grid, in file order, with excludes removed and overrides applied."""
    keys = list(spec.grid)
    cells: list[Cell] = []
    used_overrides, used_excludes = set(), set()
    for combo in itertools.product(*(spec.grid[k] for k in keys)):
        coords = dict(zip(keys, combo))
        settings = {**spec.fixed, **coords}
        hit = [i for i, ex in enumerate(spec.excludes) if _matches(ex, settings)]
        used_excludes.update(hit)
        if hit:
            continue
        for i, override in enumerate(spec.overrides):
            if _matches(override.where, {**spec.fixed, **coords}):
                settings.update(override.values)
                used_overrides.add(i)
        cells.append(Cell(len(cells), coords, settings))
    for i, override in enumerate(spec.overrides):
        if i not in used_overrides and not override.narrowed:
            raise ConfigError(f"{spec.path} [[override]] #{i + 1}: where = {override.where} "
                              "matches no cell of the grid: fix its values or remove it")
    for i, ex in enumerate(spec.excludes):
        if i not in used_excludes:
            raise ConfigError(f"{spec.path} [[exclude]] #{i + 1}: {ex} matches no cell of the "
                              "grid: fix its values or remove it")
    if not cells:
        raise ConfigError(f"{spec.path}: every cell of the grid is excluded: nothing to run")
    return cells
