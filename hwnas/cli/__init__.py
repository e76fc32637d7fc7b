"""The ``hwnas`` command line. Bad input prints one line on stderr and exits 2,
having written nothing to stdout.

One module per group of commands; importing them registers the commands on ``app`` in
the order ``hwnas --help`` lists them."""
import sys

from hwnas.cli.app import app
from hwnas.cli import architecture, estimator, pipeline, expert, experiments  # noqa: F401

__all__ = ["app", "main"]


def main() -> None:
    """The console script: an input error no command caught is still one line, exit 2."""
    from hardware.spec import SpecError
    from hwnas.cli.inputs import one_line
    from hwnas.errors import UserError

    try:
        app()
    except (UserError, SpecError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        sys.exit(2)
