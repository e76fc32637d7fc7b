"""Decompose batches of architectures into the kernels the device runs, with named features.

This is a vectorized twin of ``hardware.graph.fuse`` + ``hardware.graph.residency``:
the ops of every network in a batch (from ``hwnas.lowering``'s unit definitions) go into
flat numpy arrays, fusion and SRAM residency are decided with array operations, and each kernel
becomes one row of named features (shapes, MACs, bytes moved, ceil-utilization against
the MAC array and vector lanes, residency, the spec's own fields). It never touches the
simulator; ``tests/test_estimator.py`` checks it against the graph code op for op.

Two groupings:
- ``"kernel"``: ops fused by the spec's rules, as the accelerator launches them (the
  simulator backend; the model key is the kernel kind, e.g. ``depthwise+conv+add``);
- ``"block"``: one row per stem / block / head (the host-CPU backend, which runs each
  block as a PyTorch module; ``spec`` may then be ``None``).
"""
from __future__ import annotations

from functools import lru_cache
from itertools import chain
from typing import Iterable

import numpy as np
import pandas as pd

from hardware.graph import RESIDENT_SRAM_SHARE, RESIZE_TAPS
from hardware.spec import OP_KINDS, HardwareSpec
from hwnas.arch import ArchSpec, BlockSpec, StemSpec
from hwnas.lowering import unit_graph_ops, unit_ops, units

CONV, DEPTHWISE, FC, ADD, POOL, RESIZE, GATE = (
    OP_KINDS.index(k) for k in ("conv", "depthwise", "fc", "add", "pool", "resize", "gate"))
_BASE = len(OP_KINDS) + 1  # kind codes: sum of (kind + 1) * _BASE ** position

# How each backend's measurements are grouped: fused kernels on the simulator, whole units
# (stem, block, head) where they are measured; ``imported``: a device team's timings of a plan.
GROUPING = {"sim": "kernel", "onnxruntime": "block", "imported": "block"}

# Unit roles within a network (column ``role``).
ROLE_STEM, ROLE_BLOCK, ROLE_HEAD = 0, 1, 2

# Columns the models use. Spec columns are constant within one spec; they are named
# so that the manifest records them and a model for several specs could use them.
SHAPE_FEATURES = ("in_h", "in_w", "in_c", "out_h", "out_w", "out_c", "mid_c", "kernel",
                  "stride", "n_ops", "residual")
WORK_FEATURES = ("macs", "gemm_macs", "dw_macs", "vector_elems", "params",
                 "in_bytes", "out_bytes", "weight_bytes", "act_bytes")
ARRAY_FEATURES = ("gemm_folds", "gemm_padded_macs", "gemm_k", "array_util", "dw_padded",
                  "vector_padded", "lane_util", "compute_est_cycles",
                  "in_dram_bytes", "out_dram_bytes", "in_resident", "out_resident",
                  "dram_min_bytes", "working_set_bytes", "sram_ratio", "sram_tiles",
                  "memory_est_cycles", "roofline_cycles")
SPEC_FEATURES = ("spec_rows", "spec_cols", "spec_lanes", "spec_sram_bytes",
                 "spec_dram_bytes_per_cycle", "spec_bytes_per_element",
                 "spec_launch_overhead_cycles", "spec_clock_mhz")
# A CPU's vector units: how the channels fill 8- and 16-float registers (AVX2, AVX-512; ONNX
# Runtime's blocked NCHWc kernels run only on aligned channels). Measured targets only.
SIMD_FEATURES = tuple(f"{c}_{op}{b}" for c in ("in_c", "mid_c", "out_c") for op in ("pad", "mod")
                      for b in (8, 16))
# Features whose trained range is checked at estimation time (out_of_range flags).
RANGE_FEATURES = ("in_h", "in_c", "out_c", "mid_c", "kernel", "macs")


def feature_names(spec: HardwareSpec | None) -> list[str]:
    names = list(SHAPE_FEATURES + WORK_FEATURES)
    return names + list(ARRAY_FEATURES + SPEC_FEATURES if spec is not None else SIMD_FEATURES)


