"""What every command of the ``sslbench`` command line shares: the Typer apps, one-line errors,
the store of ``--db``, JSON output, the recorded command line, and one ``Annotated`` alias per
option that several commands take (``--format``, ``--device``, ``--dataset``, ...).

An option with a closed set of values names a :class:`Choices` -- a function that reads the
names from their one registry -- as its callback rather than an Enum: the value is checked when
the option is used (a bad one is the usual one-line ``error: unknown --method 'x': choose one of
...``, exit code 1, not Typer's multi-line usage error), and :class:`Command` appends the names to
the option's help only when that help is shown. The criteria, datasets, recipes and backbones
keep their names in torch-free modules (``sslbench.losses.names``, ``sslbench.data.names``,
``sslbench.models.names``) that their registries check themselves against, so listing them
loads no torch; the report registry imports pandas, which only ``report --help`` pays for.

Expected failures (:class:`~sslbench.errors.SSLBenchError`), raised while parsing or while a
command runs, print one line on stderr and exit with code 1 (:class:`Group`); anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from sslbench import config
from sslbench.config import TrainConfig, require_choice
from sslbench.errors import ConfigError, SSLBenchError
from sslbench.runs import sbatch

if TYPE_CHECKING:
    from sslbench.db import Store

#: The outputs the commands render themselves (``report`` has its renderers' own formats).
FORMATS = ("table", "json")


# ------------------------------------------------------------------------------ choices

@dataclass(frozen=True)
class Choices:
    """The values of option ``flag``, read from their registry by ``source`` when first needed.

    ``check`` is the option's callback. ``parse``, when given, checks a value instead of plain
    membership (a comma-separated list, say); it must raise a one-line ConfigError."""

    flag: str
    source: Callable[[], Iterable[str]]
    extra: tuple[str, ...] = ()
    parse: Callable[[str], object] | None = None

    def names(self) -> tuple[str, ...]:
        return (*self.source(), *self.extra)

    def check(self, value: str | None) -> str | None:
        if value is not None:
            if self.parse is not None:
                self.parse(value)
            else:
                require_choice(self.flag, value, self.names())
        return value


def _list_choices(param: Any) -> None:
    """Appends the names of the Choices behind ``param``'s callback, if any, to its help (Typer
    wraps a callback, keeping it as ``__wrapped__``)."""
    owner = getattr(getattr(param.callback, "__wrapped__", None), "__self__", None)
    if isinstance(owner, Choices) and isinstance(param, (TyperOption, TyperArgument)):
        param.help = f"{param.help} Choices: {', '.join(owner.names())}."


class Command(TyperCommand):
    """A command whose options' help lists their registry's names, read only when the help is
    shown (``sslbench train --help`` imports torch for them; ``sslbench --help`` does not)."""

    choices_listed = False

    def format_help(self, ctx: Any, formatter: Any) -> None:
        if not self.choices_listed:
            self.choices_listed = True
            for param in self.params:
                _list_choices(param)
        super().format_help(ctx, formatter)


class Group(TyperGroup):
    """A command group that turns SSLBenchError into one line on stderr and exit code 1, also
    when an option's callback raises it while the command line is parsed."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except SSLBenchError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from None


class App(typer.Typer):
    """typer.Typer with sslbench's settings: help texts taken literally (rich_markup_mode=None
    would otherwise read "[default]" as markup), no completion, plain tracebacks for bugs, and
    the Command and Group classes above."""

    def __init__(self, *, help: str) -> None:
        super().__init__(cls=Group, help=help, no_args_is_help=True, rich_markup_mode=None,
                         add_completion=False, pretty_exceptions_enable=False)

    def command(self, name: str | None = None, **kwargs: Any) -> Any:
        return super().command(name, cls=Command, **kwargs)


app = App(help="Pretrain, evaluate and compare SSL criteria; every run lands in a SQL store.")
runs_app = App(help="List and inspect runs in the store.")
bench_app = App(help="Speed benchmarks that print JSON.")
app.add_typer(runs_app, name="runs")
app.add_typer(bench_app, name="bench")


# ------------------------------------------------------------------------------ registries
# Each reads one registry's names (torch-free), only when an option is used or its help is shown.

def _criteria() -> list[str]:
    from sslbench.losses import criterion_names

    return criterion_names()


def _datasets() -> list[str]:
    from sslbench.data import dataset_names

    return dataset_names()


def _backbones() -> list[str]:
    from sslbench.models import backbone_names

    return backbone_names()


def _check_device(value: str | None) -> str | None:
    """``--device`` as sslbench.device reads it (a CUDA device must exist here)."""
    if value is not None:
        from sslbench.device import resolve_device

        resolve_device(value)
    return value


METHODS = Choices("--method", _criteria)
DATASETS = Choices("--dataset", _datasets)
BACKBONES = Choices("--backbone", _backbones)
# "auto": the dataset's own choice (DatasetSpec.probe_augment), resolved when the config is built.
PROBE_AUGMENTS = Choices("--probe-augment", lambda: config.PROBE_AUGMENTS, extra=("auto",))
OUTPUTS = Choices("--format", lambda: FORMATS)
# local: sslbench.runs.scheduler.LocalScheduler on this machine; the others are the executors
# of sslbench.runs.slurm.make_executor (a Slurm job array, or the Slurm path run locally).
BACKENDS = Choices("--backend", lambda: ("local", "slurm", "submitit-local"))


# ------------------------------------------------------------------------------ option aliases

Format = Annotated[str, typer.Option("--format", help="How to print the result.",
                                            callback=OUTPUTS.check)]
Device = Annotated[str, typer.Option(
    "--device", help="auto (CUDA when present), cpu, cuda or cuda:N.", callback=_check_device)]
