"""The segmentation decoder's op kinds, ``resize`` and ``gate``: their costs in the simulator,
and the estimator's vectorized decomposition and the microbenchmark sampler agreeing with
the graph code on networks that use them."""
from __future__ import annotations

from dataclasses import replace
from itertools import pairwise
from math import ceil

import numpy as np
import pytest

from hardware.graph import RESIZE_TAPS, Graph, Op, fuse, peak_live_elements, residency
from hardware.simulator import kernel_result, op_compute_cycles, simulate_graph, simulate_op
from hardware.spec import SpecError, load_spec, spec_from_dict
from hwnas.arch import ArchSpec, BlockSpec, InputSpec, StemSpec, validate
from hwnas.estimator.decompose import decompose, network_memory
from hwnas.estimator.microbench import MicrobenchConfig, measure_units, unit_module
from hwnas.estimator.sampling import head_in_context, map_size, neighbour, unit_of
from hwnas.lowering import kernels, static_cost, to_graph
from hwnas.registry import REFERENCES, reference
from hwnas.space import BASE_STAGES_224, SpaceConfig, curated_space, uncurated_space
from hwnas.tasks.detection.head import DetectionHead
from hwnas.tasks.segmentation.head import SegmentationHead

SPEC = load_spec()  # neural-engine-32: 32 lanes, 2 MiB SRAM, 1 byte per element
SPECS = ("neural-engine-32", "neural-engine-64", "edge-16")


def with_(spec, **fields):
    return spec_from_dict({**spec.model_dump(), **fields})


def resize(c, h=28, factor=2):
    return Op("up", "resize", h, h, c, c, kernel=factor)


def gate(c, h=28):
    return Op("gate", "gate", h, h, c, c)


def add(c, h=28):
    return Op("add", "add", h, h, c, c, inputs=(0, 1), output=2)


# ---- the ops' shapes and work ----------------------------------------------------------


def test_resize_upsamples_by_its_kernel_field_with_no_weights():
    op = resize(48, h=14, factor=4)
    assert (op.out_h, op.out_w, op.out_c) == (56, 56, 48)
    assert op.macs == 0 and op.params == 0
    assert op.vector_ops == RESIZE_TAPS * 56 * 56 * 48  # a 4-tap weighted sum per output
    assert op.in_elements == 14 * 14 * 48


def test_gate_keeps_the_shape_and_holds_a_small_fc():
    op = gate(40, h=10)
    assert (op.out_h, op.out_w, op.out_c) == (10, 10, 40)
    assert op.params == 40 * 40 + 40 and op.macs == 40 * 40
    assert op.vector_ops == 2 * 10 * 10 * 40  # the pooling pass and the scaling pass


def test_unknown_kinds_are_still_refused():
    with pytest.raises(ValueError, match="unknown op kind"):
        op_compute_cycles(Op("x", "upsample", 4, 4, 8, 8), SPEC)
    with pytest.raises(SpecError, match="unknown op kind"):
        with_(SPEC, fusion=[["gate", "upsample"]])
    # the new kinds may be named by fusion rules (no bundled spec does)
    assert with_(SPEC, fusion=[["gate", "resize"]]).fusion == (("gate", "resize"),)
    for name in SPECS:
        assert not {k for rule in load_spec(name).fusion for k in rule} & {"gate", "resize"}


# ---- resize ------------------------------------------------------------------------------


def test_resize_cost_grows_with_the_factor():
    runs = [simulate_op(resize(64, h=14, factor=f), SPEC) for f in (1, 2, 3, 4, 8)]
    for a, b in pairwise(runs):
        assert b.compute_cycles > a.compute_cycles
        assert b.latency_ms > a.latency_ms
        assert b.dram_bytes > a.dram_bytes and b.energy_mj > a.energy_mj
    # compute is 4 vector cycles per output pixel and lane group: factor squared
    assert runs[1].compute_cycles == ceil(64 / 32) * (28 * 28) * RESIZE_TAPS
    assert runs[3].compute_cycles == 4 * runs[1].compute_cycles
    assert runs[0].macs == 0 and runs[0].utilization == 0.0  # the MAC array idles


