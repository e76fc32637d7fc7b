"""Lower an architecture to the op graph the accelerator runs, and cost it.

What each unit (stem, block, head) is made of is defined once here, as ``OpSpec``
tuples (``stem_ops``, ``block_ops``, ``HEAD_OPS``); ``unit_graph_ops`` gives them shapes.
``to_graph(arch)`` chains them into a graph, the estimator's vectorized
``hwnas.estimator.decompose`` tabulates the same ops, and the microbenchmark sampler
sums their MACs. ``kernels(arch, spec)`` fuses the graph by the spec's rules. Memory is
computed from the graph: parameter bytes plus the peak of live activation bytes over
the execution order.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import ceil
from typing import Callable, NamedTuple

from hardware.graph import Graph, Kernel, Op, fuse, macs, param_count, peak_live_elements
from hardware.spec import HardwareSpec
from hwnas.arch import ArchSpec, BlockSpec, ClassificationHead, StemSpec


class OpSpec(NamedTuple):
    """One op of a unit; its input is the previous op's output (the unit's input first)."""

    name: str        # within the unit; "" names the op after the unit itself
    kind: str        # conv | depthwise | fc | add | pool | resize | gate
    out_c: int
    kernel: int = 1  # resize: the integer upsampling factor (bilinear), not a window
    stride: int = 1
    residual: bool = False  # also reads the unit's input (the skip connection)


def stem_ops(stem: StemSpec) -> tuple[OpSpec, ...]:
    return (OpSpec("", "conv", stem.out, stem.kernel, stem.stride),)


def block_ops(b: BlockSpec, in_c: int) -> tuple[OpSpec, ...]:
    mid = b.mid(in_c)
    if b.type == "ibn":
        ops = (OpSpec("expand", "conv", mid),) if b.expand != 1 else ()
        ops += (OpSpec("dw", "depthwise", mid, b.kernel, b.stride), OpSpec("project", "conv", b.out))
    elif b.type == "fused_ibn":
        ops = (OpSpec("fused", "conv", mid, b.kernel, b.stride), OpSpec("project", "conv", b.out))
    else:
        ops = (OpSpec("conv", "conv", b.out, b.kernel, b.stride),)
    if b.residual(in_c):
        ops += (OpSpec("add", "add", b.out, residual=True),)
    return ops


def _classification_ops(head: ClassificationHead, in_c: int) -> tuple[OpSpec, ...]:
    c = head.features or in_c
    conv = (OpSpec("conv", "conv", head.features),) if head.features else ()
    return conv + (OpSpec("pool", "pool", c), OpSpec("fc", "fc", head.classes))


# Keyed by ``head.task``: a new task's head adds an entry here.
HEAD_OPS: dict[str, Callable[..., tuple[OpSpec, ...]]] = {"classification": _classification_ops}

Unit = StemSpec | BlockSpec | ClassificationHead


def unit_ops(unit: Unit, in_c: int) -> tuple[OpSpec, ...]:
    if isinstance(unit, BlockSpec):
        return block_ops(unit, in_c)
    if isinstance(unit, StemSpec):
        return stem_ops(unit)
    return HEAD_OPS[unit.task](unit, in_c)


def units(arch: ArchSpec) -> tuple[Unit, ...]:
    """The units in execution order: the stem, each block, the head."""
    return (arch.stem, *arch.blocks, arch.head)


def unit_name(unit: int, n_units: int) -> str:
    if unit == 0:
        return "stem"
    return "head" if unit == n_units - 1 else f"blocks.{unit - 1}"


def unit_graph_ops(ops: tuple[OpSpec, ...], c: int, h: int, w: int, prefix: str = "",
                   first: int = 0) -> list[Op]:
    """The unit's ops with shapes, for an input of ``c`` x ``h`` x ``w`` in tensor
    ``first``; op i writes tensor ``first + i + 1``."""
    out, cur = [], first
    for name, kind, out_c, kernel, stride, residual in ops:
        name = f"{prefix}.{name}" if name and prefix else (name or prefix)
        op = Op(name, kind, h, w, c, out_c, kernel, stride,
                inputs=(cur, first) if residual else (cur,), output=cur + 1)
        out.append(op)
        cur, c, h, w = cur + 1, out_c, op.out_h, op.out_w
    return out


def _graph(ops: list[Op], in_elements: int) -> Graph:
    return Graph(tuple(ops), (in_elements,) + tuple(op.out_elements for op in ops))


def to_graph(arch: ArchSpec) -> Graph:
    i = arch.input
    c, h, w = i.channels, i.height, i.width
    ops: list[Op] = []
    parts = units(arch)
    for u, unit in enumerate(parts):
        new = unit_graph_ops(unit_ops(unit, c), c, h, w, unit_name(u, len(parts)), len(ops))
        ops += new
        c, h, w = new[-1].out_c, new[-1].out_h, new[-1].out_w
    return _graph(ops, i.channels * i.height * i.width)


def block_graph(block: BlockSpec, in_channels: int, height: int, width: int) -> Graph:
    """One block alone, as the microbenchmarks measure it."""
    ops = unit_graph_ops(block_ops(block, in_channels), in_channels, height, width, "block")
    return _graph(ops, in_channels * height * width)


def kernels(arch: ArchSpec, spec: HardwareSpec) -> list[Kernel]:
    """The fused kernel list the simulator (and the estimator) cost for ``arch``."""
    return fuse(to_graph(arch), spec.fusion)


@dataclass(frozen=True, slots=True)
class StaticCost:
    """Hardware-independent size of a network (bytes use the spec's element size)."""

    macs: int
    params: int
    params_bytes: int
    peak_activation_bytes: int

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def memory_bytes(self) -> int:
        return self.params_bytes + self.peak_activation_bytes


def static_cost(arch: ArchSpec, bytes_per_element: int = 1, graph: Graph | None = None) -> StaticCost:
    graph = graph or to_graph(arch)
    params = param_count(graph)
    return StaticCost(macs=macs(graph), params=params, params_bytes=params * bytes_per_element,
                      peak_activation_bytes=peak_live_elements(graph) * bytes_per_element)


def feature_map_sizes(arch: ArchSpec) -> list[tuple[int, int]]:
    """(height, width) at each block's input."""
    h = ceil(arch.input.height / arch.stem.stride)
    w = ceil(arch.input.width / arch.stem.stride)
    sizes = []
    for b in arch.blocks:
        sizes.append((h, w))
        h, w = ceil(h / b.stride), ceil(w / b.stride)
    return sizes


from hwnas import tasks as _tasks  # noqa: E402

_tasks.load_heads()  # the tasks' heads register into HEADS and HEAD_OPS
