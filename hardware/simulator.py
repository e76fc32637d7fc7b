"""A fast analytic model of an NPU: closed-form cycles, DRAM traffic and energy.

Dense conv, 1x1 conv and FC are lowered to a GEMM (M = output pixels, N = output
channels, K = k*k*in) on an output-stationary R x C MAC array, costing
``ceil(M/R) * ceil(N/C) * (K + R + C - 2)`` cycles: SCALE-Sim's own count (the rows
of its demand matrices, one per cycle; its report's "Total Cycles" is that minus 1,
being the 0-based index of the last cycle; see tests/test_scalesim.py).
Depthwise, pooling, resize and elementwise ops run on the vector unit (channels across
lanes), or depthwise as per-channel GEMMs when the spec says ``depthwise_on: array``.
A gate pools its input, runs a small FC on the array, then scales the input: being a
sync point, it reads its input from DRAM twice when the input neither stays in SRAM
from the previous kernel nor fits there with the rest of the kernel.
A kernel costs ``max(compute, DRAM bytes / bandwidth) + launch overhead``; a model
is the sum over its fused kernels, with tensors handed between consecutive kernels
kept in SRAM when they fit.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from math import ceil

import numpy as np

from hardware.graph import (GEMM_KINDS, RESIZE_TAPS, Graph, Kernel, Op, fuse, residency,
                            single_op_graph)
from hardware.spec import HardwareSpec

@dataclass(frozen=True, slots=True)
class KernelResult:
    name: str
    kind: str
    compute_cycles: int
    memory_cycles: float
    cycles: float
    latency_ms: float
    macs: int
    dram_bytes: int
    sram_bytes: int
    energy_mj: float
    utilization: float  # share of the MAC array's peak used while computing

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ModelResult:
    kernels: tuple[KernelResult, ...]
    compute_cycles: int
    cycles: float
    latency_ms: float
    macs: int
    dram_bytes: int
    energy_mj: float
    utilization: float

    def to_dict(self, per_kernel: bool = True) -> dict:
        out = {k: getattr(self, k) for k in
               ("compute_cycles", "cycles", "latency_ms", "macs", "dram_bytes",
                "energy_mj", "utilization")}
        if per_kernel:
            out["kernels"] = [k.to_dict() for k in self.kernels]
        return out


def gemm_cycles(m: int, n: int, k: int, rows: int, cols: int) -> int:
    """Output-stationary systolic GEMM: each fold of R x C outputs streams K
    operands and takes R + C - 2 cycles to fill and drain."""
    return ceil(m / rows) * ceil(n / cols) * (k + rows + cols - 2)


def op_compute_cycles(op: Op, spec: HardwareSpec) -> int:
    rows, cols = spec.mac_array.rows, spec.mac_array.cols
    lanes = spec.vector_unit.lanes
    pixels = op.out_h * op.out_w
    if op.kind in GEMM_KINDS:
        m = 1 if op.kind == "fc" else pixels
        return gemm_cycles(m, op.out_c, op.kernel * op.kernel * op.in_c, rows, cols)
    if op.kind == "depthwise":
        if spec.depthwise_on == "array":  # one single-filter GEMM per channel
            return op.out_c * gemm_cycles(pixels, 1, op.kernel * op.kernel, rows, cols)
        return ceil(op.out_c / lanes) * pixels * op.kernel * op.kernel
    if op.kind == "add":
        return ceil(op.out_c / lanes) * pixels
    if op.kind == "pool":
        return ceil(op.in_c / lanes) * op.in_h * op.in_w
    if op.kind == "resize":
        return ceil(op.out_c / lanes) * pixels * RESIZE_TAPS
    if op.kind == "gate":  # pooling pass, the FC (a 1-row GEMM), then the scaling pass
        return (2 * ceil(op.in_c / lanes) * op.in_h * op.in_w
                + gemm_cycles(1, op.out_c, op.in_c, rows, cols))
    raise ValueError(f"unknown op kind {op.kind!r}")


def _array_macs(op: Op, spec: HardwareSpec) -> int:
    on_array = (op.kind in GEMM_KINDS or op.kind == "gate"
                or (op.kind == "depthwise" and spec.depthwise_on == "array"))
    return op.macs if on_array else 0


def kernel_result(kernel: Kernel, spec: HardwareSpec, tensors: tuple[int, ...],
                  resident_in: frozenset[int] = frozenset(),
                  resident_out: frozenset[int] = frozenset(),
                  noise: float = 0.0, rng: np.random.Generator | None = None) -> KernelResult:
    """Cost one kernel. ``resident_in``/``resident_out`` are the tensors that stay
    in SRAM instead of crossing DRAM."""
    bpe = spec.bytes_per_element
    compute = sum(op_compute_cycles(op, spec) for op in kernel.ops)
    weight_bytes = sum(op.params for op in kernel.ops) * bpe
    in_bytes = sum(tensors[t] for t in kernel.inputs) * bpe
    in_dram = sum(tensors[t] for t in kernel.inputs if t not in resident_in) * bpe
    out_dram = sum(tensors[t] for t in kernel.outputs if t not in resident_out) * bpe
    out_bytes = sum(tensors[t] for t in kernel.outputs) * bpe
    working_set = in_bytes + weight_bytes + out_bytes
    if working_set <= spec.sram_bytes:
        dram = weight_bytes + in_dram + out_dram
    else:
        # Tiled: either re-fetch the input once per output-channel tile, or the
        # weights once per spatial tile, whichever moves fewer bytes.
        tiles = ceil(working_set / spec.sram_bytes)
        dram = min(weight_bytes + in_dram + in_bytes * (tiles - 1),
                   weight_bytes * tiles + in_dram) + out_dram
        # A gate scales only after pooling all of its input: an input from DRAM that
        # cannot stay on chip is streamed in a second time.
        dram += sum(tensors[t] for t in _gate_inputs(kernel) if t not in resident_in) * bpe
    memory_cycles = dram / spec.dram_bytes_per_cycle
    cycles = max(compute, memory_cycles) + spec.launch_overhead_cycles
    if noise and rng is not None:
        cycles *= max(0.5, 1.0 + noise * rng.standard_normal())
    macs = sum(op.macs for op in kernel.ops)
    array_macs = sum(_array_macs(op, spec) for op in kernel.ops)
    vector_ops = sum(op.vector_ops for op in kernel.ops)
    sram = sum((op.in_elements + op.params + op.out_elements) for op in kernel.ops) * bpe
    sram += sum(op.in_elements for op in kernel.ops if op.kind == "gate") * bpe  # 2nd pass
    e = spec.energy
    energy_pj = (macs + vector_ops) * e.mac_pj + sram * e.sram_byte_pj + dram * e.dram_byte_pj
    peak = spec.mac_array.rows * spec.mac_array.cols * compute
    return KernelResult(
        name=kernel.name, kind=kernel.kind, compute_cycles=compute,
        memory_cycles=memory_cycles, cycles=cycles, latency_ms=spec.cycles_to_ms(cycles),
        macs=macs, dram_bytes=int(dram), sram_bytes=sram, energy_mj=energy_pj * 1e-9,
        utilization=array_macs / peak if peak else 0.0)


def _gate_inputs(kernel: Kernel) -> list[int]:
    """Tensors a gate of the kernel reads from outside it (a tensor made inside the
    kernel stays on chip, as every intermediate of a fused kernel does)."""
    return [op.inputs[0] for op in kernel.ops
            if op.kind == "gate" and op.inputs[0] in kernel.inputs]


def simulate_kernels(graph: Graph, kernels: list[Kernel], spec: HardwareSpec,
                     noise: float = 0.0, seed: int | None = None) -> ModelResult:
    rng = np.random.default_rng(seed) if noise else None
    resident = frozenset(residency(graph, kernels, spec))
    results = tuple(kernel_result(k, spec, graph.tensors, resident, resident, noise, rng)
                    for k in kernels)
    compute = sum(r.compute_cycles for r in results)
    cycles = sum(r.cycles for r in results)
    array_macs = sum(_array_macs(op, spec) for op in graph.ops)
    peak = spec.mac_array.rows * spec.mac_array.cols * compute
    return ModelResult(
        kernels=results, compute_cycles=compute, cycles=cycles,
        latency_ms=spec.cycles_to_ms(cycles), macs=sum(r.macs for r in results),
        dram_bytes=sum(r.dram_bytes for r in results),
        energy_mj=sum(r.energy_mj for r in results),
        utilization=array_macs / peak if peak else 0.0)


def simulate_graph(graph: Graph, spec: HardwareSpec, noise: float = 0.0,
                   seed: int | None = None) -> ModelResult:
    """Fuse the graph per the spec's rules and simulate it."""
    return simulate_kernels(graph, fuse(graph, spec.fusion), spec, noise, seed)


def simulate_op(op: Op, spec: HardwareSpec, noise: float = 0.0,
                seed: int | None = None) -> KernelResult:
    """One op as its own kernel, input from DRAM and output back to DRAM."""
    graph = single_op_graph(op)
    return simulate_kernels(graph, fuse(graph, ()), spec, noise, seed).kernels[0]
