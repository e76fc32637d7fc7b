"""Expert-in-the-loop rules: declarative edits a hardware expert would make to a
baseline, each applied in turn with its estimated latency and memory gain.

A rule is data (a frozen dataclass built from a YAML/JSON mapping such as
``{"pin_block_type": {"type": "fused_ibn", "min_scale": 0.25}}``) with a pure
``apply(arch, cost) -> arch``. ``cost(archs) -> [(latency_ms, memory_bytes)]`` is the
judge, normally the latency estimator. Rules select blocks by feature-map scale
(block input size / network input size), so a lesson learned on one task's
network transfers to another's. ``learn_rules`` turns a finished search's Pareto
set into such rules.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from hwnas.arch import BLOCK_TYPES, ArchSpec, BlockSpec, validate
from hwnas.lowering import feature_map_sizes

Cost = Callable[[Sequence[ArchSpec]], list[tuple[float, float]]]


def block_scales(arch: ArchSpec) -> list[float]:
    """Each block's input feature-map height over the network's input height."""
    return [h / arch.input.height for h, _ in feature_map_sizes(arch)]


def _with_blocks(arch: ArchSpec, blocks) -> ArchSpec:
    return validate(replace(arch, blocks=tuple(blocks)))


def _check_multiple(value, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}.multiple: must be a positive integer, got {value!r}")


def _round_to(value: int, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


@dataclass(frozen=True)
class FuseIBN:
    """Turn an IBN into a fused IBN wherever the judge says it is faster
    (``min_scale`` limits it to early, high-resolution blocks)."""

    key = "fuse_ibn"
    min_scale: float = 0.0

    def apply(self, arch: ArchSpec, cost: Cost) -> ArchSpec:
        scales = block_scales(arch)
        spots = [i for i, b in enumerate(arch.blocks)
                 if b.type == "ibn" and scales[i] >= self.min_scale]
        if not spots:
            return arch
        flips = [_with_blocks(arch, [replace(b, type="fused_ibn") if j == i else b
                                     for j, b in enumerate(arch.blocks)]) for i in spots]
        base, *tried = cost([arch] + flips)
        pays = {i for i, c in zip(spots, tried) if c[0] < base[0]}
        return _with_blocks(arch, [replace(b, type="fused_ibn") if i in pays else b
                                   for i, b in enumerate(arch.blocks)])


@dataclass(frozen=True)
class AlignChannels:
    """Round every width to the nearest multiple of the array width."""

    key = "align_channels"
    multiple: int = 32

    def __post_init__(self):
        _check_multiple(self.multiple, self.key)

    def apply(self, arch: ArchSpec, cost: Cost) -> ArchSpec:
        arch = replace(arch, stem=replace(arch.stem, out=_round_to(arch.stem.out, self.multiple)))
        return _with_blocks(arch, [replace(b, out=_round_to(b.out, self.multiple))
                                   for b in arch.blocks])


@dataclass(frozen=True)
class ReplaceDepthwise:
    """Replace depthwise convolutions with dense ones: a depthwise-separable IBN
    (expand 1) becomes a dense conv block, an expanding IBN a fused IBN."""

    key = "replace_depthwise"
    min_scale: float = 0.0

    def apply(self, arch: ArchSpec, cost: Cost) -> ArchSpec:
        scales = block_scales(arch)

        def dense(b: BlockSpec, s: float) -> BlockSpec:
            if b.type != "ibn" or s < self.min_scale:
                return b
            return replace(b, type="fused_ibn") if b.expand != 1 else replace(b, type="conv")

        return _with_blocks(arch, [dense(b, s) for b, s in zip(arch.blocks, scales)])


@dataclass(frozen=True)
class EvenChannels:
    """Make widths even across the model: every block at one resolution takes
    the widest width used there (aligned to ``multiple``), so widths only grow
    with depth and more blocks keep their residual connection."""

    key = "even_channels"
    multiple: int = 8

    def __post_init__(self):
        _check_multiple(self.multiple, self.key)

    def apply(self, arch: ArchSpec, cost: Cost) -> ArchSpec:
        sizes = [-(-h // b.stride) for (h, _), b in zip(feature_map_sizes(arch), arch.blocks)]
        widest: dict[int, int] = {}
        for size, b in zip(sizes, arch.blocks):
            widest[size] = max(widest.get(size, 0), _round_to(b.out, self.multiple))
        return _with_blocks(arch, [replace(b, out=widest[s]) for s, b in zip(sizes, arch.blocks)])


@dataclass(frozen=True)
class PinBlockType:
    """Force one block type on the blocks whose scale lies in [min_scale, max_scale]."""

    key = "pin_block_type"
    type: str = "fused_ibn"
    min_scale: float = 0.0
    max_scale: float = 1.0

    def __post_init__(self):
        if self.type not in BLOCK_TYPES:
            raise ValueError(f"{self.key}.type: {self.type!r} is not one of {', '.join(BLOCK_TYPES)}")
        if not 0 <= self.min_scale <= self.max_scale:
            raise ValueError(f"{self.key}: need 0 <= min_scale <= max_scale")

    def apply(self, arch: ArchSpec, cost: Cost) -> ArchSpec:
        scales = block_scales(arch)

        def pin(b: BlockSpec, s: float) -> BlockSpec:
            if not self.min_scale <= s <= self.max_scale or b.type == self.type:
                return b
            return replace(b, type=self.type, expand=1 if self.type == "conv" else
                           (b.expand if b.type != "conv" else 4))

        return _with_blocks(arch, [pin(b, s) for b, s in zip(arch.blocks, scales)])


RULES = {cls.key: cls for cls in (FuseIBN, AlignChannels, ReplaceDepthwise, EvenChannels,
                                  PinBlockType)}


def parse_rules(items) -> list:
    """``[{"fuse_ibn": {}}, {"align_channels": {"multiple": 32}}, ...]`` -> rules."""
    rules = []
    for n, item in enumerate(items or ()):
        if not isinstance(item, dict) or len(item) != 1:
            raise ValueError(f"rules[{n}]: must be a mapping with one rule name")
        (key, args), = item.items()
        if key not in RULES:
            raise ValueError(f"rules[{n}]: unknown rule {key!r} (known: {', '.join(RULES)})")
        try:
            rules.append(RULES[key](**(args or {})))
        except (TypeError, ValueError) as err:
            raise ValueError(f"rules[{n}].{key}: {err}") from None
    return rules


def rule_to_json(rule) -> dict:
    fields = {k: getattr(rule, k) for k in rule.__dataclass_fields__}
    return {rule.key: fields}


@dataclass(frozen=True)
class RuleResult:
    rule: dict
    latency_ms: float
    memory_bytes: float
    latency_gain: float  # fraction saved by this rule, relative to before it
    memory_gain: float
    arch: ArchSpec       # the network after this rule (and the kept ones before it)
    kept: bool = True


def apply_rules(arch: ArchSpec, rules: Sequence, cost: Cost,
                only_gains: bool = False) -> list[RuleResult]:
    """Apply rules in order; each row says what that rule gained on top of the
    ones before. With ``only_gains``, a rule that makes latency or memory worse is
    reported but not kept."""
    (lat, mem), = cost([arch])
    results = []
    for rule in rules:
        new = rule.apply(arch, cost)
        (new_lat, new_mem), = cost([new])
        kept = not only_gains or (new_lat <= lat and new_mem <= mem)
        results.append(RuleResult(rule_to_json(rule), new_lat, new_mem,
                                  1 - new_lat / lat, 1 - new_mem / mem,
                                  new if kept else arch, kept))
        if kept:
            arch, lat, mem = new, new_lat, new_mem
    return results


def default_rules(parallelism: int) -> list:
    """Every rule once, channels aligned to the array width ``parallelism``: what a hardware
    expert would try on a baseline without any search."""
    return parse_rules([{"fuse_ibn": {}}, {"replace_depthwise": {}},
                        {"align_channels": {"multiple": parallelism}}, {"even_channels": {}},
                        {"pin_block_type": {"type": "fused_ibn", "min_scale": 0.25}}])


def learn_rules(pareto: Sequence[ArchSpec], parallelism: int, majority: float = 0.5) -> list:
    """Lessons of a finished search as rules for another task's baseline: the
    scales at which most Pareto networks use fused IBNs, and channel alignment
    when most of their widths are multiples of the array width."""
    fused, seen = Counter(), Counter()
    aligned = total = 0
    for arch in pareto:
        for b, s in zip(arch.blocks, block_scales(arch)):
            seen[s] += 1
            fused[s] += b.type == "fused_ibn"
            aligned += b.out % parallelism == 0
            total += 1
    rules = []
    fused_scales = [s for s in seen if fused[s] > majority * seen[s]]
    if fused_scales:
        rules.append(PinBlockType("fused_ibn", min_scale=min(fused_scales)))
    if total and aligned > majority * total:
        rules.append(AlignChannels(parallelism))
    return rules