def test_resize_is_a_staircase_in_channels_against_the_vector_lanes():
    runs = {c: simulate_op(resize(c), SPEC) for c in range(8, 129, 8)}
    lat = {c: r.latency_ms for c, r in runs.items()}
    for c in (8, 16, 24):
        assert lat[c] == lat[32]
    for c in (40, 48, 56):
        assert lat[c] == lat[64]
    for step in (32, 64, 96):
        assert lat[step + 8] > lat[step]
        assert runs[step + 8].compute_cycles > runs[step].compute_cycles
    assert simulate_op(resize(33), SPEC).latency_ms == lat[64]
    # on a 64-lane part the steps are at multiples of 64
    wide = load_spec("neural-engine-64")
    assert simulate_op(resize(40), wide).compute_cycles == simulate_op(resize(64), wide).compute_cycles
    assert simulate_op(resize(72), wide).compute_cycles > simulate_op(resize(64), wide).compute_cycles


# ---- gate --------------------------------------------------------------------------------


def test_gate_is_a_staircase_in_channels_too():
    cyc = {c: op_compute_cycles(gate(c), SPEC) for c in (8, 24, 32, 40, 64)}
    fc = {c: op_compute_cycles(Op("fc", "fc", 1, 1, c, c), SPEC) for c in cyc}
    # the two vector passes step at multiples of the lanes; the FC is the array's GEMM
    assert cyc[8] - fc[8] == cyc[24] - fc[24] == cyc[32] - fc[32] == 2 * 28 * 28
    assert cyc[40] - fc[40] == cyc[64] - fc[64] == 2 * 2 * 28 * 28


def test_gate_costs_more_than_the_add_of_the_same_tensor():
    for c, h in ((32, 28), (64, 56), (40, 14), (512, 7), (64, 256)):
        g, a = simulate_op(gate(c, h), SPEC), simulate_op(add(c, h), SPEC)
        # two vector passes and an FC against one pass
        assert g.compute_cycles > 2 * a.compute_cycles
        # with the operands on chip (kept from and for neighbouring kernels) the extra
        # pass decides the latency
        ga = Graph((gate(c, h),), (h * h * c,) * 2)
        aa = Graph((add(c, h),), (h * h * c,) * 3)
        on_chip = frozenset({0, 1, 2})
        lat_g = kernel_result(fuse(ga, ())[0], SPEC, ga.tensors, on_chip, on_chip).latency_ms
        lat_a = kernel_result(fuse(aa, ())[0], SPEC, aa.tensors, on_chip, on_chip).latency_ms
        assert lat_g > lat_a
    # From DRAM the add reads two tensors to the gate's one, unless the gate's input does
    # not fit in SRAM: then the gate reads it twice, plus its weights, and costs more.
    big = simulate_op(gate(64, 256), SPEC), simulate_op(add(64, 256), SPEC)
    assert big[0].dram_bytes > big[1].dram_bytes and big[0].latency_ms > big[1].latency_ms
    small = simulate_op(gate(64, 56), SPEC), simulate_op(add(64, 56), SPEC)
    assert small[0].dram_bytes < small[1].dram_bytes


def _tensor(c, h):
    return h * h * c * SPEC.bytes_per_element


def test_gate_reads_its_input_once_when_it_fits_sram():
    c, h = 64, 28
    t, w = _tensor(c, h), (c * c + c) * SPEC.bytes_per_element
    assert 2 * t + w <= SPEC.sram_bytes
    assert simulate_op(gate(c, h), SPEC).dram_bytes == t + w + t  # in, weights, out


def test_gate_reads_its_input_twice_when_it_does_not_fit_sram():
    c, h = 64, 256
    t, w = _tensor(c, h), (c * c + c) * SPEC.bytes_per_element
    ws = 2 * t + w
    assert ws > SPEC.sram_bytes
    tiles = ceil(ws / SPEC.sram_bytes)
    tiled_once = min(w + t + t * (tiles - 1), w * tiles + t) + t  # any kernel's tiling
    r = simulate_op(gate(c, h), SPEC)
    assert r.dram_bytes == tiled_once + t  # plus the second read after the pooling pass
    assert r.dram_bytes == w * tiles + 2 * t + t
    # a pool or an add of the same size does not read its input twice
    same = Op("pool", "pool", h, h, c, c)
    assert simulate_op(same, SPEC).dram_bytes == t + c


def test_gate_input_kept_in_sram_is_not_read_from_dram():
    c, h = 64, 28
    ops = (Op("reduce", "conv", h, h, 32, c, inputs=(0,), output=1),
           Op("gate", "gate", h, h, c, c, inputs=(1,), output=2),
           Op("pred", "conv", h, h, c, 8, inputs=(2,), output=3))
    g = Graph(ops, (h * h * 32, h * h * c, h * h * c, h * h * 8))
    res = simulate_graph(g, SPEC)
    assert residency(g, fuse(g, SPEC.fusion), SPEC) == {1, 2}
    assert res.kernels[1].dram_bytes == c * c + c  # weights only: input and output stay


