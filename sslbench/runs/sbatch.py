"""Slurm submission options: one table (:data:`OPTIONS`) behind the ``[slurm]`` table of sweep and
tuning files and ``--slurm KEY=VALUE``, checked before anything is submitted or written, turned
into submitit's parameters and the ``#SBATCH`` lines a dry run shows, and sbatch's refusals read
back as one line naming the option to change. A run of several processes becomes one task group
(:func:`task_shape`): ``nodes`` x ``ntasks-per-node`` tasks, one process each.

Everything here is checked without the store: an unknown key, a value of the wrong type, a time
limit Slurm would not parse, an extra sbatch argument that is not one of sbatch's options (its own
``sbatch --help`` is the list, where sbatch is installed), GPUs asked of a partition whose nodes
have none, task groups that no node holds (``sinfo``). This module imports neither torch nor the
store.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from sslbench.errors import ConfigError

_TIME_FORMS = "minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"
_TIME_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_MEM_RE = re.compile(r"^\d+[KMGT]?$", re.I)
_ARG_RE = re.compile(r"^--([a-z][a-z0-9-]*)(?:=(.+))?$")


def parse_time(where: str, value: Any) -> int:
    """A Slurm time limit in whole minutes (seconds round up); ints are minutes."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ConfigError(f"{where}: must be at least 1 minute, got {value}")
        return value
    match = _TIME_RE.match(str(value).strip())
    if not isinstance(value, str) or match is None:
        raise ConfigError(f"{where}: {value!r} is not a Slurm time limit: use {_TIME_FORMS} "
                          "(e.g. time = \"1-00:00:00\")")
    days, first, second, third = (int(g) if g else None for g in match.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = days * 86400 + (first or 0) * 3600 + (second or 0) * 60 + (third or 0)
    elif third is not None:  # HH:MM:SS
        seconds = (first or 0) * 3600 + (second or 0) * 60 + third
    elif second is not None:  # MM:SS
        seconds = (first or 0) * 60 + second
    else:  # minutes
        seconds = (first or 0) * 60
    if seconds <= 0:
        raise ConfigError(f"{where}: {value!r} is zero: give each task at least a minute")
    return -(-seconds // 60)


def _mem(where: str, value: Any) -> str:
    if not isinstance(value, str) or not _MEM_RE.match(value.strip()):
        raise ConfigError(f"{where}: {value!r} is not a Slurm memory size: use a number "
                          "with an optional K, M, G or T suffix (e.g. mem = \"16G\")")
    return value.strip()


def _at_least(minimum: int) -> Callable[[str, Any], int]:
    def check(where: str, value: Any) -> int:
        if value < minimum:
            raise ConfigError(f"{where}: must be >= {minimum}, got {value}")
        return int(value)
    return check


def _lines(where: str, value: Any) -> list[str]:
    if not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: must be a list of strings")
    return list(value)


@dataclass(frozen=True)
class Option:
    """One submission option: its ``[slurm]`` / ``--slurm`` key, the sbatch option it becomes,
    the TOML types it takes, and the check that normalises its value."""

    key: str
    sbatch: str
    types: tuple[type, ...]
    help: str
    check: Callable[[str, Any], Any] | None = None


OPTIONS: tuple[Option, ...] = (
    Option("partition", "--partition", (str,), "partition to submit to"),
    Option("account", "--account", (str,), "account charged for the tasks"),
    Option("qos", "--qos", (str,), "quality of service"),
    Option("time", "--time", (str, int), f"time limit of each task ({_TIME_FORMS})", parse_time),
    Option("cpus_per_task", "--cpus-per-task", (int,), "CPUs of each task", _at_least(1)),
    Option("gpus_per_node", "--gpus-per-node", (int,), "GPUs of each task", _at_least(0)),
    Option("mem", "--mem", (str,), "memory of each task, e.g. 16G", _mem),
    Option("constraint", "--constraint", (str,), "node features required"),
    Option("exclude", "--exclude", (str,), "nodes to leave out"),
    Option("array_parallelism", "--array", (int,), "tasks running at once (the array's %N)",
           _at_least(1)),
    Option("setup", "", (list,), "shell lines each task runs first", _lines),
    Option("sbatch_args", "", (list,), "any other sbatch options, e.g. --reservation=NAME",
           lambda where, value: check_sbatch_args(where, _lines(where, value))),
)
BY_KEY = {o.key: o for o in OPTIONS}
#: Keys of earlier sslbench versions, still read: key -> (option, conversion).
RENAMED: dict[str, tuple[str, Callable[[int], Any]]] = {
    "timeout_min": ("time", lambda minutes: minutes), "mem_gb": ("mem", lambda gb: f"{gb}G")}
#: sbatch options submitit writes itself, and those of the named keys: never in sbatch_args.
_MANAGED = {"array", "output", "error", "signal", "open-mode", "job-name", "wckey", "hold"}
_NAMED = {o.sbatch.lstrip("-"): o.key for o in OPTIONS if o.sbatch and o.sbatch != "--array"}


def keys_help() -> str:
    return ", ".join(f"{o.key} ({o.help})" for o in OPTIONS)


# --------------------------------------------------------------------------- checking

def check_table(where: str, table: Mapping[str, Any]) -> dict[str, Any]:
    """A ``[slurm]`` table checked and normalised (``time`` in minutes, renamed keys mapped)."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        name, convert = RENAMED.get(key, (key, None))
        option = BY_KEY.get(name)
        if option is None:
            raise ConfigError(f"{where}: unknown Slurm option {key!r}; valid keys: "
                              f"{', '.join(BY_KEY)} (any other sbatch option goes in "
                              "sbatch_args = [\"--name=value\"])")
        if convert is not None:
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
            value = convert(value)
        if name in out:
            raise ConfigError(f"{where}: {name} is given twice ({key}): keep one")
        if isinstance(value, bool) or not isinstance(value, option.types):
            kinds = " or ".join(t.__name__ for t in option.types)
            raise ConfigError(f"{where}: {key} must be {kinds}, got {value!r}")
        out[name] = option.check(f"{where} {key}", value) if option.check else value
    return out


def with_flags(options: Mapping[str, Any], pairs: Sequence[str]) -> dict[str, Any]:
    """``options`` (a checked ``[slurm]`` table) with ``--slurm KEY=VALUE`` pairs over it; list
    keys (setup, sbatch_args) add to the table's list."""
    out = dict(options)
    given: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--slurm {pair!r}: use --slurm KEY=VALUE, e.g. --slurm "
                              "partition=gpu")
        name = RENAMED.get(key, (key, None))[0]
        types = (int,) if key in RENAMED else getattr(BY_KEY.get(name), "types", (str,))
        if types == (list,):
            given[key] = [*given.get(key, out.get(name, [])), text]
        elif int in types and text.strip().lstrip("-").isdigit():
            given[key] = int(text)
        else:
            given[key] = text
    checked = check_table("--slurm", given)
    out.update(checked)
    return out


def run_defaults(options: Mapping[str, Any]) -> dict[str, Any]:
    """Train settings the runs of a Slurm submission take unless the sweep sets them.

    A CPU task's ``cpus_per_task`` becomes its runs' intra-op ``threads``: the task was given
    those CPUs to train with. It is a setting of the run, not something the task works out when
    it starts, so it is recorded with the run (``sslbench.numerics``) and every later attempt,
    local or on Slurm, computes with the same count. A sweep that sets ``threads`` keeps its own.
    GPU tasks leave it alone: their CPUs feed the data loaders."""
    cpus = int(options.get("cpus_per_task", 1))
    return {"threads": cpus} if cpus > 1 and not options.get("gpus_per_node") else {}


@lru_cache(maxsize=4)
def _sbatch_option_names(_conf: str | None) -> frozenset[str]:
    """The long options of this host's sbatch (``sbatch --help``, which needs a Slurm
    configuration, hence the cache key); empty where sbatch cannot tell."""
    if shutil.which("sbatch") is None:
        return frozenset()
    try:
        found = subprocess.run(["sbatch", "--help"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    if found.returncode != 0:
        return frozenset()
    return frozenset(re.findall(r"--([a-z][a-z0-9-]*)", found.stdout))


def check_sbatch_args(where: str, args: list[str]) -> list[str]:
    """Extra sbatch arguments: each ``--name`` or ``--name=value``, a real sbatch option (where
    sbatch is installed) that no named key and nothing submitit writes already sets."""
    known = _sbatch_option_names(os.environ.get("SLURM_CONF"))
    for arg in args:
        match = _ARG_RE.match(arg)
        if match is None:
            raise ConfigError(f"{where}: {arg!r} is not an sbatch option: write --name=value "
                              "(e.g. --reservation=maint)")
        name = match.group(1)
        if name in _NAMED:
            raise ConfigError(f"{where}: {arg!r}: set it as {_NAMED[name]} = ... instead")
        if name in _MANAGED:
            raise ConfigError(f"{where}: {arg!r}: sslbench sets --{name} itself")
        if known and name not in known:
            raise ConfigError(f"{where}: unknown sbatch option --{name} (not in `sbatch "
                              "--help`): check its spelling")
    return args


def _sinfo(options: Mapping[str, Any]) -> list[tuple[int, str]] | None:
    """(CPUs, gres) of each node of the partition (``sinfo -N``); None where sinfo cannot
    tell (not installed, no controller): sbatch will say."""
    partition = options.get("partition")
    command = ["sinfo", "-h", "-N", "-o", "%c|%G", *(["-p", partition] if partition else [])]
    try:
        found = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    rows = [line.strip().split("|", 1) for line in found.stdout.splitlines() if "|" in line]
    if found.returncode != 0 or not rows:
        return None
    return [(int(cpus) if cpus.isdigit() else 0, gres) for cpus, gres in rows]


def _gpus(gres: str) -> int:
    """The GPUs of a node's gres (``gpu:4``, ``gpu:a100:4(S:0-1)``, several comma-separated)."""
    return sum(int(m) for m in re.findall(r"gpu(?::[^:,(]+)?:(\d+)", gres))


def check_cluster(options: Mapping[str, Any], processes: Iterable[int] = ()) -> None:
    """What only the cluster can tell: GPUs asked of a partition whose nodes have none, and
    task groups (runs of several processes, :func:`task_shape`) that no node or too few nodes
    of the partition can hold."""
    shapes = [task_shape(options, n) for n in sorted(set(processes)) if n > 1]
    if not options.get("gpus_per_node") and not shapes:
        return
    nodes = _sinfo(options)
    if nodes is None:
        return
    partition = options.get("partition")
    where = f"partition {partition}" if partition else "the cluster"
    if options.get("gpus_per_node") and not any("gpu" in gres for _, gres in nodes):
        raise ConfigError(f"gpus_per_node = {options['gpus_per_node']}: the nodes of {where} "
                          "have no GPUs (sinfo lists no gpu gres): drop gpus_per_node, or "
                          "choose a partition with GPUs (partition = ...)")
    for shape in shapes:
        n = shape.processes
        if shape.gpus:
            fit = sum(1 for _, gres in nodes if _gpus(gres) >= shape.per_node)
            if fit < shape.nodes:
                raise ConfigError(
                    f"devices_per_run {n}: {shape.nodes} node(s) x {shape.per_node} GPU(s) do "
                    f"not fit in {where}: {fit} of its nodes have {shape.per_node} GPUs (sinfo): "
                    "lower devices_per_run (--devices-per-run N) or choose another partition")
            continue
        per_task = options.get("cpus_per_task", 1)
        most = max(cpus for cpus, _ in nodes)
        if n * per_task > most:
            raise ConfigError(
                f"devices_per_run {n}: {n} tasks x {per_task} CPU(s) do not fit on one node of "
                f"{where}, whose nodes have at most {most} CPUs (sinfo): lower devices_per_run "
                "(--devices-per-run N) or cpus_per_task")


@dataclass(frozen=True)
class TaskShape:
    """How Slurm starts a run of ``processes`` processes: one task group of ``nodes`` x
    ``per_node`` tasks, one process each (with ``gpus``: one GPU each, ``gpus_per_node`` =
    ``per_node``)."""

    processes: int
    nodes: int
    per_node: int
    gpus: bool

    def parameters(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """submitit ``SlurmExecutor`` parameters over ``options``' own: the task count, and for
        a group its GPUs and srun's ``--kill-on-bad-exit`` (a rank that fails ends the group)."""
        group = self.processes > 1
        out: dict[str, Any] = {"nodes": self.nodes, "ntasks_per_node": self.per_node,
                               "srun_args": ["--kill-on-bad-exit=1"] if group else []}
        if self.gpus:
            out["gpus_per_node"] = self.per_node if group else options["gpus_per_node"]
        return out


def task_shape(options: Mapping[str, Any], processes: int) -> TaskShape:
    """The task group of a run of ``processes`` processes: on CPU one node of ``processes``
    tasks (``cpus_per_task`` each); on GPUs one node when ``processes <= gpus_per_node``,
    else ``processes / gpus_per_node`` whole nodes (ConfigError when it does not divide)."""
    gpus = options.get("gpus_per_node") or 0
    if processes <= 1:
        return TaskShape(1, 1, 1, bool(gpus))
    if not gpus or processes <= gpus:
        return TaskShape(processes, 1, processes, bool(gpus))
    if processes % gpus:
        raise ConfigError(f"devices_per_run {processes} does not fill whole nodes of "
                          f"gpus_per_node = {gpus}: use a multiple of {gpus} (or at most {gpus})")
    return TaskShape(processes, processes // gpus, gpus, True)


# --------------------------------------------------------------------------- submitit, sbatch

def executor_parameters(options: Mapping[str, Any], *, hold: bool = False) -> dict[str, Any]:
    """submitit ``SlurmExecutor.update_parameters`` keyword arguments for ``options``: the named
    parameters submitit knows, the others verbatim as ``additional_parameters``; ``hold``
    submits the tasks held (released once their runs are queued)."""
    params = {k: v for k, v in options.items() if k not in ("mem", "sbatch_args")}
    extra: dict[str, Any] = {"hold": True} if hold else {}
    if "mem" in options:
        extra["mem"] = options["mem"]
    for arg in options.get("sbatch_args", []):
        name, _, value = arg[2:].partition("=")
        extra[name] = value or True
    if extra:
        params["additional_parameters"] = extra
    return params


def sbatch_lines(options: Mapping[str, Any], folder: Path, tasks: int, *,
                 hold: bool = True, shape: TaskShape | None = None) -> list[str]:
    """The ``#SBATCH`` lines (and setup lines) of the script a submission of ``tasks`` array
    tasks (each a task group of ``shape``) writes, exactly as submitit writes them."""
    from submitit.slurm.slurm import _make_sbatch_string  # what SlurmExecutor itself calls

    params = executor_parameters(options, hold=hold)
    params.update(shape.parameters(options) if shape else {})
    text = _make_sbatch_string(command="python -u -m submitit.core._submit FOLDER", folder=folder,
                               map_count=tasks if tasks > 1 else None, **params)
    return [line for line in text.splitlines()
            if line.startswith("#SBATCH") or line in options.get("setup", [])]


#: sbatch's words -> the option to change, most specific first ("Invalid account or
#: account/partition combination" is about the account). Matched against Slurm's own error
#: string ("Batch job submission failed: ...") where there is one: it holds no user value.
_FIXES = (
    ("account", "account = NAME / --slurm account=NAME (`sacctmgr show assoc user=$USER`)"),
    ("qos", "qos = NAME / --slurm qos=NAME"),
    ("time", "time = ... / --slurm time=D-HH:MM:SS (within the partition's limit)"),
    ("gres", "gpus_per_node / --slurm gpus_per_node=N (or a partition with GPUs)"),
    ("feature", "constraint = ... / --slurm constraint=FEATURES"),
    ("memory", "mem = ... / --slurm mem=SIZE"),
    ("node name", "exclude = ... / --slurm exclude=NODES"),
    ("node configuration", "cpus_per_task, mem, gpus_per_node or constraint: no node has what "
                           "they ask"),
    ("partition", "partition = NAME / --slurm partition=NAME (`sinfo` lists the partitions)"),
    ("unrecognized option", "sbatch_args"),
    ("config", "the Slurm client's configuration: SLURM_CONF or /etc/slurm/slurm.conf (does "
               "`sinfo` work here?)"),
)


def refusal(stderr: str) -> str:
    """sbatch's error output as one line: its messages, then the option to change."""
    lines = [re.sub(r"^sbatch:\s*(error:\s*)?", "", line.strip())
             for line in stderr.splitlines() if line.strip().startswith("sbatch:")]
    text = "; ".join(dict.fromkeys(line for line in lines if line)) or \
        " ".join(stderr.split()) or "no message"
    low = next((line for line in lines if line.startswith("Batch job submission failed")),
               text).lower()
    fix = next((fix for word, fix in _FIXES if word in low),
               "the [slurm] options (`sslbench sweep FILE --backend slurm --dry-run` shows them)")
    return f"sbatch refused the job: {text}: change {fix}"
