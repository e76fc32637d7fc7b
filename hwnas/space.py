"""Search spaces: per-stage choices of depth, channels, kernel, expansion and
block type. A space is plain data that also owns its rules: how per-stage choices
become an ArchSpec (``build``), how a network splits back into its stages
(``split``), and its named corners (``baseline``, ``largest``, ``smallest``).

Curated (from a hardware spec): channel counts are multiples of the spec's
parallelism factor and depth comes from one global depth multiplier. Uncurated:
channel steps of 8 and an independent depth per stage, for comparison.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from itertools import product
from math import ceil, floor, prod

import numpy as np

from hardware.spec import HardwareSpec
from hwnas.arch import (HEADS, ArchSpec, BlockSpec, ClassificationHead, InputSpec, StemSpec,
                        validate)
from hwnas.errors import UserError

STEM_KERNEL = 3  # every network of a space has a 3x3 stem

# (out channels, [(block type, kernel, expand), ...]) of one stage
StagePick = tuple[int, Sequence[tuple[str, int, int | float]]]


class SpaceError(UserError):
    """A choice the space does not offer; the message names the stage and field."""


@dataclass(frozen=True)
class StageChoices:
    channels: tuple[int, ...]
    depths: tuple[int, ...]  # block counts; with a depth multiplier, the base depth
    stride: int = 1
    kernels: tuple[int, ...] = (3, 5, 7)
    expands: tuple[int | float, ...] = (1, 3, 4, 6)
    types: tuple[str, ...] = ("ibn", "fused_ibn")

    def block_stride(self, j: int) -> int:
        """A stage downsamples on its first block only."""
        return self.stride if j == 0 else 1


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
    # When set, the head's width (``head.features``) is searched among these; otherwise
    # every network has ``head`` as it is.
    head_widths: tuple[int, ...] | None = None
    # When set, the input resolution (square) and the head's output stride
    # (``head.out_stride``, a segmentation head's) are searched among these.
    resolutions: tuple[int, ...] | None = None
    out_strides: tuple[int, ...] | None = None

    def head_of(self, features: int | None = None, out_stride: int | None = None):
        """The head at width ``features`` and output stride ``out_stride`` (None: the
        space's own)."""
        head = self.head if features is None else replace(self.head, features=features)
        return head if out_stride is None else replace(head, out_stride=out_stride)

    def input_of(self, resolution: int | None = None) -> InputSpec:
        """The input at ``resolution`` (None: the space's own)."""
        return self.input if resolution is None else replace(self.input, height=resolution,
                                                              width=resolution)

    def holds_head(self, head) -> bool:
        return head in {self.head_of(f, o) for f in self.head_widths or (None,)
                        for o in self.out_strides or (None,)}

    def holds_input(self, inp: InputSpec) -> bool:
        return inp in {self.input_of(r) for r in self.resolutions or (None,)}

    def _extremes(self, pick) -> dict:
        """``build``'s head and input arguments at the cheap (``min``) or costly (``max``)
        end: narrow, coarse and small, or wide, fine and large."""
        fine = max if pick is min else min
        return {"head_width": pick(self.head_widths) if self.head_widths else None,
                "out_stride": fine(self.out_strides) if self.out_strides else None,
                "resolution": pick(self.resolutions) if self.resolutions else None}

    # ---- depth ----

    def stage_depths(self, stage: StageChoices, multiplier: float | None) -> tuple[int, ...]:
        if multiplier is None:
            return stage.depths
        return (max(1, round(stage.depths[-1] * multiplier)),)

    def _depth_options(self) -> dict[tuple[int, ...], float | None]:
        """Per-stage depths -> the first multiplier giving them, in sampling order."""
        seen: dict[tuple[int, ...], float | None] = {}
        for m in self.depth_multipliers or (None,):
            for combo in product(*(self.stage_depths(s, m) for s in self.stages)):
                seen.setdefault(combo, m)
        return seen

    def depth_vectors(self) -> list[tuple[int, ...]]:
        """Every per-stage depth combination the space allows (ordered, unique)."""
        return list(self._depth_options())

    def max_depths(self) -> tuple[int, ...]:
        """The most blocks each stage can have."""
        return tuple(max(d) for d in zip(*self._depth_options()))

    def base_multiplier(self) -> float | None:
        """Depth multiplier 1 when the space offers it (None: each stage's base depth)."""
        return 1.0 if self.depth_multipliers and 1.0 in self.depth_multipliers else None

    def base_depths(self) -> tuple[int, ...]:
        """Per-stage depths at depth multiplier 1 (or each stage's largest base depth)."""
        m = self.base_multiplier()
        return tuple(max(self.stage_depths(s, m)) for s in self.stages)

    def common_types(self) -> list[str]:
        """Block types every stage offers, in the first stage's order."""
        return [t for t in self.stages[0].types if all(t in s.types for s in self.stages)]

    # ---- per-stage choices <-> architectures ----

    def build(self, stem: int, stages: Sequence[StagePick], name: str = "",
              head_width: int | None = None, out_stride: int | None = None,
              resolution: int | None = None) -> ArchSpec:
        """The validated network of per-stage choices: each stage's stride on its first
        block, expand 1 for conv blocks, a 3x3 stem, the head at ``head_width`` and
        ``out_stride``, the input at ``resolution``."""
        blocks = [BlockSpec(kind, kernel, out, stage.block_stride(j), 1 if kind == "conv" else e)
                  for stage, (out, picks) in zip(self.stages, stages, strict=True)
                  for j, (kind, kernel, e) in enumerate(picks)]
        return validate(ArchSpec(stem=StemSpec(stem, STEM_KERNEL, self.stem_stride),
                                 blocks=tuple(blocks), head=self.head_of(head_width, out_stride),
                                 input=self.input_of(resolution), name=name))

    def split(self, arch: ArchSpec, prefer: tuple[int, ...] | None = None,
              choices: bool = True) -> tuple[float | None, tuple[int, ...]] | None:
        """(depth multiplier, blocks per stage) splitting ``arch`` into the space's
        stages: each starts with its stride and keeps one width and, with ``choices``,
        uses a width and block types the stage offers. ``prefer`` is tried first
        when several splits fit; None when none does."""
        options = sorted(self._depth_options().items(), key=lambda o: o[0] != prefer)
        blocks = arch.blocks
        for depths, m in options:
            if sum(depths) == len(blocks) and self._fits(blocks, depths, choices):
                return m, depths
        return None

    def _fits(self, blocks: Sequence[BlockSpec], depths: tuple[int, ...], choices: bool) -> bool:
        i = 0
        for stage, n in zip(self.stages, depths):
            run = blocks[i:i + n]
            if any(b.stride != stage.block_stride(j) or b.out != run[0].out
                   for j, b in enumerate(run)):
                return False
            if choices and (run[0].out not in stage.channels
                            or any(b.type not in stage.types for b in run)):
                return False
            i += n
        return True

    def sample(self, rng: np.random.Generator) -> ArchSpec:
        pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
        m = pick(self.depth_multipliers) if self.depth_multipliers else None
        stages = []
        for stage in self.stages:
            depth, out = pick(self.stage_depths(stage, m)), pick(stage.channels)
            picks = []
            for _ in range(depth):
                kind = pick(stage.types)
                kernel = pick(stage.kernels)  # drawn before the expansion
                picks.append((kind, kernel, 1 if kind == "conv" else pick(stage.expands)))
            stages.append((out, picks))
        stem = pick(self.stem_channels)
        # drawn only when searched, so a space without them samples as it always did
        return self.build(stem, stages, head_width=pick(self.head_widths) if self.head_widths
                          else None,
                          out_stride=pick(self.out_strides) if self.out_strides else None,
                          resolution=pick(self.resolutions) if self.resolutions else None)

    # ---- named networks of the space ----

    def baseline(self, base_channels: Sequence[int] | None = None,
                 base_stem: int = 32) -> ArchSpec:
        """The MobileNetV2-like network of the space: IBN blocks, 3x3 kernels, the
        largest expansion, the base depths and the widths closest to the base widths."""
        def nearest(choices, target):
            return min(choices, key=lambda c: (abs(c - target), c))

        stages = []
        for i, (stage, depth) in enumerate(zip(self.stages, self.base_depths())):
            kind = "ibn" if "ibn" in stage.types else stage.types[0]
            kernel = 3 if 3 in stage.kernels else stage.kernels[0]
            out = nearest(stage.channels, base_channels[i]) if base_channels else stage.channels[-1]
            stages.append((out, [(kind, kernel, max(stage.expands))] * depth))
        return self.build(nearest(self.stem_channels, base_stem), stages, name="baseline")

    def _extreme(self, largest: bool, block_type: str | None, kernel: int | None) -> ArchSpec:
        pick = max if largest else min
        # fused_ibn has the most MACs at equal dims, ibn the fewest
        order = ("ibn", "conv", "fused_ibn")
        stages = []
        depths = pick(self.depth_vectors(), key=sum)
        for s, (stage, depth) in enumerate(zip(self.stages, depths)):
            kind = pick(stage.types, key=lambda t: order.index(t) if t in order else 0)
            if block_type is not None:
                if block_type not in stage.types:
                    raise SpaceError(f"block_type: {block_type!r} is not a choice of stage {s} "
                                     f"({', '.join(stage.types)})")
                kind = block_type
            k = pick(stage.kernels) if kernel is None else kernel
            if k not in stage.kernels:
                raise SpaceError(f"kernel: {k} is not a choice of stage {s}")
            stages.append((pick(stage.channels), [(kind, k, pick(stage.expands))] * depth))
        name = "largest" if largest else "smallest"
        if block_type is not None or kernel is not None:
            name += "".join(f"_{v}" for v in (block_type, kernel and f"k{kernel}") if v)
        return self.build(pick(self.stem_channels), stages, name=name, **self._extremes(pick))

    def largest(self, block_type: str | None = None, kernel: int | None = None) -> ArchSpec:
        """Deepest, widest, largest kernel and expansion; ``fused_ibn`` where allowed
        (or every block ``block_type``, every kernel ``kernel``)."""
        return self._extreme(True, block_type, kernel)

    def smallest(self, block_type: str | None = None, kernel: int | None = None) -> ArchSpec:
        """Shallowest, narrowest, smallest kernel and expansion; ``ibn`` where allowed
        (or every block ``block_type``, every kernel ``kernel``)."""
        return self._extreme(False, block_type, kernel)

    def cheapest(self) -> list[ArchSpec]:
        """Small corners of the space (narrowest, shallowest, 3x3, expand 1, each block
        type): a lower bound to check constraints against before searching."""
        m = min(self.depth_multipliers) if self.depth_multipliers else None
        out = []
        for kind in dict.fromkeys(t for s in self.stages for t in s.types):
            stages = []
            for stage in self.stages:
                k = kind if kind in stage.types else stage.types[0]
                depth = min(self.stage_depths(stage, m))
                stages.append((min(stage.channels),
                               [(k, min(stage.kernels), min(stage.expands))] * depth))
            out.append(self.build(min(self.stem_channels), stages, **self._extremes(min)))
        return out

    def size(self) -> int:
        """How many distinct architectures the space holds (a float for huge spaces)."""
        per_block = lambda s: len(s.kernels) * len(s.expands) * len(s.types)  # noqa: E731
        def stages_total(m):
            return prod(len(s.channels) * sum(per_block(s) ** d for d in self.stage_depths(s, m))
                        for s in self.stages)
        ms = self.depth_multipliers or (None,)
        heads = len(self.head_widths or (None,)) * len(self.out_strides or (None,))
        inputs = len(self.resolutions or (None,))
        return heads * inputs * len(self.stem_channels) * sum(stages_total(m) for m in ms)

    # ---- as data (stored with a supernet's weights so a checkpoint rebuilds alone) ----

    def to_json(self) -> dict:
        out = asdict(self)
        if self.head.task != ClassificationHead.task:  # a classifier's head keeps its old form
            out["head"] = self.head.to_json()
        for key in ("head_widths", "resolutions", "out_strides"):  # and so does a space
            if out[key] is None:                                  # that does not search them
                del out[key]
        return out

    @classmethod
    def from_json(cls, data: dict) -> "SearchSpace":
        t = lambda v: tuple(v) if v is not None else None  # noqa: E731
        return cls(
            name=data["name"], input=InputSpec(**data["input"]),
            stem_channels=t(data["stem_channels"]),
            stages=tuple(StageChoices(**{k: t(v) if isinstance(v, list) else v
                                         for k, v in s.items()})
                         for s in data["stages"]),
            head=_head(data["head"]), stem_stride=data["stem_stride"],
            depth_multipliers=t(data.get("depth_multipliers")),
            head_widths=t(data.get("head_widths")), resolutions=t(data.get("resolutions")),
            out_strides=t(data.get("out_strides")))


def _head(data: dict):
    """A space's head from its JSON (a classifier's has no ``task``: the old form)."""
    data = {"task": ClassificationHead.task, **data}
    return HEADS[data["task"]].from_json(data, "space.head")


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
    task: str = "classification"  # the head's
    head_features: int = 1280
    stages: tuple[tuple[int, int, int], ...] = BASE_STAGES_32
    stem_stride: int = 1
    kernels: tuple[int, ...] = (3, 5, 7)
    expands: tuple[int | float, ...] = (1, 3, 4, 6)
    types: tuple[str, ...] = ("ibn", "fused_ibn")
    depth_multipliers: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25)
    width_range: tuple[float, float] = (0.5, 1.5)
    resolutions: tuple[int, ...] | None = None  # searched input resolutions
    out_strides: tuple[int, ...] | None = None  # searched output strides (segmentation)


