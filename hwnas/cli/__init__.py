"""The ``hwnas`` command line. Bad input prints one line on stderr and exits 2,
having written nothing to stdout.

One module per group of commands; importing them registers the commands on ``app`` in
the order ``hwnas --help`` lists them."""
from hwnas.cli.app import app
from hwnas.cli import architecture, estimator, pipeline, expert, experiments  # noqa: F401

__all__ = ["app"]
