"""The base of every error that is the user's input, not a bug: the CLI and the stages
report it as one line naming the file, key or field, and exit 2. Also the one reader of a
user's YAML file (specs, params.yaml, expert rules), whose every failure names the file.

Every stage depends on this module (dvc.yaml): keep it free of project imports."""
from __future__ import annotations

import os
from pathlib import Path


class UserError(ValueError):
    """Bad input (a file, a key, a field); the message names it."""


def one_line(message, limit: int = 300) -> str:
    """The first line of ``message``, at most ``limit`` characters (a bad 10 MB input line
    is named, not echoed)."""
    line = (str(message).strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[:limit] + "..."


def read_yaml(path: str | os.PathLike, error: type[Exception] = UserError):
    """A YAML file's value; ``error`` (naming the file) if it cannot be read as text or YAML."""
    import yaml

    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"{path}: cannot read as text: {getattr(err, 'strerror', None) or err}"
                    ) from None
    except (yaml.YAMLError, RecursionError) as err:
        raise error(f"{path}: not valid YAML: {one_line(err)}") from None
