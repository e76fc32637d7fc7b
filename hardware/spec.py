"""Hardware spec: the typed, validated description of one accelerator.

Every number the simulator uses comes from a spec. Specs are YAML files in
``hardware/specs/``; ``load_spec`` accepts a path or a bundled spec's name.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hwnas.errors import read_yaml

SPECS_DIR = Path(__file__).parent / "specs"
DEFAULT_SPEC = "neural-engine-32"

# Op kinds the simulator knows; fusion rules may only name these. New kinds go at the
# end: the estimator's kernel kind codes are positions in this tuple. No bundled spec
# fuses resize or gate (the segmentation decoder's ops): a new rule would change the
# spec's hash, so every trained estimator, and a gate must see its whole input before
# it writes, so fusing it into its producer would save a launch but stream nothing.
OP_KINDS = ("conv", "depthwise", "fc", "add", "pool", "resize", "gate")


def tile_bytes(rows: int, cols: int, bytes_per_element: int) -> int:
    """The least SRAM an output-stationary array can work from: one fold's outputs and
    the row and column of operands streamed into it per cycle."""
    return (rows * cols + rows + cols) * bytes_per_element


class SpecError(ValueError):
    """A hardware spec that cannot be loaded; the message names the file and field."""


class _Strict(BaseModel):
    # NaN and infinities are refused everywhere; every number also has sane bounds.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class MacArray(_Strict):
    rows: int = Field(gt=0, le=4096)
    cols: int = Field(gt=0, le=4096)


class VectorUnit(_Strict):
    lanes: int = Field(gt=0, le=65536)


class Energy(_Strict):
    """Energy per event, in picojoules."""

    mac_pj: float = Field(ge=1e-6, le=1e6)
    sram_byte_pj: float = Field(ge=1e-6, le=1e6)
    dram_byte_pj: float = Field(ge=1e-6, le=1e6)


class HardwareSpec(_Strict):
    # A safe slug: it names files and folders (models/estimator/<name>, microbench tables).
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9]+([._-][A-Za-z0-9]+)*$")
    description: str = Field("", max_length=1000)
    clock_mhz: float = Field(ge=1, le=10_000)
    mac_array: MacArray
    dataflow: Literal["output_stationary"]
    vector_unit: VectorUnit
    depthwise_on: Literal["vector", "array"]
    bytes_per_element: int = Field(ge=1, le=8)
    sram_kib: float = Field(ge=1, le=1 << 30)               # 1 KiB .. 1 TiB
    dram_bandwidth_gb_s: float = Field(ge=1e-3, le=100_000)
    launch_overhead_cycles: int = Field(ge=0, le=10**9)
    # Each rule [producer, consumer] lets a consumer op join its producer's kernel:
    # one launch, and the tensor between them never leaves the chip.
    fusion: tuple[tuple[str, str], ...] = ()
    energy: Energy
    # A processor whose latency is measured on a runtime, not simulated: its estimator is
    # trained on measurements, evaluate times the models, and the numbers above serve
    # curation and memory only.
    measured_by: Literal["onnxruntime"] | None = None

    @field_validator("sram_kib")
    @classmethod
    def _holds_one_tile(cls, v, info):
        # fields above validate first; one that failed is reported on its own
        array, bpe = info.data.get("mac_array"), info.data.get("bytes_per_element")
        if array is not None and bpe is not None:
            need = tile_bytes(array.rows, array.cols, bpe)
            if v * 1024 < need:
                raise ValueError(f"SRAM below one tile of the {array.rows}x{array.cols} array "
                                 f"({need} bytes: {array.rows}x{array.cols} outputs and one "
                                 f"operand per row and column)")
        return v

    @field_validator("fusion")
    @classmethod
    def _known_kinds(cls, rules):
        for rule in rules:
            for kind in rule:
                if kind not in OP_KINDS:
                    raise ValueError(f"unknown op kind {kind!r} (known: {', '.join(OP_KINDS)})")
        return rules

    @property
    def parallelism(self) -> int:
        """The parallelism factor: output channels map onto the array's columns."""
        return self.mac_array.cols

    @property
    def sram_bytes(self) -> int:
        return int(self.sram_kib * 1024)

    @property
    def dram_bytes_per_cycle(self) -> float:
        return self.dram_bandwidth_gb_s * 1e9 / (self.clock_mhz * 1e6)

    def cycles_to_ms(self, cycles: float) -> float:
        return cycles / (self.clock_mhz * 1e3)

    def spec_hash(self) -> str:
        """Stable hash of every field: keys estimators and lineage to this exact spec."""
        data = self.model_dump(mode="json", exclude={"measured_by"} if self.measured_by is None
                               else set())  # the simulated specs keep their hashes
        blob = json.dumps(data, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _format_error(source: str, err: ValidationError) -> str:
    problems = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = {"extra_forbidden": "unknown field",
               "string_pattern_mismatch": "must be a plain name (letters, digits and single "
                                          "'.', '_' or '-' between them; no '/' or '..')",
               }.get(e["type"], e["msg"].removeprefix("Value error, "))
        problems.append(f"field '{field}': {msg}")
    return f"{source}: invalid hardware spec: " + "; ".join(problems)


def spec_from_dict(data: object, source: str = "<spec>") -> HardwareSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a hardware spec must be a mapping of fields")
    try:
        return HardwareSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_error(source, err)) from None


def resolve_spec_path(spec: str | Path) -> Path:
    """A path to a YAML file, or the name of a bundled spec (``neural-engine-32``)."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return SPECS_DIR / f"{spec}.yaml"


def available_specs() -> list[str]:
    return sorted(p.stem for p in SPECS_DIR.glob("*.yaml"))


def load_spec(spec: str | Path | HardwareSpec = DEFAULT_SPEC) -> HardwareSpec:
    if isinstance(spec, HardwareSpec):
        return spec
    path = resolve_spec_path(spec)
    if not path.is_file():
        raise SpecError(
            f"{path}: hardware spec not found (bundled specs: {', '.join(available_specs())})"
        )
    return spec_from_dict(read_yaml(path, SpecError), str(path))
