import json
from dataclasses import replace

import numpy as np
import pytest

from hardware.spec import load_spec
from hwnas.arch import decode, encode
from hwnas.lowering import kernels
from hwnas.space import (SearchSpace, SpaceConfig, SpaceError, aligned_channels, curated_space,
                         uncurated_space)


@pytest.mark.parametrize("name", ["neural-engine-32", "neural-engine-64", "edge-16"])
def test_curated_channels_are_multiples_of_the_parallelism_factor(name):
    spec = load_spec(name)
    space = curated_space(spec)
    rng = np.random.default_rng(0)
    for _ in range(20):
        arch = space.sample(rng)
        assert arch.stem.out % spec.parallelism == 0
        assert all(b.out % spec.parallelism == 0 for b in arch.blocks)


def test_curated_depth_comes_from_one_global_multiplier():
    space = curated_space(load_spec())
    base = [s.depths[-1] for s in space.stages]
    # every network's depth is the base depths scaled by one of the multipliers
    totals = {sum(max(1, round(d * m)) for d in base) for m in space.depth_multipliers}
    rng = np.random.default_rng(1)
    seen = {len(space.sample(rng).blocks) for _ in range(30)}
    assert seen <= totals and len(seen) > 1


def test_uncurated_channels_step_by_8_and_include_misaligned_counts():
    space = uncurated_space()
    chans = {c for s in space.stages for c in s.channels}
    assert all(c % 8 == 0 for c in chans)
    assert any(c % 32 for c in chans)
    assert space.depth_multipliers is None


def test_sampling_is_seeded_and_valid():
    spec = load_spec()
    for space in (curated_space(spec), uncurated_space()):
        a = [encode(space.sample(np.random.default_rng(7))) for _ in range(2)]
        assert a[0] == a[1]
        rng = np.random.default_rng(3)
        archs = [space.sample(rng) for _ in range(10)]
        assert len({encode(x) for x in archs}) == 10
        for arch in archs:
            assert decode(encode(arch)) == arch
            assert kernels(arch, spec)
        assert space.size() > 1e6


def test_aligned_channels_and_config():
    assert aligned_channels(64, 32) == (32, 64, 96)
    assert aligned_channels(16, 32) == (32,)
    cfg = SpaceConfig(resolution=28, classes=5, stages=((32, 1, 2), (64, 2, 2)))
    arch = curated_space(load_spec(), cfg).sample(np.random.default_rng(0))
    assert arch.input.height == 28 and arch.head.classes == 5


SMALL = SpaceConfig(head_features=0, stages=((32, 1, 1), (64, 2, 2), (96, 2, 2)),
                    depth_multipliers=(0.5, 1.0, 1.5))


@pytest.mark.parametrize("make", [lambda c: curated_space(load_spec(), c), uncurated_space],
                         ids=["curated", "uncurated"])
def test_build_and_split_are_inverse_on_sampled_networks(make):
    space = make(SMALL)
    rng = np.random.default_rng(0)
    for _ in range(30):
        arch = space.sample(rng)
        m, depths = space.split(arch)
        assert depths in space.depth_vectors() and (m is None) == (space.depth_multipliers is None)
        stages, pos = [], 0
        for n in depths:
            run = arch.blocks[pos:pos + n]
            stages.append((run[0].out, [(b.type, b.kernel, b.expand) for b in run]))
            pos += n
        assert space.build(arch.stem.out, stages) == arch


def test_build_strides_a_stages_first_block_and_gives_conv_expand_1():
    space = curated_space(load_spec(), SMALL)
    arch = space.build(16, [(32, [("conv", 3, 6)]), (64, [("ibn", 5, 3), ("ibn", 3, 3)]),
                            (96, [("fused_ibn", 3, 4)])])
    assert [b.stride for b in arch.blocks] == [1, 2, 1, 2]
    assert arch.blocks[0].expand == 1 and arch.stem.kernel == 3


def test_split_prefers_and_rejects():
    space = curated_space(load_spec(), SMALL)
    base = space.baseline([32, 64, 96])
    assert space.base_multiplier() == 1.0 and space.base_depths() == (1, 2, 2)
    assert space.split(base, prefer=space.base_depths()) == (1.0, (1, 2, 2))
    narrow = replace(base, blocks=base.blocks[:1] + tuple(replace(b, out=40) for b in base.blocks[1:3])
                     + base.blocks[3:])
    assert space.split(narrow) is None                       # 40 is no width of stage 1
    assert space.split(narrow, choices=False) == (1.0, (1, 2, 2))


def test_extremes_json_and_common_types():
    space = curated_space(load_spec(), SMALL)
    big, small = space.largest(), space.smallest()
    assert len(big.blocks) == sum(max(v) for v in zip(*space.depth_vectors()))
    assert {b.type for b in big.blocks} == {"fused_ibn"} and {b.type for b in small.blocks} == {"ibn"}
    assert {b.kernel for b in space.largest("ibn", 5).blocks} == {5}
    with pytest.raises(SpaceError, match="block_type"):
        space.largest("conv")
    assert space.common_types() == ["ibn", "fused_ibn"]
    assert [a.blocks[0].type for a in space.cheapest()] == ["ibn", "fused_ibn"]
    assert SearchSpace.from_json(json.loads(json.dumps(space.to_json()))) == space
