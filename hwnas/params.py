"""Read ``params.yaml``: one section per stage plus the shared ``base`` section."""
from __future__ import annotations

from pathlib import Path

import yaml


class ParamsError(ValueError):
    """A missing or malformed params file or key; the message names it."""


def load_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ParamsError(f"{path}: cannot read: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("base"), dict):
        raise ParamsError(f"{path}: needs a 'base' section (seed, hardware)")
    return data


def section(params: dict, name: str) -> dict:
    """``base`` merged under the named section (the section wins)."""
    if name not in params:
        raise ParamsError(f"params.yaml: missing section '{name}'")
    return {**params["base"], **(params[name] or {})}
