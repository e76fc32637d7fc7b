import numpy as np
import pytest

from hardware.spec import load_spec
from hwnas.arch import decode, encode
from hwnas.lowering import kernels
from hwnas.space import SpaceConfig, aligned_channels, curated_space, uncurated_space


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