Db = Annotated[str | None, typer.Option(
    "--db", envvar="SSLBENCH_DB", metavar="URL",
    help="SQLAlchemy URL of the store (default: sqlite file in $SSLBENCH_HOME/db/).")]
# train and eval --random-init share these two and their defaults (tests/test_cli_options.py
# checks that TrainConfig's are EvalConfig's).
Dataset = Annotated[str | None, typer.Option(
    "--dataset", help=f"Dataset [{TrainConfig.dataset}].", show_default=False,
    callback=DATASETS.check)]
Backbone = Annotated[str | None, typer.Option(
    "--backbone", help=f"Backbone [{TrainConfig.backbone}].", show_default=False,
    callback=BACKBONES.check)]
ProbeAugment = Annotated[str, typer.Option(
    "--probe-augment", help="Training images of the linear protocols (crop-flip: the paper's; "
    "auto: the dataset's own choice, crop-flip unless its objects are too small to crop).",
    callback=PROBE_AUGMENTS.check)]


# ------------------------------------------------------------------------------ scheduling

def retry_policy(spec: Any, max_attempts: int | None, transient: list[str]) -> Any:
    """The retry policy of a sweep or study: the flags over its ``[scheduler]`` table."""
    import re

    from sslbench.runs.policy import RetryPolicy

    attempts = max_attempts if max_attempts is not None else \
        spec.scheduler.get("max_attempts", 3)
    if attempts < 1:
        raise ConfigError(f"--max-attempts must be >= 1, got {attempts}")
    for pattern in transient:
        try:
            re.compile(pattern)
        except re.error as err:
            raise ConfigError(f"--transient {pattern!r} is not a valid regex ({err})") from None
    return RetryPolicy(attempts, tuple(spec.scheduler.get("transient", [])) + tuple(transient))


SlurmFlags = Annotated[list[str] | None, typer.Option(
    "--slurm", metavar="KEY=VALUE", help="An sbatch option over the file's [slurm] table "
    "(repeatable; --backend slurm), e.g. --slurm partition=gpu --slurm time=2:00:00. Keys: "
    + ", ".join(o.key for o in sbatch.OPTIONS) + ".", show_default=False)]


def slurm_options(spec: Any, backend: str, flags: list[str] | None) -> dict[str, Any]:
    """The submission options: the spec's ``[slurm]`` table with ``--slurm`` over it."""
    if flags and backend == "local":
        raise ConfigError("--slurm applies to --backend slurm (or submitit-local): add "
                          "--backend slurm or drop --slurm")
    return sbatch.with_flags(spec.slurm, flags or [])


def with_backend_defaults(spec: Any, backend: str, options: dict[str, Any]) -> Any:
    """``spec`` (a sweep or tune spec) with the train settings its backend gives the runs that do
    not set them: a Slurm CPU task's ``cpus_per_task`` as their threads."""
    if backend != "slurm":
        return spec
    return replace(spec, defaults=sbatch.run_defaults(options))


def device_pool(spec: Any, backend: str, devices: str | None, per_device: int | None,
                workers: int | None, *, needed: bool) -> Any:
    """The local device pool (checked now, so missing devices queue nothing), or None."""
    if backend != "local" or not needed:
        return None
    from sslbench.runs.devices import build_pool

    per = per_device or spec.scheduler.get("per_device", 1)
    if workers is None and devices is None:
        workers = spec.scheduler.get("workers")
    return build_pool(devices, per, workers)



# ------------------------------------------------------------------------------ store & output

class _Options:
    """The group's own options, set by its callback on every invocation."""

    db: str | None = None


@app.callback()
def _root(db: Db = None) -> None:
    _Options.db = db


def store_url() -> str | None:
    """The ``--db`` URL (or SSLBENCH_DB), None for the default store."""
    return _Options.db


def open_store(create: bool = True) -> Store:
    """The store of ``--db``; says on stderr when opening it upgraded an older schema."""
    from sslbench.db import SCHEMA_VERSION, Store

    store = Store.open(store_url(), create=create)
    if store.upgraded_from is not None:
        backup = f"; the old store is backed up at {store.backup_path}" if store.backup_path else ""
        typer.echo(f"upgraded the store {store.display_url} from schema version "
                   f"{store.upgraded_from} to {SCHEMA_VERSION}{backup}", err=True)
    return store


def command_line() -> list[str]:
    """The command as the user typed it, recorded with every run it starts (a store URL's
    password masked: the record is on disk)."""
    from sslbench.db.engine import safe_url

    return ["sslbench", *(_masked(arg, safe_url) for arg in sys.argv[1:])]


def _masked(arg: str, mask: Callable[[str], str]) -> str:
    if "://" not in arg:
        return arg
    flag, sep, value = arg.partition("=") if arg.startswith("-") else ("", "", arg)
    return f"{flag}{sep}{mask(value)}"


def echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


# ------------------------------------------------------------------------------ refusals

def flag(ctx: typer.Context, name: str) -> str:
    """The command-line spelling of parameter ``name`` of ctx's command, e.g. ``--run-id``."""
    param = next(p for p in ctx.command.params if p.name == name)
    return "/".join([*param.opts, *getattr(param, "secondary_opts", [])])


def given(ctx: typer.Context, *names: str) -> list[str]:
    """Those of ``names`` that the command line (or the environment) set, not a default."""
    return [name for name in names
            if getattr(ctx.get_parameter_source(name), "name", "") in ("COMMANDLINE",
                                                                      "ENVIRONMENT")]


def refuse(ctx: typer.Context, names: Iterable[str], why: str) -> None:
    """A one-line ConfigError naming the first of ``names`` that was given, ``why`` it does
    not apply; nothing when none was."""
    offending = given(ctx, *names)
    if offending:
        raise ConfigError(f"{flag(ctx, offending[0])} {why}")
