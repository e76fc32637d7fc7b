"""Lower an architecture to the op graph the accelerator runs, and cost it.

``to_graph(arch)`` is hardware-agnostic; ``kernels(arch, spec)`` fuses it by the
spec's rules. Memory is computed from the graph: parameter bytes plus the peak of
live activation bytes over the execution order.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import ceil

from hardware.graph import Graph, Kernel, Op, fuse, macs, param_count, peak_live_elements
from hardware.spec import HardwareSpec
from hwnas.arch import ArchSpec, BlockSpec, ClassificationHead


class _Builder:
    """Appends ops while tracking the current tensor and its shape."""

    def __init__(self, channels: int, height: int, width: int):
        self.ops: list[Op] = []
        self.tensors: list[int] = [channels * height * width]
        self.cur, self.c, self.h, self.w = 0, channels, height, width

    def op(self, name: str, kind: str, out_c: int, kernel: int = 1, stride: int = 1,
           extra_input: int | None = None) -> int:
        inputs = (self.cur,) if extra_input is None else (self.cur, extra_input)
        op = Op(name, kind, self.h, self.w, self.c, out_c, kernel, stride,
                inputs=inputs, output=len(self.tensors))
        self.ops.append(op)
        self.tensors.append(op.out_elements)
        self.cur, self.c, self.h, self.w = op.output, out_c, op.out_h, op.out_w
        return op.output

    def graph(self) -> Graph:
        return Graph(tuple(self.ops), tuple(self.tensors))


def _lower_block(g: _Builder, b: BlockSpec, prefix: str) -> None:
    skip, in_c = g.cur, g.c
    mid = b.mid(in_c)
    if b.type == "ibn":
        if b.expand != 1:
            g.op(f"{prefix}.expand", "conv", mid)
        g.op(f"{prefix}.dw", "depthwise", mid, b.kernel, b.stride)
        g.op(f"{prefix}.project", "conv", b.out)
    elif b.type == "fused_ibn":
        g.op(f"{prefix}.fused", "conv", mid, b.kernel, b.stride)
        g.op(f"{prefix}.project", "conv", b.out)
    else:
        g.op(f"{prefix}.conv", "conv", b.out, b.kernel, b.stride)
    if b.residual(in_c):
        g.op(f"{prefix}.add", "add", b.out, extra_input=skip)


def _lower_classification(g: _Builder, head: ClassificationHead) -> None:
    if head.features:
        g.op("head.conv", "conv", head.features)
    g.op("head.pool", "pool", g.c)
    g.op("head.fc", "fc", head.classes)


HEAD_LOWERING = {"classification": _lower_classification}


def to_graph(arch: ArchSpec) -> Graph:
    i = arch.input
    g = _Builder(i.channels, i.height, i.width)
    g.op("stem", "conv", arch.stem.out, arch.stem.kernel, arch.stem.stride)
    for n, block in enumerate(arch.blocks):
        _lower_block(g, block, f"blocks.{n}")
    HEAD_LOWERING[arch.head.task](g, arch.head)
    return g.graph()


def block_graph(block: BlockSpec, in_channels: int, height: int, width: int) -> Graph:
    """One block alone, as the microbenchmarks measure it."""
    g = _Builder(in_channels, height, width)
    _lower_block(g, block, "block")
    return g.graph()


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
