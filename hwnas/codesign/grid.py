"""The accelerators a co-design study compares: the product of ``codesign.grid``'s axes, each
point the ``codesign.base`` spec with those values, validated like a bundled spec."""
from __future__ import annotations

import itertools
from pathlib import Path

from hardware.spec import HardwareSpec, SpecError, load_spec, spec_from_dict
from hwnas.errors import UserError, one_line

# The axes in the order of dvc.yaml's matrix (after the task): a point's key is its values
# joined by "-", as DVC writes them into the point's folder name.
AXES = ("mac_array", "vector_lanes", "sram_kib", "dram_bandwidth_gb_s", "fusion")
MAX_POINTS = 100  # a point costs one to two minutes: a typo in an axis should not cost a day

# spec field -> the axis that sets it (an error names the axis, not the spec field)
_AXIS_OF = {"mac_array": "mac_array", "vector_unit": "vector_lanes", "sram_kib": "sram_kib",
            "dram_bandwidth_gb_s": "dram_bandwidth_gb_s", "fusion": "fusion"}


class GridError(UserError):
    """A grid that cannot make its specs; the message names the key and value."""


def points(grid: dict) -> list[dict]:
    """Every point of the grid, the first axis varying slowest (DVC's matrix order)."""
    return [dict(zip(AXES, values)) for values in itertools.product(*(grid[a] for a in AXES))]


def _text(value) -> str:
    """A value as DVC interpolates it into a string (booleans in lower case)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def point_key(point: dict) -> str:
    """The point's folder name, as dvc.yaml's ``outs`` of the matrix item spell it."""
    return "-".join(_text(point[a]) for a in AXES)


def stage_name(task: str, point: dict) -> str:
    """The point's DVC stage (``dvc stage list``; DVC spells its name with Python's str())."""
    return f"codesign@{task}-" + "-".join(str(point[a]) for a in AXES)


def check_as_dvc_reads(path: Path, grid: dict) -> None:
    """What dvc.yaml's matrix builds the points from is what hwnas reads: ``codesign`` at the
    top level only (a task section's would never reach the matrix), and each value read
    alike by DVC (YAML 1.2) and hwnas (YAML 1.1: ``yes`` is true here, text there), else a
    point's stage and folder would be named apart."""
    from ruamel.yaml import YAML

    try:
        data = YAML(typ="safe", pure=True).load(path.read_text())
    except Exception as err:  # YAML 1.1 read it (the schema did): 1.2 may still refuse it
        raise GridError(f"DVC cannot read it as YAML 1.2: {one_line(err, 160)}") from None
    for name, section in data.items():
        if isinstance(section, dict) and "codesign" in section:
            raise GridError(f"{name}.codesign: set the study at the top level only (dvc.yaml's "
                            "matrix reads codesign.grid there)")
    theirs = data["codesign"]["grid"]
    for axis in AXES:
        for ours, dvc in zip(grid[axis], theirs[axis]):
            if type(ours) is not type(dvc) or ours != dvc:
                raise GridError(f"codesign.grid.{axis}: {dvc!r} reads as {ours!r} here but as "
                                f"{type(dvc).__name__} {dvc!r} to DVC (YAML 1.2): write "
                                + ("true or false" if isinstance(ours, bool) else repr(ours)))


def describe(point: dict) -> str:
    m = point["mac_array"]
    return (f"{m}x{m} MACs, {point['vector_lanes']} lanes, {point['sram_kib']:g} KiB SRAM, "
            f"{point['dram_bandwidth_gb_s']:g} GB/s, fusion {'on' if point['fusion'] else 'off'}")


def point_spec(base: HardwareSpec, point: dict) -> HardwareSpec:
    """``base`` with the point's array (square), lanes, SRAM, DRAM bandwidth and fusion rules
    (the base's, or none). Raises ``GridError`` naming the axis that breaks the spec."""
    data = base.model_dump(mode="json")
    m = point["mac_array"]
    data.update(name="codesign-point", mac_array={"rows": m, "cols": m},
                vector_unit={"lanes": point["vector_lanes"]}, sram_kib=point["sram_kib"],
                dram_bandwidth_gb_s=point["dram_bandwidth_gb_s"],
                fusion=data["fusion"] if point["fusion"] else [])
    try:
        spec = spec_from_dict(data, "spec")
    except SpecError as err:
        detail = str(err).split("invalid hardware spec: ", 1)[-1]
        field = detail.split("'", 2)[1].split(".")[0] if "'" in detail else ""
        axis = _AXIS_OF.get(field, field)
        others = ", ".join(f"{a} {point[a]}" for a in AXES if a != axis)
        raise GridError(f"codesign.grid.{axis}: {point.get(axis)!r} (with {others}) makes an "
                        f"invalid spec: {detail}") from None
    # named once valid (a value such as -1 would first break the name's pattern)
    return spec.model_copy(update={"name": f"codesign-{point_key(point)}",
                                   "description": f"co-design point of {base.name}: "
                                                  f"{describe(point)}"})


def specs(base: str, grid: dict) -> dict[str, HardwareSpec]:
    """Each point's spec by key; a grid that is empty, too large or makes an invalid spec
    is a ``GridError`` before anything runs."""
    for axis in AXES:
        values = grid.get(axis)
        if not isinstance(values, list) or not values:
            raise GridError(f"codesign.grid.{axis}: a list of at least one value is needed")
        if len(set(values)) < len(values):  # 16 and 16.0 are one chip
            raise GridError(f"codesign.grid.{axis}: a value appears twice")
    todo = points(grid)
    if len(todo) > MAX_POINTS:
        raise GridError(f"codesign.grid: {len(todo)} points (the product of the axes); at "
                        f"most {MAX_POINTS}")
    try:
        spec = load_spec(base)
    except SpecError as err:
        raise GridError(f"codesign.base: {err}") from None
    if spec.measured_by:  # its variants would be chips nobody can measure
        raise GridError(f"codesign.base: {spec.name} is measured by {spec.measured_by}; the "
                        f"co-design varies a simulated accelerator: name one")
    out, seen = {}, {}
    for p in todo:
        key = point_key(p)
        out[key] = point_spec(spec, p)
        same = out[key].model_dump(exclude={"name", "description"})
        twin = next((k for k, v in seen.items() if v == same), None)
        if twin:  # e.g. a fusion axis over a base spec without fusion rules
            raise GridError(f"codesign.grid: points {twin} and {key} make the same chip")
        seen[key] = same
    return out


def area_mm2(spec: HardwareSpec, cost: dict) -> float:
    """The hardware cost proxy: MACs, vector lanes and SRAM at ``cost``'s mm^2 each."""
    return (spec.mac_array.rows * spec.mac_array.cols * cost["mac_mm2"]
            + spec.vector_unit.lanes * cost["lane_mm2"] + spec.sram_kib * cost["sram_kib_mm2"])
