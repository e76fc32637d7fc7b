"""Simulate a whole architecture on a spec and report it as one flat record."""
from __future__ import annotations

from hardware.simulator import simulate_graph
from hardware.spec import HardwareSpec
from hwnas.arch import ArchSpec, encode
from hwnas.lowering import static_cost, to_graph


def simulate_arch(arch: ArchSpec, spec: HardwareSpec, noise: float = 0.0,
                  seed: int | None = None, per_kernel: bool = True) -> dict:
    """Latency, cycles, energy and utilization from the simulator, with the
    network's size: the record ``hwnas simulate --json`` prints."""
    graph = to_graph(arch)
    result = simulate_graph(graph, spec, noise, seed)
    cost = static_cost(arch, spec.bytes_per_element, graph)
    record = {
        "name": arch.name or encode(arch),
        "arch": encode(arch),
        "hardware": spec.name,
        "latency_ms": result.latency_ms,
        "cycles": result.cycles,
        "compute_cycles": result.compute_cycles,
        "energy_mj": result.energy_mj,
        "dram_bytes": result.dram_bytes,
        "utilization": result.utilization,
        "macs": cost.macs,
        "flops": cost.flops,
        "params": cost.params,
        "params_bytes": cost.params_bytes,
        "peak_activation_bytes": cost.peak_activation_bytes,
        "memory_bytes": cost.memory_bytes,
    }
    if per_kernel:
        record["kernels"] = [k.to_dict() for k in result.kernels]
    return record
