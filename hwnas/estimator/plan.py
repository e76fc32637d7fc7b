"""A device team's own measurements: the units hwnas plans, timed on their device.

``write_plan`` samples units as the microbenchmarks' first round does (plus whole networks
that calibrate their sum) and writes a folder:

- ``units/<unit_id>.onnx``: each unit (or network) with random weights, batch 1;
- ``plan.csv``: unit_id, file, role, kind, unit, arch, input_shape, macs;
- ``timings_template.csv``: the timings' schema, one row per unit to fill in
  (``plan``, ``unit_id``, ``input_shape``, ``latency_ms``; a unit may have several rows,
  one per repeat: the median is used);
- ``plan.json``: the plan's hash (of plan.csv), its hardware and counts.

``read_timings`` checks a filled-in CSV against its plan and returns the microbenchmark
table the estimator trains on (backend ``imported``); any bad row is one error naming the
file, row and column, before anything is trained.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from hwnas.arch import ArchError, decode, encode
from hwnas.errors import UserError
from hwnas.estimator.sampling import Sample, unit_macs

PLAN_CSV, TEMPLATE_CSV, PLAN_JSON = "plan.csv", "timings_template.csv", "plan.json"
PLAN_COLUMNS = ("unit_id", "file", "role", "kind", "unit", "arch", "input_shape", "macs")
TIMING_COLUMNS = ("plan", "unit_id", "input_shape", "latency_ms")
BACKEND = "imported"


class PlanError(UserError):
    """A plan folder or a timings CSV that cannot be used; the message names file, row, column."""


def shape_text(shape) -> str:
    return "x".join(str(int(d)) for d in shape)


def write_plan(samples: list[Sample], networks: list, folder: Path, hardware: str) -> dict:
    """Export every unit and network to ``folder`` with its manifest and template."""
    from hwnas.estimator.decompose import decompose
    from hwnas.estimator.microbench import network_module, unit_module
    from hwnas.estimator.onnxrt import export

    (folder / "units").mkdir(parents=True, exist_ok=True)
    rows = []
    kinds = decompose([s.arch for s in samples], None, "block") if samples else None
    for i, s in enumerate(samples):
        module, shape = unit_module(s)
        uid = f"u{i + 1:05d}"
        export(module, shape, folder / "units" / f"{uid}.onnx")
        own = kinds[(kinds["net"] == i) & (kinds["unit"] == s.unit)]
        rows.append((uid, f"units/{uid}.onnx", s.role, str(own["kind"].iloc[0]), s.unit,
                     encode(s.arch), shape_text(shape), unit_macs(s)))
    for j, a in enumerate(networks):
        module, shape = network_module(a)
        uid = f"n{j + 1:05d}"
        export(module, shape, folder / "units" / f"{uid}.onnx")
        rows.append((uid, f"units/{uid}.onnx", "network", "network", -1, encode(a),
                     shape_text(shape), 0))
    with open(folder / PLAN_CSV, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(PLAN_COLUMNS)
        w.writerows(rows)
    digest = hashlib.sha256((folder / PLAN_CSV).read_bytes()).hexdigest()[:16]
    with open(folder / TEMPLATE_CSV, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(TIMING_COLUMNS)
        w.writerows((digest, r[0], r[6], "") for r in rows)
    info = {"plan": digest, "hardware": hardware, "units": len(samples),
            "networks": len(networks),
            "timings": {"columns": list(TIMING_COLUMNS),
                        "latency_ms": "milliseconds per call at batch 1, > 0; one row per "
                                      "repeat (the median is used)",
                        "plan": "this plan's hash, as in the template"}}
    (folder / PLAN_JSON).write_text(json.dumps(info, indent=2) + "\n")
    return info


def read_plan(folder: Path) -> tuple[dict, pd.DataFrame]:
    """The plan's info and its units (checked: every arch decodes)."""
    info_path, csv_path = folder / PLAN_JSON, folder / PLAN_CSV
    for p in (info_path, csv_path):
        if not p.is_file():
            raise PlanError(f"{p}: not found (write a plan with `hwnas microbench --plan N --out DIR`)")
    try:
        info = json.loads(info_path.read_text())
        units = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as err:
        raise PlanError(f"{folder}: unreadable plan: {err}") from None
    digest = hashlib.sha256(csv_path.read_bytes()).hexdigest()[:16]
    if not isinstance(info, dict) or info.get("plan") != digest:
        raise PlanError(f"{csv_path}: does not match the hash in {info_path} (edited after planning?)")
    missing = [c for c in PLAN_COLUMNS if c not in units.columns]
    if missing:
        raise PlanError(f"{csv_path}: missing column '{missing[0]}'")
    for n, arch in enumerate(units["arch"], start=2):
        try:
            decode(arch)
        except (ArchError, ValueError) as err:
            raise PlanError(f"{csv_path}: row {n}, column 'arch': {err}") from None
    return info, units