def _space(name: str, cfg: SpaceConfig, step: int, curated: bool) -> SearchSpace:
    lo, hi = cfg.width_range
    stages = tuple(
        StageChoices(channels=aligned_channels(c, step, lo, hi),
                     depths=(d,) if curated else tuple(range(1, ceil(d * 1.25) + 1)),
                     stride=s, kernels=cfg.kernels, expands=cfg.expands, types=cfg.types)
        for c, d, s in cfg.stages)
    head = HEADS[cfg.task].for_space(cfg.head_features, cfg.classes,
                                     cfg.stem_stride * prod(s for _, _, s in cfg.stages))
    widths = aligned_channels(cfg.head_features, step, lo, hi)
    return SearchSpace(
        name=name, input=InputSpec(cfg.in_channels, cfg.resolution, cfg.resolution),
        stem_channels=aligned_channels(32, step, lo, hi), stages=stages, head=head,
        stem_stride=cfg.stem_stride, depth_multipliers=cfg.depth_multipliers if curated else None,
        head_widths=widths if head.searched_width and cfg.head_features in widths else None,
        resolutions=_choices(cfg.resolutions, cfg.resolution, "resolution"),
        out_strides=_choices(cfg.out_strides, getattr(head, "out_stride", None), "out_stride"))


def _choices(values: tuple[int, ...] | None, own, what: str) -> tuple[int, ...] | None:
    """A searched choice's values; they must hold the space's own (its baseline's)."""
    if values is None:
        return None
    if own is None:
        raise SpaceError(f"{what}s: this task's head has no {what} to search")
    if own not in values:
        raise SpaceError(f"{what}s: {list(values)} must include the space's own {what} {own}")
    return tuple(sorted(values))


def curated_space(spec: HardwareSpec, cfg: SpaceConfig = SpaceConfig()) -> SearchSpace:
    """Channels in multiples of the spec's parallelism factor; one global depth multiplier."""
    return _space(f"curated-{spec.name}", cfg, spec.parallelism, curated=True)


def uncurated_space(cfg: SpaceConfig = SpaceConfig()) -> SearchSpace:
    """Channel steps of 8 and an independent depth per stage."""
    return _space("uncurated", cfg, 8, curated=False)
