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


def _unique_keys_loader():
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the
    last silently: a duplicated ``seed:`` would drop the first value unseen)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (str, int, float, bool)) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} given twice (line {key_node.start_mark.line + 1})",
                        key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return Loader


def read_yaml(path: str | os.PathLike, error: type[Exception] = UserError):
    """A YAML file's value; ``error`` (naming the file) if it cannot be read as text or YAML,
    or gives a key twice in one mapping."""
    import yaml

    path = Path(path)
    try:
        return yaml.load(path.read_text(), Loader=_unique_keys_loader())
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"{path}: cannot read as text: {getattr(err, 'strerror', None) or err}"
                    ) from None
    except (yaml.YAMLError, RecursionError) as err:
        raise error(f"{path}: not valid YAML: {one_line(err)}") from None