def _bad(path: Path, row: int, column: str, what: str) -> PlanError:
    return PlanError(f"{path}: row {row}, column '{column}': {what}")


def read_timings(path: Path, plan_dir: Path) -> pd.DataFrame:
    """The timings CSV checked row by row against the plan; the microbenchmark table."""
    from hwnas.estimator.microbench import long_table, network_table, unit_rows

    info, plan = read_plan(plan_dir)
    if not path.is_file():
        raise PlanError(f"{path}: timings file not found")
    try:
        with open(path, newline="") as fh:
            lines = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise PlanError(f"{path}: unreadable CSV: {err}") from None
    if not lines:
        raise PlanError(f"{path}: empty file (expected the header {','.join(TIMING_COLUMNS)})")
    header = [h.strip() for h in lines[0]]
    for c in TIMING_COLUMNS:
        if c not in header:
            raise PlanError(f"{path}: missing column '{c}' (the header must have "
                            f"{', '.join(TIMING_COLUMNS)})")
    col = {c: header.index(c) for c in TIMING_COLUMNS}
    by_id = {u: i for i, u in enumerate(plan["unit_id"])}
    seen: dict[str, tuple[str, int]] = {}
    times: dict[int, list[float]] = {}
    for n, line in enumerate(lines[1:], start=2):
        if not any(x.strip() for x in line):
            continue
        if len(line) != len(header):
            raise PlanError(f"{path}: row {n}: {len(line)} fields, the header has {len(header)}")
        get = {c: line[col[c]].strip() for c in TIMING_COLUMNS}
        if get["plan"] != info["plan"]:
            raise _bad(path, n, "plan", f"timings for plan '{get['plan']}', not this plan "
                       f"('{info['plan']}' in {plan_dir / PLAN_JSON}): another target's units")
        uid = get["unit_id"]
        if uid not in by_id:
            raise _bad(path, n, "unit_id", f"'{uid}' is not a unit of the plan")
        shape = get["input_shape"]
        if not all(p.isdigit() and int(p) > 0 for p in shape.split("x")):
            raise _bad(path, n, "input_shape", f"'{shape}' is not a shape like 1x32x16x16")
        if uid in seen and seen[uid][0] != shape:
            raise _bad(path, n, "input_shape", f"unit {uid} has shape {shape} here but "
                       f"{seen[uid][0]} in row {seen[uid][1]}")
        planned = plan["input_shape"].iloc[by_id[uid]]
        if shape != planned:
            raise _bad(path, n, "input_shape", f"unit {uid} was planned at {planned}, not {shape}")
        seen.setdefault(uid, (shape, n))
        try:
            ms = float(get["latency_ms"])
        except ValueError:
            raise _bad(path, n, "latency_ms", f"'{get['latency_ms']}' is not a number") from None
        if not math.isfinite(ms) or ms <= 0:
            raise _bad(path, n, "latency_ms", f"{get['latency_ms']} ms: a time must be a "
                       "positive, finite number")
        times.setdefault(by_id[uid], []).append(ms)
    if not times:
        raise PlanError(f"{path}: no timings (fill the latency_ms column of {TEMPLATE_CSV})")
    units = plan.iloc[sorted(times)]
    is_net = units["role"] == "network"
    samples = [Sample(decode(a), int(u), "plan")
               for a, u in zip(units.loc[~is_net, "arch"], units.loc[~is_net, "unit"])]
    parts = []
    if samples:
        rows = unit_rows(samples, None, "block")
        lat = [np.array(times[i]) for i in units.index[~is_net]]
        parts.append(long_table(rows, samples, [lat[k] for k in rows["net"]], 0, 1))
    if is_net.any():
        nets = [decode(a) for a in units.loc[is_net, "arch"]]
        parts.append(network_table(nets, [np.array(times[i]) for i in units.index[is_net]],
                                   len(plan)))
    table = pd.concat(parts, ignore_index=True)
    table["role"] = table["role"].map({0: "stem", 1: "block", 2: "head", -1: "network"})
    table["backend"] = BACKEND
    return table
