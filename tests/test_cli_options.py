"""The command line's options: closed sets of values come from their registries (validated and
listed in --help), a bad value or an option that does not apply is one line with exit code 1,
and the modules of ``sslbench.cli`` import no sibling's private names."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

import sslbench.cli
from sslbench.cli import app
from sslbench.cli.common import Choices
from sslbench.config import (
    EVAL_PROTOCOLS,
    OPTIMIZERS,
    PROBE_AUGMENTS,
    EvalConfig,
    TrainConfig,
)
from sslbench.errors import ConfigError
from tests.conftest import assert_imports_none_of
from tests.test_cli_errors import assert_one_line_error

CLI = Path(sslbench.cli.__file__).parent


def _walk(command: Any, path: str = "sslbench") -> Iterator[tuple[str, Any]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, f"{path} {name}")


def _choices_of(param: Any) -> Choices | None:
    owner = getattr(getattr(param.callback, "__wrapped__", None), "__self__", None)
    return owner if isinstance(owner, Choices) else None


def _params() -> Iterator[tuple[str, Any]]:
    for path, command in _walk(typer.main.get_command(app)):
        for param in getattr(command, "params", []):
            yield path, param


def _registries() -> dict[tuple[str, str], tuple[str, ...]]:
    """(command, parameter) -> the names its registry holds."""
    from sslbench.data import dataset_names, recipe_names
    from sslbench.db import RUN_KINDS, RUN_STATUSES
    from sslbench.losses import IMPLS, criterion_names
    from sslbench.models import backbone_names
    from sslbench.presets import PRESETS
    from sslbench.report import OUTPUT_FORMATS, REPORTS
    from sslbench.report.protocols import SELECTS

    return {
        ("sslbench train", "method"): tuple(criterion_names()),
        ("sslbench train", "dataset"): tuple(dataset_names()),
        ("sslbench train", "backbone"): tuple(backbone_names()),
        ("sslbench train", "preset"): PRESETS,
        ("sslbench train", "optimizer"): OPTIMIZERS,
        ("sslbench train", "impl"): IMPLS,
        ("sslbench train", "augment"): tuple(recipe_names()),
        ("sslbench eval", "dataset"): tuple(dataset_names()),
        ("sslbench eval", "backbone"): tuple(backbone_names()),
        ("sslbench eval", "protocol"): (*EVAL_PROTOCOLS, "all"),
        ("sslbench eval", "probe_augment"): (*PROBE_AUGMENTS, "auto"),
        ("sslbench bench eval", "probe_augment"): (*PROBE_AUGMENTS, "auto"),
        ("sslbench report", "name"): (*REPORTS, "all"),
        ("sslbench report", "fmt"): OUTPUT_FORMATS,
        ("sslbench report", "select"): SELECTS,
        ("sslbench runs list", "kind"): RUN_KINDS,
        ("sslbench runs list", "status"): RUN_STATUSES,
    }


@pytest.mark.parametrize("key", list(_registries()), ids=" ".join)
def test_choices_are_the_registry_and_listed_in_help(cli, key):
    command, name = key
    params = {(path, p.name): p for path, p in _params()}
    choices = _choices_of(params[key])
    assert choices is not None, f"{command} {name} is not checked against its registry"
    expected = _registries()[key]
    assert choices.names() == expected
    result = cli(*command.split()[1:], "--help")
    assert result.exit_code == 0
    listed = " ".join(result.output.split())  # the help is wrapped at hyphens and spaces
    assert f"Choices: {', '.join(expected)}." in listed.replace("- ", "-")


def test_every_format_is_checked():
    formats = [(path, p) for path, p in _params() if "--format" in getattr(p, "opts", [])]
    assert len(formats) > 15
    for path, param in formats:
        choices = _choices_of(param)
        assert choices is not None and "json" in choices.names(), path


@pytest.mark.parametrize("path,param,choices",
                         [(path, p, c) for path, p in _params() if (c := _choices_of(p))],
                         ids=lambda x: x if isinstance(x, str) else getattr(x, "name", ""))
def test_every_choice_refuses_a_bad_value_in_one_line(path, param, choices):
    for name in choices.names():
        choices.check(name)
    with pytest.raises(ConfigError) as info:
        choices.check("no-such-thing")
    message = str(info.value)
    assert "\n" not in message and "'no-such-thing'" in message and choices.flag in message


@pytest.mark.parametrize("args,flag,value", [
    (["train", "--impl", "fast"], "--impl", "fast"),
    (["train", "--augment", "rotate"], "--augment", "rotate"),
    (["train", "--preset", "galaxy"], "--preset", "galaxy"),
    (["eval", "--random-init", "--protocol", "linear,svm"], "--protocol", "svm"),
    (["report", "table-s9"], "report", "table-s9"),
    (["report", "dims", "--format", "yaml"], "--format", "yaml"),
    (["report", "dims", "--select", "worst"], "--select", "worst"),
    (["runs", "list", "--kind", "finetune"], "--kind", "finetune"),
    (["runs", "list", "--status", "paused"], "--status", "paused"),
    (["sweep", "demo", "--backend", "kubernetes"], "--backend", "kubernetes"),
    (["bench", "criteria", "--format", "yaml"], "--format", "yaml"),
    (["methods", "--format", "yaml"], "--format", "yaml"),
])
def test_bad_values_are_one_line(cli, home, args, flag, value):
    line = assert_one_line_error(cli(*args), f"unknown {flag} '{value}'", "choose one of")
    assert "Usage" not in line
    assert not (home / "db").exists()


@pytest.mark.parametrize("args,needles", [
    (["report", "table-s5", "--metric", "knn_top1"], ["--metric", "table-s5", "--complete"]),
    (["report", "dims", "--run-id", "abc"], ["--run-id", "report dims", "--metric"]),
    (["report", "knn", "--partial"], ["--complete/--partial", "report knn", "no options"]),
    (["report", "spectra", "--complete"], ["--complete/--partial", "report spectra", "--dim"]),
    (["report", "all", "--out", "r", "--dim", "64"], ["--dim", "report all"]),
    (["report", "all", "--out", "r", "--format", "csv"], ["--format", "report all", "html"]),
    (["report", "table-s5", "--tag", "slurm:1234_0"], ["--tag slurm:1234_0", "--sweep NAME"]),
])
def test_report_refuses_options_its_report_does_not_take(cli, home, args, needles):
    assert_one_line_error(cli(*args), *needles)
    assert not (home / "db").exists() and not (home / "r").exists()


def test_report_passes_on_the_options_its_report_takes(cli, home):
    """Past the option check, ``report dims --metric`` stops at the missing store instead."""
    result = cli("report", "dims", "--metric", "knn_top1", "--dataset", "shapes")
    line = assert_one_line_error(result)
    assert "does not apply" not in line


@pytest.mark.parametrize("args,needles", [
    (["eval", "feedbeefcafe", "--dataset", "shapes"], ["--dataset", "--random-init"]),
    (["eval", "--pending", "--backbone", "small"], ["--backbone", "--random-init"]),
    (["eval", "feedbeefcafe", "--dim", "8"], ["--dim", "--random-init"]),
    (["duality", "feedbeefcafe", "--m", "64"], ["--m ", "random embeddings"]),
    (["duality", "feedbeefcafe", "--seed", "1"], ["--seed", "random embeddings"]),
    (["duality", "--device", "cpu"], ["--device", "RUN_ID"]),
])
def test_options_of_the_other_case_are_refused(cli, home, args, needles):
    assert_one_line_error(cli(*args), *needles)
    assert not (home / "db").exists()


def test_compare_has_no_cka_flag(cli, home):
    assert "--cka" not in cli("compare", "--help").output
    assert cli("compare", "a", "b", "--cka").exit_code == 2  # Typer: no such option


def test_train_and_eval_share_the_defaults_their_help_names():
    assert (TrainConfig.dataset, TrainConfig.backbone) == (EvalConfig.dataset,
                                                           EvalConfig.backbone)


def test_the_cli_imports_neither_torch_nor_pandas():
    assert_imports_none_of("from sslbench.cli import app\nimport typer\n"
                           "typer.main.get_command(app)", "torch", "pandas")


@pytest.mark.parametrize(("command", "listed"), [("train", "vicreg-exp"), ("eval", "imagenet100"),
                                                 ("sweep", "--backend")])
def test_help_listing_the_registries_names_imports_no_torch(command, listed):
    """The choices in ``--help`` come from the registries' torch-free name lists."""
    assert_imports_none_of(
        "from typer.testing import CliRunner\nfrom sslbench.cli import app\n"
        f"result = CliRunner().invoke(app, [{command!r}, '--help'], terminal_width=200)\n"
        "assert result.exit_code == 0, result.output\n"
        f"assert {listed!r} in result.output, result.output", "torch")


