"""The ``hwnas`` Typer app and console that every command module registers on."""
from __future__ import annotations

import sys

import typer
from rich.console import Console
from typer.core import TyperGroup

# click's UsageError, whichever click typer runs on (newer typers vendor their own copy)
UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class _OneLineErrors(TyperGroup):
    """Bad input no command caught (a ``UserError`` or ``SpecError`` from anywhere below)
    is one line on stderr and exit 2, in the console script and in ``CliRunner`` alike; so
    is a bad option or command (click's usage box would be a dozen lines)."""

    def invoke(self, ctx):
        from hardware.spec import SpecError
        from hwnas.cli.inputs import fail
        from hwnas.errors import UserError

        try:
            return super().invoke(ctx)
        except (UserError, SpecError) as err:
            fail(str(err))
        except UsageError as err:
            if type(err).__name__ == "NoArgsIsHelpError":
                raise  # the help a bare group prints
            command = err.ctx.command_path if err.ctx else ctx.command_path
            fail(f"{command}: {err.format_message()}")


app = typer.Typer(cls=_OneLineErrors, no_args_is_help=True, add_completion=False,
                  help="Hardware-aware neural architecture search for neural accelerators.")
console = Console(width=None if sys.stdout.isatty() else 120)