def kind_name(code: int) -> str:
    parts = []
    while code:
        parts.append(OP_KINDS[code % _BASE - 1])
        code //= _BASE
    return "+".join(parts)


# Columns of one op's row in ``_unit_rows`` (``op_table`` adds ``net`` and ``unit``).
_ROW = ("role", "kind", "in_h", "in_w", "in_c", "out_c", "k", "s", "skip_back")
_ROLES = {StemSpec: ROLE_STEM, BlockSpec: ROLE_BLOCK}  # any other unit is a head
_KIND_CODES = {k: i for i, k in enumerate(OP_KINDS)}


@lru_cache(maxsize=1 << 16)
def _unit_rows(unit, c: int, h: int, w: int) -> tuple[tuple[int, ...], int, int, int, int]:
    """One unit's ops at an input shape, from ``hwnas.lowering``: its rows (``_ROW``,
    flattened), op count and output shape. Cached: a batch repeats few (unit, shape)
    pairs. ``skip_back`` > 0 on an add is how many ops back its skip tensor's writer sits."""
    ops = unit_graph_ops(unit_ops(unit, c), c, h, w)
    role = _ROLES.get(type(unit), ROLE_HEAD)
    rows = chain.from_iterable(
        (role, _KIND_CODES[op.kind], op.in_h, op.in_w, op.in_c, op.out_c, op.kernel, op.stride,
         op.output - op.inputs[1] if len(op.inputs) > 1 else 0) for op in ops)
    last = ops[-1]
    return tuple(rows), len(ops), last.out_c, last.out_h, last.out_w


def op_table(archs: Iterable[ArchSpec]) -> dict[str, np.ndarray]:
    """One row per op of every network, in execution order (columns ``net``, ``unit``
    and ``_ROW``)."""
    rows, n_ops, n_units = [], [], []
    for arch in archs:
        i = arch.input
        c, h, w = i.channels, i.height, i.width
        parts = units(arch)
        for unit in parts:
            r, n, c, h, w = _unit_rows(unit, c, h, w)
            rows.append(r)
            n_ops.append(n)
        n_units.append(len(parts))
    a = np.fromiter(chain.from_iterable(rows), dtype=np.int64).reshape(-1, len(_ROW))
    n_units = np.array(n_units, dtype=np.int64)
    first_unit = np.repeat(np.cumsum(n_units) - n_units, n_units)
    net = np.repeat(np.repeat(np.arange(len(n_units)), n_units), n_ops)
    unit = np.repeat(np.arange(len(first_unit)) - first_unit, n_ops)
    return {"net": net, "unit": unit, **dict(zip(_ROW, a.T))}


