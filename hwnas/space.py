"""Search spaces: per-stage choices of depth, channels, kernel, expansion and
block type. A space is plain data; ``sample`` draws an ArchSpec from it.

Curated (from a hardware spec): channel counts are multiples of the spec's
parallelism factor and depth comes from one global depth multiplier. Uncurated:
channel steps of 8 and an independent depth per stage, for comparison.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import ceil, floor, prod

import numpy as np

from hardware.spec import HardwareSpec
from hwnas.arch import ArchSpec, BlockSpec, ClassificationHead, InputSpec, StemSpec, validate


@dataclass(frozen=True)
class StageChoices:
    channels: tuple[int, ...]
    depths: tuple[int, ...]  # block counts; with a depth multiplier, the base depth
    stride: int = 1
    kernels: tuple[int, ...] = (3, 5, 7)
    expands: tuple[int | float, ...] = (1, 3, 4, 6)
    types: tuple[str, ...] = ("ibn", "fused_ibn")


@dataclass(frozen=True)
class SearchSpace:
    name: str
    input: InputSpec
    stem_channels: tuple[int, ...]
    stages: tuple[StageChoices, ...]
    head: ClassificationHead
    stem_stride: int = 1
    # When set, one multiplier scales every stage's base depth (curated spaces);
    # otherwise each stage picks its own depth from ``depths``.
    depth_multipliers: tuple[float, ...] | None = None

    def stage_depths(self, stage: StageChoices, multiplier: float | None) -> tuple[int, ...]:
        if multiplier is None:
            return stage.depths
        return (max(1, round(stage.depths[-1] * multiplier)),)

    def sample(self, rng: np.random.Generator) -> ArchSpec:
        pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
        m = pick(self.depth_multipliers) if self.depth_multipliers else None
        blocks = []
        for stage in self.stages:
            depth, out = pick(self.stage_depths(stage, m)), pick(stage.channels)
            for j in range(depth):
                kind = pick(stage.types)
                blocks.append(BlockSpec(kind, pick(stage.kernels), out,
                                        stage.stride if j == 0 else 1,
                                        1 if kind == "conv" else pick(stage.expands)))
        return validate(ArchSpec(stem=StemSpec(pick(self.stem_channels), 3, self.stem_stride),
                                 blocks=tuple(blocks), head=self.head, input=self.input))

    def size(self) -> int:
        """How many distinct architectures the space holds (a float for huge spaces)."""
        per_block = lambda s: len(s.kernels) * len(s.expands) * len(s.types)  # noqa: E731
        def stages_total(m):
            return prod(len(s.channels) * sum(per_block(s) ** d for d in self.stage_depths(s, m))
                        for s in self.stages)
        ms = self.depth_multipliers or (None,)
        return len(self.stem_channels) * sum(stages_total(m) for m in ms)


# Base stage table for a MobileNetV2-like backbone: (channels, depth, stride).
BASE_STAGES_32 = ((16, 1, 1), (24, 2, 1), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1))
BASE_STAGES_224 = ((16, 1, 1), (24, 2, 2), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1))


def aligned_channels(base: int, step: int, low: float = 0.5, high: float = 1.5) -> tuple[int, ...]:
    """Multiples of ``step`` between base*low and base*high (at least one: ``step``)."""
    lo = max(step, floor(base * low / step) * step)
    hi = max(lo, ceil(base * high / step) * step)
    return tuple(range(lo, hi + 1, step))


@dataclass(frozen=True)
class SpaceConfig:
    """What a space is built from (a params.yaml section maps onto this)."""

    resolution: int = 32
    in_channels: int = 1
    classes: int = 10
    head_features: int = 1280
    stages: tuple[tuple[int, int, int], ...] = BASE_STAGES_32
    stem_stride: int = 1
    kernels: tuple[int, ...] = (3, 5, 7)
    expands: tuple[int | float, ...] = (1, 3, 4, 6)
    types: tuple[str, ...] = ("ibn", "fused_ibn")
    depth_multipliers: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25)
    width_range: tuple[float, float] = (0.5, 1.5)


def _space(name: str, cfg: SpaceConfig, step: int, curated: bool) -> SearchSpace:
    lo, hi = cfg.width_range
    stages = tuple(
        StageChoices(channels=aligned_channels(c, step, lo, hi),
                     depths=(d,) if curated else tuple(range(1, ceil(d * 1.25) + 1)),
                     stride=s, kernels=cfg.kernels, expands=cfg.expands, types=cfg.types)
        for c, d, s in cfg.stages)
    return SearchSpace(
        name=name, input=InputSpec(cfg.in_channels, cfg.resolution, cfg.resolution),
        stem_channels=aligned_channels(32, step, lo, hi), stages=stages,
        head=ClassificationHead(cfg.head_features, cfg.classes), stem_stride=cfg.stem_stride,
        depth_multipliers=cfg.depth_multipliers if curated else None)


def curated_space(spec: HardwareSpec, cfg: SpaceConfig = SpaceConfig()) -> SearchSpace:
    """Channels in multiples of the spec's parallelism factor; one global depth multiplier."""
    return _space(f"curated-{spec.name}", cfg, spec.parallelism, curated=True)


def uncurated_space(cfg: SpaceConfig = SpaceConfig()) -> SearchSpace:
    """Channel steps of 8 and an independent depth per stage."""
    return _space("uncurated", cfg, 8, curated=False)
