"""The op graph the accelerator runs, and fusion of ops into kernels.

An ``Op`` is one operator with its shapes (batch 1, "same" padding). Tensors are
numbered; tensor 0 is the network input and each op writes one new tensor. Fusion
rules are data from the hardware spec: ``fuse`` groups ops into the kernels the
device launches, and the kernel's kind (``"depthwise+conv+add"``) keys both the
microbenchmark table and the latency estimator.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import ceil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hardware.spec import HardwareSpec

# Ops that run on the MAC array as a GEMM; the others run on the vector unit
# (depthwise may run on the array too, as per-channel GEMMs: see the simulator; a
# gate's small FC runs on the array, its pooling and scaling on the vector unit).
GEMM_KINDS = frozenset({"conv", "fc"})

# Bilinear resize: each output element is a weighted sum of its 4 nearest inputs,
# 4 multiply-accumulates on the vector unit (as a 2x2 depthwise tap would be).
RESIZE_TAPS = 4

# A tensor stays on chip between two kernels only if it takes at most this share
# of SRAM, leaving room for the consumer's weights and output.
RESIDENT_SRAM_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class Op:
    name: str
    kind: str  # conv | depthwise | fc | add | pool | resize | gate
    in_h: int
    in_w: int
    in_c: int
    out_c: int
    kernel: int = 1  # for a resize: the integer upsampling factor
    stride: int = 1
    inputs: tuple[int, ...] = (0,)
    output: int = 1

    # resize: bilinear upsampling of H and W by ``kernel``, channels kept.
    # gate: SE-style channel gating, out = x * sigmoid(W @ mean_hw(x) + b), shape kept.
    @property
    def out_h(self) -> int:
        if self.kind == "resize":
            return self.in_h * self.kernel
        return 1 if self.kind in ("pool", "fc") else ceil(self.in_h / self.stride)

    @property
    def out_w(self) -> int:
        if self.kind == "resize":
            return self.in_w * self.kernel
        return 1 if self.kind in ("pool", "fc") else ceil(self.in_w / self.stride)

    @property
    def out_elements(self) -> int:
        return self.out_h * self.out_w * self.out_c

    @property
    def in_elements(self) -> int:
        """Elements read from activations (both operands for an add)."""
        per_input = self.in_h * self.in_w * self.in_c
        return per_input * len(self.inputs)

    @property
    def macs(self) -> int:
        pixels = self.out_h * self.out_w
        if self.kind == "conv":
            return pixels * self.out_c * self.kernel * self.kernel * self.in_c
        if self.kind == "depthwise":
            return pixels * self.out_c * self.kernel * self.kernel
        if self.kind in ("fc", "gate"):  # a gate's FC maps the pooled channels to scales
            return self.in_c * self.out_c
        return 0

    @property
    def vector_ops(self) -> int:
        """Elementwise work done on the vector unit (adds, pooling accumulations,
        resize taps; a gate pools its input, then scales it: two passes)."""
        if self.kind == "add":
            return self.out_elements
        if self.kind == "pool":
            return self.in_h * self.in_w * self.in_c
        if self.kind == "resize":
            return RESIZE_TAPS * self.out_elements
        if self.kind == "gate":
            return 2 * self.in_h * self.in_w * self.in_c
        return 0

    @property
    def params(self) -> int:
        """Weights plus one bias per output channel (BN folded into the conv)."""
        if self.kind == "conv":
            return self.kernel * self.kernel * self.in_c * self.out_c + self.out_c
        if self.kind == "depthwise":
            return self.kernel * self.kernel * self.out_c + self.out_c
        if self.kind in ("fc", "gate"):
            return self.in_c * self.out_c + self.out_c
        return 0

    def describe(self) -> dict:
        return {"op": self.kind, "height": self.in_h, "width": self.in_w, "in": self.in_c,
                "out": self.out_c, "kernel": self.kernel, "stride": self.stride}


@dataclass(frozen=True, slots=True)
class Graph:
    """Ops in execution order; ``tensors[t]`` is tensor t's element count."""

    ops: tuple[Op, ...]
    tensors: tuple[int, ...]
    outputs: tuple[int, ...] = ()  # graph outputs (default: the last op's tensor)

    @property
    def graph_outputs(self) -> tuple[int, ...]:
        return self.outputs or ((self.ops[-1].output,) if self.ops else ())