def _ceil_div(a, b):
    return -(-a // b)


def _op_sizes(o: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """Output height and width, input and output elements, and parameters of each op
    of an ``op_table`` (the rules of ``hardware.graph.Op``)."""
    kind, in_c, out_c, k = o["kind"], o["in_c"], o["out_c"], o["k"]
    flat = (kind == POOL) | (kind == FC)  # pool and fc collapse to 1x1
    up = kind == RESIZE  # a resize's k is its upsampling factor
    out_h = np.where(flat, 1, np.where(up, o["in_h"] * k, _ceil_div(o["in_h"], o["s"])))
    out_w = np.where(flat, 1, np.where(up, o["in_w"] * k, _ceil_div(o["in_w"], o["s"])))
    in_el = o["in_h"] * o["in_w"] * in_c
    out_el = out_h * out_w * out_c
    params = np.select([kind == CONV, kind == DEPTHWISE, (kind == FC) | (kind == GATE)],
                       [k * k * in_c * out_c + out_c, k * k * out_c + out_c, in_c * out_c + out_c], 0)
    return out_h, out_w, in_el, out_el, params


def decompose(archs: list[ArchSpec], spec: HardwareSpec | None, grouping: str = "kernel",
              ops: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """One row per kernel (or block) of every network, in execution order.

    Columns: ``net`` (index into ``archs``), ``unit`` (0 = stem, 1.. blocks, last = head),
    ``role``, ``kind`` (the model key), ``first_op``/``last_op`` (positions of the kernel's
    ops in the network's op list) and the named features."""
    if grouping not in ("kernel", "block"):
        raise ValueError(f"grouping must be 'kernel' or 'block', got {grouping!r}")
    if grouping == "kernel" and spec is None:
        raise ValueError("grouping 'kernel' needs a hardware spec (its fusion rules)")
    o = ops if ops is not None else op_table(archs)
    n_ops = len(o["net"])
    if n_ops == 0:
        return pd.DataFrame(columns=["net", "unit", "role", "kind", *feature_names(spec)])
    net, unit, kind = o["net"], o["unit"], o["kind"]
    in_h, in_w, in_c, out_c, k, s = o["in_h"], o["in_w"], o["in_c"], o["out_c"], o["k"], o["s"]
    idx = np.arange(n_ops)
    is_add = kind == ADD
    skip_src = np.where(is_add, idx - o["skip_back"], -1)
    out_h, out_w, in_el, out_el, params = _op_sizes(o)
    pixels = out_h * out_w
    is_skip_src = np.zeros(n_ops, bool)
    is_skip_src[skip_src[is_add]] = True
    same_net = np.r_[False, net[1:] == net[:-1]]
    new_net = ~same_net

    # Group ops into kernels.
    if grouping == "kernel":
        rule = np.zeros((len(OP_KINDS), len(OP_KINDS)), bool)
        for a, b in spec.fusion:
            rule[OP_KINDS.index(a), OP_KINDS.index(b)] = True
        prev_kind = np.r_[0, kind[:-1]]
        prev_single = np.r_[False, ~is_skip_src[:-1]]
        join = same_net & rule[prev_kind, kind] & prev_single
    else:
        join = same_net & np.r_[False, unit[1:] == unit[:-1]]
    kid = np.cumsum(~join) - 1
    starts = np.flatnonzero(~join)
    ends = np.r_[starts[1:], n_ops] - 1
    n_k = len(starts)
    pos = idx - starts[kid]

    # Kernel kind code and name.
    code = np.add.reduceat((kind + 1) * _BASE ** pos, starts)
    names = {c: kind_name(int(c)) for c in np.unique(code)}

    f: dict[str, np.ndarray] = {}
    knet = net[starts]
    f["net"] = knet
    f["unit"] = unit[starts]
    f["role"] = o["role"][starts]
    f["kind"] = pd.Categorical.from_codes(
        np.searchsorted(np.array(sorted(names)), code), [names[c] for c in sorted(names)])
    net_start = np.flatnonzero(new_net)
    op_base = net_start[net]
    f["first_op"] = starts - op_base[starts]
    f["last_op"] = ends - op_base[starts]
    f["in_h"], f["in_w"], f["in_c"] = in_h[starts], in_w[starts], in_c[starts]
    f["out_h"], f["out_w"], f["out_c"] = out_h[ends], out_w[ends], out_c[ends]
    f["mid_c"] = out_c[starts]
    f["kernel"] = np.maximum.reduceat(k, starts)
    f["stride"] = np.maximum.reduceat(s, starts)
    f["n_ops"] = ends - starts + 1
    f["residual"] = np.add.reduceat(is_add.astype(np.int64), starts)

    conv_macs = pixels * out_c * k * k * in_c
    is_gate = kind == GATE
    macs = np.select([kind == CONV, kind == DEPTHWISE, (kind == FC) | is_gate],
                     [conv_macs, pixels * out_c * k * k, in_c * out_c], 0)
    gemm = (kind == CONV) | (kind == FC) | is_gate  # a gate's FC runs on the array
    vec_el = np.select([is_add, kind == POOL, kind == RESIZE, is_gate],
                       [out_el, in_el, RESIZE_TAPS * out_el, 2 * in_el], 0)
    f["macs"] = np.add.reduceat(macs, starts)
    f["gemm_macs"] = np.add.reduceat(np.where(gemm, macs, 0), starts)
    f["dw_macs"] = np.add.reduceat(np.where(kind == DEPTHWISE, macs, 0), starts)
    f["vector_elems"] = np.add.reduceat(vec_el, starts)
    f["params"] = np.add.reduceat(params, starts)

    # Tensors read from outside the kernel: the first op's input, plus skip tensors of
    # adds whose producer is not the same tensor (the simulator counts a tensor once).
    first_in = in_el[starts]
    skip_extra = np.where(is_add & (skip_src != starts[kid] - 1), in_el, 0)
    kin_el = first_in + np.add.reduceat(skip_extra, starts)
    kout_el = out_el[ends]
    bpe = spec.bytes_per_element if spec is not None else 4  # the host CPU runs fp32
    f["in_bytes"] = kin_el * bpe
    f["out_bytes"] = kout_el * bpe
    f["weight_bytes"] = f["params"] * bpe
    # A gate reads its input twice (pooling pass, scaling pass).
    f["act_bytes"] = np.add.reduceat(np.where(is_gate, 2, 1) * in_el + out_el, starts) * bpe

    if spec is None:
        for c in ("in_c", "mid_c", "out_c"):
            for b in (8, 16):
                f[f"{c}_pad{b}"] = _ceil_div(f[c], b) * b
                f[f"{c}_mod{b}"] = f[c] % b
    else:
        R, C, L = spec.mac_array.rows, spec.mac_array.cols, spec.vector_unit.lanes
        m = np.where((kind == FC) | is_gate, 1, pixels)
        kk = k * k * in_c
        folds = np.where(gemm, _ceil_div(m, R) * _ceil_div(out_c, C), 0)
        f["gemm_folds"] = np.add.reduceat(folds, starts)
        f["gemm_padded_macs"] = np.add.reduceat(folds * R * C * np.where(gemm, kk, 0), starts)
        f["gemm_k"] = np.maximum.reduceat(np.where(gemm, kk, 0), starts)
        f["array_util"] = np.divide(f["gemm_macs"], f["gemm_padded_macs"],
                                    out=np.zeros(n_k), where=f["gemm_padded_macs"] > 0)
        lanes_c = np.where(kind == POOL, in_c, out_c)
        if spec.depthwise_on == "array":
            dw_pad = np.where(kind == DEPTHWISE, out_c * _ceil_div(pixels, R) * R * C * k * k, 0)
        else:
            dw_pad = np.where(kind == DEPTHWISE, _ceil_div(out_c, L) * L * pixels * k * k, 0)
        vec_pad = np.select(
            [is_add | (kind == POOL), kind == RESIZE, is_gate],
            [_ceil_div(lanes_c, L) * L * np.where(kind == POOL, in_h * in_w, pixels),
             _ceil_div(out_c, L) * L * pixels * RESIZE_TAPS,
             2 * _ceil_div(in_c, L) * L * in_h * in_w], 0)
        f["dw_padded"] = np.add.reduceat(dw_pad, starts)
        f["vector_padded"] = np.add.reduceat(vec_pad, starts)
        vec_work = f["dw_macs"] + f["vector_elems"]
        f["lane_util"] = np.divide(vec_work, f["dw_padded"] + f["vector_padded"],
                                   out=np.zeros(n_k), where=(f["dw_padded"] + f["vector_padded"]) > 0)
        dw_units = R * C if spec.depthwise_on == "array" else L
        f["compute_est_cycles"] = (f["gemm_padded_macs"] / (R * C) + f["dw_padded"] / dw_units
                                   + f["vector_padded"] / L)

        # SRAM residency of each kernel's output (one output per kernel: see module doc).
        last_of_net = np.r_[knet[1:] != knet[:-1], True]
        reader_k = np.where(is_add, kid, -1)  # kernel of the add reading each skip source
        skip_reader_k = np.full(n_ops, -1)
        skip_reader_k[skip_src[is_add]] = reader_k[is_add]
        src_ok = np.where(is_skip_src[ends], skip_reader_k[ends] == np.arange(n_k) + 1, True)
        limit = spec.sram_bytes * RESIDENT_SRAM_SHARE
        resident = ~last_of_net & (kout_el * bpe <= limit) & src_ok
        in_res = np.r_[False, resident[:-1]] & np.r_[False, knet[1:] == knet[:-1]]
        f["in_resident"] = in_res.astype(np.int64)
        f["out_resident"] = resident.astype(np.int64)
        f["in_dram_bytes"] = (kin_el - np.where(in_res, first_in, 0)) * bpe
        f["out_dram_bytes"] = np.where(resident, 0, kout_el) * bpe
        ws = f["in_bytes"] + f["weight_bytes"] + f["out_bytes"]
        # A gate opening a kernel that does not fit in SRAM reads its input from DRAM
        # again after pooling it (the simulator's rule), unless it stayed in SRAM.
        reread = is_gate[starts] & ~in_res & (ws > spec.sram_bytes)
        f["dram_min_bytes"] = (f["weight_bytes"] + f["in_dram_bytes"] + f["out_dram_bytes"]
                               + np.where(reread, first_in * bpe, 0))
        f["working_set_bytes"] = ws
        f["sram_ratio"] = ws / spec.sram_bytes
        f["sram_tiles"] = _ceil_div(ws, spec.sram_bytes)
        f["memory_est_cycles"] = f["dram_min_bytes"] / spec.dram_bytes_per_cycle
        f["roofline_cycles"] = np.maximum(f["compute_est_cycles"], f["memory_est_cycles"])
        for name, value in spec_fields(spec).items():
            f[name] = np.full(n_k, value)
    return pd.DataFrame(f)


def spec_fields(spec: HardwareSpec) -> dict[str, float]:
    return {"spec_rows": spec.mac_array.rows, "spec_cols": spec.mac_array.cols,
            "spec_lanes": spec.vector_unit.lanes, "spec_sram_bytes": spec.sram_bytes,
            "spec_dram_bytes_per_cycle": spec.dram_bytes_per_cycle,
            "spec_bytes_per_element": spec.bytes_per_element,
            "spec_launch_overhead_cycles": spec.launch_overhead_cycles,
            "spec_clock_mhz": spec.clock_mhz}


def network_memory(archs: list[ArchSpec], bytes_per_element: int,
                   ops: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Parameter bytes and peak live activation bytes of each network, from the graph.

    Same rule as ``hardware.graph.peak_live_elements`` for these sequential graphs:
    while an op runs, its input, its output and a skip tensor waiting for its add
    (when that is not the op's own input) are live together."""
    o = ops if ops is not None else op_table(archs)
    n = len(archs)
    if len(o["net"]) == 0:
        return np.zeros(n, np.int64), np.zeros(n, np.int64)
    kind, net = o["kind"], o["net"]
    _, _, in_el, out_el, params = _op_sizes(o)
    # A residual block's skip tensor (its input) is held from the block's second op
    # through its add; the add reads it directly.
    is_add = kind == ADD
    add_idx = np.flatnonzero(is_add)
    first = add_idx - o["skip_back"][add_idx] + 1  # the block's first op
    skip_el = in_el[first]
    # Mark ops first+1 .. add-1 (the add's own inputs already include the skip).
    delta = np.zeros(len(kind) + 1, np.int64)
    np.add.at(delta, first + 1, skip_el)
    np.add.at(delta, add_idx, -skip_el)
    pending = np.cumsum(delta)[:-1]
    held = np.where(is_add, 2 * in_el, in_el) + out_el + pending
    peak = np.zeros(n, np.int64)
    np.maximum.at(peak, net, held)
    params_n = np.bincount(net, weights=params, minlength=n).astype(np.int64)
    return params_n * bytes_per_element, peak * bytes_per_element
