"""The simulator shows what the product exists for, on the default spec."""
import pytest

from hardware.graph import Graph, Op, fuse, peak_live_elements
from hardware.simulator import gemm_cycles, simulate_graph, simulate_op
from hardware.spec import load_spec, spec_from_dict
from hwnas.arch import ArchSpec, BlockSpec, ClassificationHead, InputSpec, StemSpec
from hwnas.lowering import block_graph, kernels, static_cost
from hwnas.simulation import simulate_arch
from hwnas.registry import REFERENCES, reference

SPEC = load_spec()


def with_(spec, **fields):
    return spec_from_dict({**spec.model_dump(), **fields})


def conv(c_out, h=56, c_in=64, k=3, s=1, kind="conv"):
    return Op("op", kind, h, h, c_in, c_out, k, s)


def test_gemm_formula():
    assert gemm_cycles(3136, 64, 576, 32, 32) == 98 * 2 * (576 + 62)
    assert simulate_op(conv(64), SPEC).compute_cycles == 98 * 2 * (576 + 62)


def test_latency_is_a_staircase_in_channels_with_steps_at_multiples_of_32():
    lat = {c: simulate_op(conv(c), SPEC).latency_ms for c in range(8, 129, 8)}
    for c in (8, 16, 24):
        assert lat[c] == lat[32]
    for c in (40, 48, 56):
        assert lat[c] == lat[64]
    for step in (32, 64, 96):
        assert lat[step + 8] > 1.5 * lat[step] if step == 32 else lat[step + 8] > lat[step]
    # same FLOPs per channel, but 33 channels cost as much as 64
    assert simulate_op(conv(33), SPEC).latency_ms == simulate_op(conv(64), SPEC).latency_ms


def test_depthwise_leaves_the_mac_array_idle():
    dense = simulate_op(conv(128, h=28, c_in=128), SPEC)
    dw = simulate_op(conv(128, h=28, c_in=128, kind="depthwise"), SPEC)
    assert dense.utilization > 0.8
    assert dw.utilization < 0.05 * dense.utilization
    # and on the array (per-channel GEMMs) it is just as poor
    array_spec = with_(SPEC, depthwise_on="array")
    assert simulate_op(conv(128, h=28, c_in=128, kind="depthwise"), array_spec).utilization < 0.05


def _block_latency(kind, cin, cout, hw, expand=4):
    graph = block_graph(BlockSpec(kind, 3, cout, 1, expand), cin, hw, hw)
    return simulate_graph(graph, SPEC).latency_ms


def test_fused_ibn_wins_early_and_loses_late():
    # early: high resolution, few channels (MobileNetV2's stage 2 and 3 shapes)
    for cin, cout, hw in ((16, 24, 112), (24, 24, 56)):
        assert _block_latency("fused_ibn", cin, cout, hw, 6) < 0.85 * _block_latency("ibn", cin, cout, hw, 6)
    # late: low resolution, many channels
    for cin, cout, hw in ((96, 96, 14), (160, 160, 7)):
        assert _block_latency("fused_ibn", cin, cout, hw, 6) > 1.5 * _block_latency("ibn", cin, cout, hw, 6)


def test_flops_and_latency_orders_disagree():
    recs = [simulate_arch(reference(n), SPEC, per_kernel=False) for n in REFERENCES]
    flipped = [(a["name"], b["name"]) for a in recs for b in recs
               if a["macs"] < b["macs"] and a["latency_ms"] > b["latency_ms"]]
    assert ("mobilenetv2_224", "mobilenetv2_fused_224") in flipped


def test_model_latency_is_not_the_sum_of_isolated_ops():
    arch = reference("mobilenetv2_32")
    graph_ops = sum(simulate_op(op, SPEC).latency_ms for k in kernels(arch, SPEC) for op in k.ops)
    assert simulate_arch(arch, SPEC)["latency_ms"] < 0.9 * graph_ops