@dataclass(frozen=True, slots=True)
class Kernel:
    """Ops the device runs as one launch; tensors between them stay on chip."""

    ops: tuple[Op, ...]
    inputs: tuple[int, ...]   # tensors read from outside the kernel
    outputs: tuple[int, ...]  # tensors the kernel produces for later kernels
    name: str = field(default="")

    @property
    def kind(self) -> str:
        return "+".join(op.kind for op in self.ops)


def single_op_graph(op: Op) -> Graph:
    """A one-op graph: the op's input comes from DRAM and its output goes back."""
    inputs = tuple(range(len(op.inputs)))
    op = Op(op.name, op.kind, op.in_h, op.in_w, op.in_c, op.out_c, op.kernel, op.stride,
            inputs=inputs, output=len(inputs))
    per_input = op.in_h * op.in_w * op.in_c
    return Graph(ops=(op,), tensors=(per_input,) * len(inputs) + (op.out_elements,))


def consumers(graph: Graph) -> dict[int, list[int]]:
    """Tensor id -> indices of the ops that read it."""
    readers: dict[int, list[int]] = {}
    for i, op in enumerate(graph.ops):
        for t in op.inputs:
            readers.setdefault(t, []).append(i)
    return readers


def fuse(graph: Graph, rules) -> list[Kernel]:
    """Group ops into kernels: an op joins the previous op's kernel when a rule
    ``(previous kind, op kind)`` allows it, it reads the previous op's output, and
    nothing else reads that output."""
    allowed = {tuple(rule) for rule in rules}
    readers = consumers(graph)
    groups: list[list[Op]] = []
    for i, op in enumerate(graph.ops):
        if groups:
            prev = groups[-1][-1]
            if ((prev.kind, op.kind) in allowed and prev.output in op.inputs
                    and readers.get(prev.output) == [i]):
                groups[-1].append(op)
                continue
        groups.append([op])
    kernels = []
    finals = set(graph.graph_outputs)
    for ops in groups:
        produced = {op.output for op in ops}
        first, last = ops[0], ops[-1]
        ins = tuple(dict.fromkeys(t for op in ops for t in op.inputs if t not in produced))
        outs = tuple(op.output for op in ops if op is last or op.output in finals
                     or any(graph.ops[j] not in ops for j in readers.get(op.output, ())))
        kernels.append(Kernel(tuple(ops), ins, outs, name=first.name if len(ops) == 1
                              else f"{first.name}..{last.name}"))
    return kernels


def param_count(graph: Graph) -> int:
    return sum(op.params for op in graph.ops)


def macs(graph: Graph) -> int:
    return sum(op.macs for op in graph.ops)


def peak_live_elements(graph: Graph) -> int:
    """Peak of the elements held by live tensors over the execution order.

    A tensor lives from the op that writes it to the last op that reads it (graph
    inputs from the start, graph outputs to the end); during an op its inputs and
    its output are live together, as are skip tensors waiting for their add.
    """
    last_read: dict[int, int] = {}
    for i, op in enumerate(graph.ops):
        for t in op.inputs:
            last_read[t] = i
    finals = set(graph.graph_outputs)
    produced = {op.output for op in graph.ops}
    live = {t for t in last_read if t not in produced}
    held = sum(graph.tensors[t] for t in live)
    peak = held
    for i, op in enumerate(graph.ops):
        live.add(op.output)
        held += graph.tensors[op.output]
        peak = max(peak, held)
        for t in set(op.inputs):
            if last_read[t] == i and t not in finals:
                live.discard(t)
                held -= graph.tensors[t]
    return peak


def residency(graph: Graph, kernels: list[Kernel], spec: "HardwareSpec") -> set[int]:
    """Tensors handed from one kernel straight to the next, read by nothing else,
    and small enough to stay in SRAM."""
    readers = consumers(graph)
    op_kernel = {id(op): i for i, k in enumerate(kernels) for op in k.ops}
    limit = spec.sram_bytes * RESIDENT_SRAM_SHARE
    finals = set(graph.graph_outputs)
    resident = set()
    for i, kernel in enumerate(kernels[:-1]):
        for t in kernel.outputs:
            if t in finals or graph.tensors[t] * spec.bytes_per_element > limit:
                continue
            if all(op_kernel[id(graph.ops[j])] == i + 1 for j in readers.get(t, ())):
                resident.add(t)
    return resident
