"""The README's Layout section names every module of the package, and nothing that is gone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _layout_entries() -> set[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    return {m.group(1).rstrip("/") for m in re.finditer(r"^  (\S+)\s", block, re.M)}


def _modules() -> set[str]:
    package = ROOT / "sslbench"
    names = {p.name for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    names |= {p.name for p in package.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    return names


def test_readme_layout_names_every_module():
    entries, modules = _layout_entries(), _modules()
    assert modules - entries == set(), "modules missing from README.md's Layout section"
    assert entries - modules == set(), "README.md's Layout names modules that do not exist"


def test_every_package_folder_is_a_regular_package():
    """Namespace packages are invisible to the import-layer contract (lint-imports)."""
    package = ROOT / "sslbench"
    for folder in package.rglob("*"):
        if folder.is_dir() and any(folder.glob("*.py")):
            assert (folder / "__init__.py").exists(), folder