def test_fusion_follows_the_spec_rules():
    arch = reference("mobilenetv2_32")
    kinds = {k.kind for k in kernels(arch, SPEC)}
    assert {"depthwise+conv", "depthwise+conv+add", "pool+fc", "conv"} <= kinds
    no_fusion = with_(SPEC, fusion=())
    assert all("+" not in k.kind for k in kernels(arch, no_fusion))
    fused = simulate_arch(arch, SPEC)
    unfused = simulate_arch(arch, no_fusion)
    assert fused["latency_ms"] < unfused["latency_ms"]  # fewer launches
    # with a small SRAM, hand-offs too big to stay resident still stay on chip when fused
    big = reference("mobilenetv2_224")
    small_sram = with_(SPEC, sram_kib=512)
    assert (simulate_arch(big, small_sram)["dram_bytes"]
            < simulate_arch(big, with_(small_sram, fusion=()))["dram_bytes"])


def test_working_set_larger_than_sram_is_refetched():
    op = conv(512, h=28, c_in=512)
    roomy = simulate_op(op, SPEC)
    tiny = simulate_op(op, with_(SPEC, sram_kib=64))
    assert tiny.dram_bytes > roomy.dram_bytes
    assert tiny.compute_cycles == roomy.compute_cycles


def test_sram_residency_between_kernels():
    small = with_(SPEC, fusion=())
    graph = block_graph(BlockSpec("fused_ibn", 3, 32, 2, 4), 32, 16, 16)
    resident = simulate_graph(graph, small).dram_bytes
    spilled = simulate_graph(graph, with_(small, sram_kib=8)).dram_bytes
    assert resident < spilled


def test_launch_overhead_and_bandwidth_come_from_the_spec():
    op = conv(64)
    base = simulate_op(op, SPEC)
    more = simulate_op(op, with_(SPEC, launch_overhead_cycles=SPEC.launch_overhead_cycles + 1000))
    assert more.cycles == base.cycles + 1000
    slow = simulate_op(op, with_(SPEC, dram_bandwidth_gb_s=0.5))
    assert slow.cycles > base.cycles and slow.memory_cycles > slow.compute_cycles


def test_noise_is_off_by_default_and_seeded():
    arch = reference("mobilenetv2_32")
    exact = simulate_arch(arch, SPEC)["latency_ms"]
    assert simulate_arch(arch, SPEC)["latency_ms"] == exact
    a = simulate_arch(arch, SPEC, noise=0.05, seed=1)["latency_ms"]
    assert a == simulate_arch(arch, SPEC, noise=0.05, seed=1)["latency_ms"]
    assert a != simulate_arch(arch, SPEC, noise=0.05, seed=2)["latency_ms"]
    assert a == pytest.approx(exact, rel=0.1) and a != exact


def test_energy_grows_with_dram_traffic():
    op = conv(64)
    cheap = simulate_op(op, SPEC)
    costly = simulate_op(op, with_(SPEC, energy={**SPEC.energy.model_dump(),
                                                         "dram_byte_pj": 400.0}))
    assert costly.energy_mj > cheap.energy_mj


def test_peak_activation_counts_skip_tensors():
    # x(10) -> a(20) -> b(10) -> add(x, b)(10): while b is written, x and a are live
    ops = (Op("a", "conv", 1, 1, 10, 20, inputs=(0,), output=1),
           Op("b", "conv", 1, 1, 20, 10, inputs=(1,), output=2),
           Op("add", "add", 1, 1, 10, 10, inputs=(0, 2), output=3))
    graph = Graph(ops, (10, 20, 10, 10))
    assert peak_live_elements(graph) == 40
    assert len(fuse(graph, [("conv", "add")])) == 2


def test_memory_footprint_of_a_small_network():
    arch = ArchSpec(stem=StemSpec(8, 3, 1), blocks=(BlockSpec("ibn", 3, 8, 1, 2),),
                    head=ClassificationHead(0, 10), input=InputSpec(1, 4, 4))
    cost = static_cost(arch)
    # stem 1->8 (3x3) + expand 8->16 + dw 16 + project 16->8 + fc 8->10, biases included
    assert cost.params == (72 + 8) + (128 + 16) + (144 + 16) + (128 + 8) + (80 + 10)
    # peak while the depthwise writes: the stem output (kept for the residual add),
    # the expand output and the depthwise output are live together
    assert cost.peak_activation_bytes == 8 * 16 + 16 * 16 + 16 * 16
