"""The ``hwnas`` command line. Bad input prints one line on stderr and exits 2,
having written nothing to stdout (``app``'s group turns any ``UserError`` into that line).

One module per group of commands; importing them registers the commands on ``app`` in
the order ``hwnas --help`` lists them."""
from hwnas.cli.app import app
from hwnas.cli import architecture, estimator, pipeline, expert, experiments, data  # noqa: F401

__all__ = ["app", "main"]


def main() -> None:
    """The console script."""
    app()
