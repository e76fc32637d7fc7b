from dataclasses import replace

import numpy as np
import pytest
import torch

from hwnas.arch import InputSpec
from hwnas.lowering import feature_map_sizes

from hardware.spec import load_spec
from hwnas.expert import (AlignChannels, EvenChannels, FuseIBN, PinBlockType, ReplaceDepthwise,
                          apply_rules, block_scales, learn_rules, parse_rules)
from hwnas.model import build_model
from hwnas.simulation import simulate_arch
from hwnas.registry import reference
from hwnas.search.zeroshot import PROXIES, naswot, score_all

SPEC = load_spec()


def cost(archs):
    return [(r["latency_ms"], r["memory_bytes"])
            for r in (simulate_arch(a, SPEC, per_kernel=False) for a in archs)]


def test_proxies_score_a_network():
    torch.manual_seed(0)
    model = build_model(reference("tiny_conv_32"))
    x, y = torch.randn(16, 1, 32, 32), torch.randint(0, 10, (16,))
    scores = score_all(model, x, y)
    assert set(scores) == set(PROXIES)
    assert all(np.isfinite(v) for v in scores.values())
    # NASWOT: identical inputs cannot be told apart, so the kernel is singular-ish
    same = naswot(model, x[:1].repeat(16, 1, 1, 1))
    assert same < scores["naswot"]


def test_fuse_ibn_fuses_only_where_it_pays():
    base = reference("mobilenetv2_224")
    fused = FuseIBN().apply(base, cost)
    types = [b.type for b in fused.blocks]
    assert types[1] == "fused_ibn" and types[-1] == "ibn"
    (lat0, _), (lat1, _) = cost([base, fused])
    assert lat1 < 0.9 * lat0


def test_rules_report_each_gain_in_order():
    base = reference("mobilenetv2_224")
    rules = parse_rules([{"fuse_ibn": {}}, {"align_channels": {"multiple": 32}},
                         {"pin_block_type": {"type": "fused_ibn", "min_scale": 0.2}}])
    results = apply_rules(base, rules, cost)
    assert [list(r.rule) for r in results] == [["fuse_ibn"], ["align_channels"],
                                               ["pin_block_type"]]
    assert results[0].latency_gain > 0.1
    assert all(b.out % 32 == 0 for b in results[1].arch.blocks)
    assert all(b.type == "fused_ibn" for b, s in zip(results[2].arch.blocks,
                                                     block_scales(results[2].arch)) if s >= 0.2)


def test_replace_depthwise_and_even_channels():
    base = reference("mobilenetv2_32")
    dense = ReplaceDepthwise().apply(base, cost)
    assert all(b.type != "ibn" for b in dense.blocks) and dense.blocks[0].type == "conv"
    even = EvenChannels(multiple=32).apply(base, cost)
    widths = [b.out for b in even.blocks]
    assert widths == sorted(widths) and all(w % 32 == 0 for w in widths)
    # odd feature maps: a 7x7 -> 4x4 block and the 4x4 blocks after it share one width
    odd = EvenChannels(multiple=8).apply(replace(base, input=InputSpec(1, 28, 28)), cost)
    by_size = {}
    for (h, _), b in zip(feature_map_sizes(odd), odd.blocks):
        by_size.setdefault(-(-h // b.stride), set()).add(b.out)
    assert all(len(ws) == 1 for ws in by_size.values())


def test_learned_rules_transfer_to_another_baseline():
    searched = FuseIBN().apply(reference("mobilenetv2_224"), cost)
    rules = learn_rules([searched], SPEC.parallelism)
    assert any(isinstance(r, PinBlockType) for r in rules)
    other = reference("mobilenetv2_32")
    after = apply_rules(other, rules, cost)[-1]
    assert after.arch != other and any(b.type == "fused_ibn" for b in after.arch.blocks)


@pytest.mark.parametrize("bad, message", [
    ([{"make_faster": {}}], "unknown rule"),
    ([{"align_channels": {"width": 3}}], r"rules\[0\]\.align_channels"),
    (["fuse_ibn"], "one rule name"),
    ([{"pin_block_type": {"type": "dense"}}], r"pin_block_type.type: 'dense'"),
    ([{"align_channels": {"multiple": 0}}], "multiple: must be a positive integer"),
])
def test_bad_rules(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_rules(bad)


def test_align_channels():
    arch = AlignChannels(32).apply(reference("mobilenetv2_32"), cost)
    assert arch.stem.out == 32 and {b.out for b in arch.blocks} <= {32, 64, 96, 160, 320}
