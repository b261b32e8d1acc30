"""The ``sslbench`` command line: parse, validate, call one library function, render.

:mod:`~sslbench.cli.common` holds the Typer apps and what the commands share; each other module
adds one group of commands to them when imported here. Heavy modules (torch, the store, pandas)
are imported inside the commands that need them, so ``sslbench --help`` stays instant.
"""

# isort: off
# Importing a module adds its commands; `sslbench --help` lists them in this order.
from sslbench.cli import train, evaluate, report, sweep, tune, runs, bench  # noqa: F401
from sslbench.cli.common import app
# isort: on

__all__ = ["app", "main"]


def main() -> None:
    app()
