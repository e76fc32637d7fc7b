"""Read ``params.yaml``: one section per stage plus the shared ``base`` section."""
from __future__ import annotations

import sys
from collections.abc import Callable
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


def check_numbers(name: str, p: dict, positive_ints=(), positive=(), non_negative=()) -> None:
    """Raise ParamsError naming ``<name>.<key>`` for a missing or out-of-range number."""
    def bad(key, what):
        raise ParamsError(f"params.yaml: {name}.{key} must be {what}, got {p.get(key)!r}")

    def number(v):
        return not isinstance(v, bool) and isinstance(v, (int, float))

    for key in positive_ints:
        v = p.get(key)
        if not (number(v) and v == int(v) and v >= 1):
            bad(key, "a positive integer")
    for key in positive:
        if not (number(p.get(key)) and p[key] > 0):
            bad(key, "a positive number")
    for key in non_negative:
        if not (number(p.get(key)) and p[key] >= 0):
            bad(key, "a number >= 0")


def validate_params(params: dict) -> dict:
    """Check every section before any stage runs: ``base`` here, and each stage
    module's own ``parse_params(params)`` (stages/<name>.py) where it has one.
    Raises ParamsError naming the key."""
    import importlib

    from hardware.spec import SpecError, load_spec

    base = params["base"]
    seed = base.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParamsError(f"params.yaml: base.seed must be a non-negative integer, got {seed!r}")
    try:
        load_spec(base.get("hardware", ""))
    except SpecError as err:
        raise ParamsError(f"params.yaml: base.hardware: {err}") from None
    for name in params:
        if name == "base":
            continue
        try:
            module = importlib.import_module(f"stages.{name}")
        except ModuleNotFoundError:
            continue
        if hasattr(module, "parse_params"):
            module.parse_params(params)
    return params


def run_stage(name: str, main: Callable[[], None]) -> None:
    """A stage's entry point: a bad ``params.yaml`` value exits non-zero with one line
    naming the stage and the key, and no traceback."""
    try:
        main()
    except ParamsError as err:
        sys.exit(f"{name}: {err}")
