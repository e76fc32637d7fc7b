"""What the commands share: options, reading ARCH/--op input, and the one-line error."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from hardware.graph import Op
from hardware.spec import DEFAULT_SPEC, OP_KINDS, available_specs, load_spec
from hwnas.arch import (MAX_RESOLUTION, ArchError, ArchSpec, check_channels, check_int,
                        check_kernel, check_stride, from_json, parse_arch)
from hwnas.errors import UserError, one_line
from hwnas.registry import REFERENCES, reference

HardwareOpt = Annotated[str, typer.Option("--hardware", "-H",
                        help="Spec YAML path or bundled spec name "
                             f"({', '.join(available_specs())}).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (one line per network).")]


class InputError(UserError):
    """Bad user input: reported on one line, exit status 2."""


def fail(message: str) -> None:
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(2)


def check_number(value: float, option: str, low: float, high: float,
                 high_open: bool = False) -> float:
    """A float option in [low, high] (or [low, high)); NaN and infinities are refused (click's
    ranges let NaN through)."""
    import math

    if not (math.isfinite(value) and low <= value and (value < high if high_open
                                                        else value <= high)):
        raise InputError(f"{option} must be a finite number in [{low:g}, {high:g}"
                         f"{')' if high_open else ']'}, got {value}")
    return value


def echo_json(*objs, indent: int | None = None) -> None:
    """Print each object as JSON (one per line unless indented). A NaN or infinity is an
    error naming it, not invalid JSON; all are encoded before the first is printed."""
    from hwnas.files import dumps

    for text in [dumps(obj, indent=indent) for obj in objs]:
        typer.echo(text)


def warn_out_of_range(records: list[dict]) -> None:
    """One stderr line per estimated network with kernels outside the estimator's trained
    ranges (``estimate`` and ``expert`` alike): its latency is an extrapolation."""
    for r in records:
        if reasons := r["out_of_range"]:
            more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
            typer.echo(f"warning: {r['name']}: outside the estimator's trained ranges, "
                       f"{reasons[0]}{more}", err=True)


def read_arch(text: str) -> ArchSpec:
    """ARCH as a JSON file, inline JSON, a compact string or a reference name."""
    text = text.strip()
    if text in REFERENCES:
        return reference(text)
    if text.startswith("{") or re.match(r"^([^:\s]+:)?i\d+x\d+x\d+-", text):
        return _parse(text, "the architecture")
    path = Path(text)
    try:
        is_file = path.is_file()
    except OSError:  # e.g. a name too long to be a file
        is_file = False
    if is_file:
        try:
            content = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"{path}: cannot read as text: {err}") from None
        return _parse(content, str(path), json_only=True)
    raise InputError(f"architecture {one_line(repr(text), 80)} is not a file, JSON object, "
                     f"architecture string or reference name ({', '.join(REFERENCES)})")


def _parse(text: str, where: str, json_only: bool = False) -> ArchSpec:
    try:
        return from_json(text) if json_only else parse_arch(text)
    except RecursionError:  # json.loads on thousands of nested brackets
        raise InputError(f"{where}: JSON nested too deeply") from None
    except ArchError as err:
        raise ArchError(f"{where}: {err}" if json_only else str(err)) from None


def read_archs(arch: str) -> list[ArchSpec]:
    """One ARCH, or with ``-`` one JSON/string per stdin line. All are parsed before
    any is run so that a bad line stops the batch before output starts."""
    if arch != "-":
        return [read_arch(arch)]
    archs, n = [], 0
    try:
        for n, line in enumerate(sys.stdin, 1):
            if line.strip():
                try:
                    archs.append(read_arch(line))
                except (ArchError, InputError) as err:
                    raise InputError(f"stdin line {n}: {one_line(err)}") from None
    except UnicodeDecodeError:
        raise InputError(f"stdin line {n + 1}: not text (UTF-8)") from None
    if not archs:
        raise InputError("stdin: no architecture (one per line) was given")
    return archs


def parse_op(text: str) -> Op:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"--op: malformed JSON: {err}") from None
    if not isinstance(d, dict):
        raise InputError("--op: must be a JSON object")
    if d.get("op") not in OP_KINDS:
        raise InputError(f"--op: field 'op' must be one of {', '.join(OP_KINDS)}")
    allowed = {"op", "height", "width", "in", "out", "kernel", "stride"}
    if unknown := sorted(set(d) - allowed):
        raise InputError(f"--op: unknown field '{unknown[0]}'")
    kind = d["op"]
    h, w = (1, 1) if kind == "fc" else (d.get("height"), d.get("width"))
    cin = d.get("in")
    cout = cin if kind in ("depthwise", "add", "pool", "resize", "gate") else d.get("out")
    vals = {"height": h, "width": w, "in": cin, "out": cout,
            "kernel": d.get("kernel", 1), "stride": d.get("stride", 1)}
    try:  # the architecture schema's limits, field by field
        for key in ("height", "width"):
            check_int(vals[key], f"--op: field '{key}'", 1, MAX_RESOLUTION)
        for key in ("in", "out"):
            check_channels(vals[key], f"--op: field '{key}'")
        if kind == "resize":  # its kernel is the upsampling factor
            check_int(vals["kernel"], "--op: field 'kernel' (a resize's upsampling factor)", 1,
                      MAX_RESOLUTION)
        else:
            check_kernel(vals["kernel"], "--op: field 'kernel'")
        check_stride(vals["stride"], "--op: field 'stride'")
    except ArchError as err:
        raise InputError(str(err)) from None
    if kind in ("depthwise", "resize", "gate") and d.get("out", cin) != cin:
        raise InputError(f"--op: a {kind} op has out == in")
    inputs = (0, 1) if kind == "add" else (0,)
    return Op(kind, kind, h, w, cin, cout, vals["kernel"], vals["stride"], inputs=inputs,
              output=len(inputs))


def load_estimator(hardware: str, estimator: Path | None):
    """The estimator for a spec name (default dir models/estimator/<spec name>), or
    a measured target's (``onnxruntime``, ``imported``)."""
    from hwnas.estimator import Estimator

    from hwnas import layout

    spec = target_spec(hardware)
    target = "imported" if hardware == "imported" else spec.name
    return Estimator.load(estimator or layout.estimator_dir(target), spec)


def target_spec(hardware: str):
    """The spec of a target; a device team's timings (``imported``) have none of their own,
    so channels align as the default's."""
    return load_spec(DEFAULT_SPEC if hardware == "imported" else hardware)

