"""The README's commands exist exactly as written, and every command has help text."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from sslbench.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def _commands() -> list[list[str]]:
    text = README.read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("#", 1)[0].strip()
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith("sslbench "):
                    lines.append(shlex.split(part)[1:])
    return lines


def _parse(args: list[str]) -> None:
    """Parse ``args`` against the real click tree without running anything."""
    command = typer.main.get_command(app)
    ctx = command.make_context("sslbench", list(args), resilient_parsing=False)
    while hasattr(command, "commands"):  # a group
        rest = list(getattr(ctx, "protected_args", None) or ctx._protected_args) + ctx.args
        if not rest:
            return
        name, *tail = rest
        sub = command.get_command(ctx, name)
        assert sub is not None, f"README names an unknown command {name!r}"
        command, ctx = sub, sub.make_context(name, tail, parent=ctx)


def test_readme_has_two_quick_start_commands():
    quick = README.read_text().split("## Quick start", 1)[1].split("## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", quick, flags=re.S)
    assert [b.strip() for b in blocks] == ["pip install . && sslbench demo",
                                           "pip install -e '.[dev]' && python -m pytest -n 2"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "pip install -e '.[dev]' && python -m pytest -n 2" in ci
    checks = re.search(r"`(ruff check .*?)`", quick)
    assert checks, "the README names the checks CI runs"
    for check in checks.group(1).split(" && "):
        assert f"\n{check}\n" in ci, check


@pytest.mark.parametrize("args", _commands(), ids=lambda a: " ".join(a)[:60])
def test_readme_command_parses(args):
    _parse(args)


def _walk(command, path: str = "sslbench"):
    yield path, command
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _walk(sub, f"{path} {name}")


def test_every_command_has_help():
    for path, command in _walk(typer.main.get_command(app)):
        if getattr(command, "hidden", False):
            continue
        assert (command.help or "").strip(), f"{path} has no help text"
        for param in command.params:
            if param.param_type_name == "option" and not param.hidden:
                assert (param.help or "").strip(), f"{path} {param.opts} has no help text"