# ---- networks with a segmentation head: the estimator's tables against the graph ----------


def _total_stride(arch):
    s = arch.stem.stride
    for b in arch.blocks:
        s *= b.stride
    return s


def _seg_networks(spec, n=8, seed=5):
    """Backbones of the reference and space networks with segmentation heads at several
    output strides, widths and class counts."""
    rng = np.random.default_rng(seed)
    big = SpaceConfig(resolution=160, in_channels=3, classes=100, stages=BASE_STAGES_224,
                      stem_stride=2, types=("ibn", "fused_ibn", "conv"), expands=(1, 2, 6))
    backbones = [reference(name) for name in REFERENCES]
    for cfg in (SpaceConfig(), big):
        backbones += [curated_space(spec, cfg).sample(rng) for _ in range(n // 2)]
        backbones += [uncurated_space(cfg).sample(rng) for _ in range(n // 2)]
    archs = []
    for i, a in enumerate(backbones):
        stride = _total_stride(a)
        outs = [o for o in (1, 2, 4, 8, 16, 32) if o <= stride]
        out_stride = outs[i % len(outs)]
        head = SegmentationHead(features=(24, 40, 64, 96)[i % 4], classes=1 + i % 3,
                                stride=stride, out_stride=out_stride)
        archs.append(validate(replace(a, head=head)))
    # a map too large for SRAM around the gate (its input re-read) and a 4x resize
    archs.append(validate(ArchSpec(
        stem=StemSpec(32, 3, 2), blocks=(BlockSpec("ibn", 3, 48, 2, 2),
                                         BlockSpec("ibn", 3, 48, 1, 2)),
        head=SegmentationHead(320, 2, 4, 1), input=InputSpec(3, 256, 256))))
    return archs


# Rules that also fuse the new kinds: a gate inside a kernel, or opening one.
EXTRA_RULES = {"": [], "+gate_inside": [["conv", "gate"], ["gate", "resize"], ["resize", "conv"]],
               "+gate_first": [["gate", "resize"], ["resize", "conv"], ["gate", "conv"]]}


@pytest.mark.parametrize("extra", EXTRA_RULES)
@pytest.mark.parametrize("name", SPECS)
def test_decompose_matches_the_graph_for_segmentation_networks(name, extra):
    spec = load_spec(name)
    spec = with_(spec, fusion=[*spec.fusion, *EXTRA_RULES[extra]])
    archs = _seg_networks(spec)
    bpe = spec.bytes_per_element
    df = decompose(archs, spec)
    params_b, peak_b = network_memory(archs, bpe)
    seen = set()
    for n, arch in enumerate(archs):
        g = to_graph(arch)
        ks = fuse(g, spec.fusion)
        assert [k.kind for k in ks] == [k.kind for k in kernels(arch, spec)]
        res = residency(g, ks, spec)
        sim = simulate_graph(g, spec)
        rows = df[df["net"] == n]
        assert list(rows["kind"].astype(str)) == [k.kind for k in ks]
        for k, r, s in zip(ks, rows.itertuples(), sim.kernels):
            seen.add(k.kind)
            assert r.macs == sum(op.macs for op in k.ops) == s.macs
            assert r.vector_elems == sum(op.vector_ops for op in k.ops)
            assert r.weight_bytes == sum(op.params for op in k.ops) * bpe
            assert r.in_bytes == sum(g.tensors[t] for t in k.inputs) * bpe
            assert r.out_bytes == sum(g.tensors[t] for t in k.outputs) * bpe
            assert r.in_dram_bytes == sum(g.tensors[t] for t in k.inputs if t not in res) * bpe
            assert r.out_dram_bytes == sum(g.tensors[t] for t in k.outputs if t not in res) * bpe
            if "add" not in k.kind.split("+"):  # (act_bytes counts an add's input once)
                assert r.act_bytes + r.weight_bytes == s.sram_bytes
            assert (r.out_h, r.out_w) == (k.ops[-1].out_h, k.ops[-1].out_w)
            if r.working_set_bytes <= spec.sram_bytes:
                assert r.dram_min_bytes == s.dram_bytes  # the simulator's own traffic
            else:
                assert s.dram_bytes >= r.dram_min_bytes
        cost = static_cost(arch, bpe, g)
        assert rows["macs"].sum() == cost.macs
        assert rows["params"].sum() == cost.params
        assert (params_b[n], peak_b[n]) == (cost.params_bytes, cost.peak_activation_bytes)
        assert peak_b[n] == peak_live_elements(g) * bpe
    assert {k for kind in seen for k in kind.split("+")} >= {"gate", "resize"}


def test_decompose_counts_the_gates_second_read_like_the_simulator():
    arch = _seg_networks(SPEC)[-1]
    g = to_graph(arch)
    ks = fuse(g, SPEC.fusion)
    df = decompose([arch], SPEC)
    sim = simulate_graph(g, SPEC)
    i = next(i for i, k in enumerate(ks) if k.kind == "gate")
    r, s = df.iloc[i], sim.kernels[i]
    assert r.working_set_bytes > SPEC.sram_bytes and not r.in_resident
    assert r.dram_min_bytes == r.weight_bytes + 2 * r.in_dram_bytes + r.out_dram_bytes
    tiles = int(r.sram_tiles)
    once = min(r.weight_bytes + r.in_dram_bytes + r.in_bytes * (tiles - 1),
               r.weight_bytes * tiles + r.in_dram_bytes) + r.out_dram_bytes
    assert s.dram_bytes == once + r.in_dram_bytes


def test_block_grouping_has_one_row_for_the_decoder():
    arch = _seg_networks(SPEC)[0]
    df = decompose([arch], None, "block")
    assert len(df) == len(arch.blocks) + 2
    head = [op for op in to_graph(arch).ops if op.name.startswith("head.")]
    last = df.iloc[-1]
    assert last["macs"] == sum(op.macs for op in head)
    assert last["vector_elems"] == sum(op.vector_ops for op in head)
    assert last["kernel"] == max(op.kernel for op in head)  # the resize factor counts
    assert (last["out_h"], last["out_c"]) == (head[-1].out_h, head[-1].out_c)


# ---- the microbenchmark sampler -----------------------------------------------------------


def test_a_decoder_cut_out_of_its_network_keeps_its_ops():
    """The sampler's stub strides as the backbone did, so the head keeps its upsampling."""
    for arch in _seg_networks(SPEC)[:6]:
        full = [op for op in to_graph(arch).ops if op.name.startswith("head.")]
        sample = unit_of(arch, len(arch.blocks) + 1, "network")
        assert sample.role == "head" and sample.arch.head == arch.head
        cut = [op for op in to_graph(sample.arch).ops if op.name.startswith("head.")]
        assert [op.describe() for op in cut] == [op.describe() for op in full]
        near = neighbour(sample, np.random.default_rng(1))
        assert near.role == "head" and near.arch.head == arch.head
        assert map_size(near.arch)[0] in range(max(1, full[0].in_h - 1), full[0].in_h + 2)


def test_a_detection_head_still_gets_the_plain_stub():
    s = head_in_context(DetectionHead(64, 1, 8), 40, 12, 12, "network")
    assert s.arch.head.stride == 1 and s.arch.blocks == () and s.unit == 1
    assert (s.arch.input.height, s.arch.stem.stride) == (12, 1)


def test_sim_microbenchmarks_measure_the_decoder_kernels():
    archs = _seg_networks(SPEC)[:4]
    samples = [unit_of(a, len(a.blocks) + 1, "network") for a in archs]
    cfg = MicrobenchConfig(repeats=2, noise=0.0)
    table = measure_units(samples, cfg, SPEC, 0, 1)
    assert {"gate", "resize"} <= set(table["kind"])
    for i, a in enumerate(archs):
        own = table[table["sample"] == i]
        full = [k for k in simulate_graph(to_graph(a), SPEC).kernels if k.name.startswith("head.")]
        assert list(own["kind"][::2]) == [k.kind for k in full]
        # the head's own kernels cost what they cost in the full network (same shapes,
        # same residency of the map it reads)
        assert np.allclose(own["latency_ms"][::2], [k.latency_ms for k in full])


def test_cpu_backend_feeds_the_head_module_its_feature_map(monkeypatch):
    from hwnas import tasks

    seen = {}

    class Task:
        @staticmethod
        def head_module(cin, head):
            seen["args"] = (cin, head)
            return "module"

    monkeypatch.setattr(tasks, "torch_task", lambda name: Task)
    arch = _seg_networks(SPEC)[0]
    sample = unit_of(arch, len(arch.blocks) + 1, "network")
    module, shape = unit_module(sample)
    head_in = next(op for op in to_graph(arch).ops if op.name.startswith("head."))
    assert module == "module" and seen["args"] == (head_in.in_c, arch.head)
    assert shape == (1, head_in.in_c, head_in.in_h, head_in.in_w)