def test_the_name_lists_are_the_registries_names():
    from sslbench.data.augment import RECIPES
    from sslbench.data.names import DATASET_NAMES, RECIPE_NAMES
    from sslbench.data.registry import DATASETS
    from sslbench.losses.names import CRITERION_NAMES
    from sslbench.losses.registry import CRITERIA
    from sslbench.models.backbones import BACKBONES
    from sslbench.models.names import BACKBONE_NAMES

    assert tuple(CRITERIA) == CRITERION_NAMES and tuple(BACKBONES) == BACKBONE_NAMES
    assert tuple(DATASETS) == DATASET_NAMES and tuple(RECIPES) == RECIPE_NAMES


def _imports(path: Path) -> Iterator[ast.ImportFrom]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sslbench.cli"):
            yield node


@pytest.mark.parametrize("path", sorted(CLI.glob("*.py")), ids=lambda p: p.name)
def test_cli_modules_share_only_public_names_of_common(path):
    for node in _imports(path):
        if path.name == "__init__.py":
            continue  # the package imports its command modules, which add the commands
        assert path.name != "common.py", f"common imports {node.module}: a cycle"
        assert node.module == "sslbench.cli.common", f"{path.name} imports {node.module}"
        private = [a.name for a in node.names if a.name.startswith("_")]
        assert not private, f"{path.name} imports private {private} from common"
