"""The ``hwnas`` Typer app and console that every command module registers on."""
from __future__ import annotations

import sys

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Hardware-aware neural architecture search for neural accelerators.")
console = Console(width=None if sys.stdout.isatty() else 120)
