"""What the microbenchmarks measure: units (stem, blocks, head) in the context of a network.

A ``Sample`` is one unit inside a small network that gives it a real neighbourhood: a
stub 1x1 stem producing the unit's input (with stride-2 1x1 blocks before a head whose
ops depend on the backbone's stride, such as a decoder's upsampling), the unit, the unit
that follows it in the network it came from (which decides whether the unit's output may
stay in SRAM), and a head. Only the unit's own kernels are measured and recorded.

Samples come from three places (nn-Meter's recipe):
- ``network``: units of networks drawn from the search spaces the searches use, at
  several resolutions, each with a few nearby shapes ("neighbours");
- ``random``: units with shapes drawn over the whole supported range (input 8-320,
  channels 8-1280 including counts that are no multiple of the array width, kernels
  1/3/5/7, strides 1/2, expansion 1-8);
- ``adaptive``: neighbours of the samples where a first model's error is highest.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from math import ceil

import numpy as np

from hwnas.arch import ArchSpec, BlockSpec, ClassificationHead, InputSpec, StemSpec, validate
from hwnas.lowering import block_ops, unit_graph_ops, unit_ops
from hwnas.space import BASE_STAGES_32, BASE_STAGES_224, SpaceConfig, curated_space, uncurated_space

# Limits of what the microbenchmarks cover (and the estimator is trained on).
RESOLUTION = (8, 320)
CHANNELS = (8, 1280)
KERNELS = (1, 3, 5, 7)
EXPANDS = (1, 1.5, 2, 3, 4, 5, 6, 8)
MAX_BLOCK_MACS = 2e10  # the largest blocks of the 224-px spaces (7x7 fused_ibn, expand 6, at 112 px)


@dataclass(frozen=True, slots=True)
class Sample:
    arch: ArchSpec   # the small network around the unit
    unit: int        # 0 = stem, 1.. = blocks, len(blocks) + 1 = head
    source: str      # network | random | adaptive

    @property
    def role(self) -> str:
        if self.unit == 0:
            return "stem"
        return "head" if self.unit == len(self.arch.blocks) + 1 else "block"


def space_configs(entries: list[dict]) -> list[SpaceConfig]:
    """params.yaml space entries -> SpaceConfig. ``stages: 32`` or ``224`` picks the
    MobileNetV2-like base table for small or ImageNet-size inputs; a list of
    ``[channels, depth, stride]`` gives the table itself (e.g. the search's space)."""
    configs = []
    for e in entries:
        e = dict(e)
        stages = e.pop("stages", 32)
        table = (tuple(tuple(s) for s in stages) if isinstance(stages, list)
                 else {32: BASE_STAGES_32, 224: BASE_STAGES_224}[int(stages)])
        for key in ("kernels", "expands", "types", "depth_multipliers", "width_range",
                    "resolutions", "out_strides"):
            if key in e:
                e[key] = tuple(e[key])
        configs.append(SpaceConfig(stages=table, **e))
    return configs


def spaces_for(spec, configs: list[SpaceConfig]):
    """Curated (for ``spec``) and uncurated spaces over every config."""
    out = []
    for cfg in configs:
        if spec is not None:
            out.append(curated_space(spec, cfg))
        out.append(uncurated_space(cfg))
    return out


def block_in_context(block: BlockSpec, in_c: int, h: int, w: int,
                     nxt: BlockSpec | ClassificationHead | None, source: str) -> Sample:
    """A block fed by a stub 1x1 stem at (in_c, h, w) and followed by ``nxt``."""
    blocks = (block,) + ((nxt,) if isinstance(nxt, BlockSpec) else ())
    head = nxt if isinstance(nxt, ClassificationHead) else ClassificationHead(0, 10)
    arch = ArchSpec(stem=StemSpec(in_c, 1, 1), blocks=blocks, head=head,
                    input=InputSpec(3, h, w))
    return Sample(validate(arch), 1, source)


def stem_in_context(arch: ArchSpec, source: str) -> Sample:
    mini = ArchSpec(stem=arch.stem, blocks=arch.blocks[:1], head=arch.head if not arch.blocks
                    else ClassificationHead(0, 10), input=arch.input)
    return Sample(validate(mini), 0, source)


def head_in_context(head: ClassificationHead, c: int, h: int, w: int, source: str) -> Sample:
    """A head fed a ``c`` x ``h`` x ``w`` map by a stub: a 1x1 stem, and for a head whose ops
    depend on its stride (a decoder's upsampling factor) stride-2 1x1 conv blocks reaching
    that stride from an input ``stride`` times larger. A head that only checks the stride
    (detection) is moved to stride 1 instead: same ops, smaller stub."""
    stride = getattr(head, "stride", 1)
    if stride != 1 and _ops_at_stride_1(head, c):
        head, stride = replace(head, stride=1), 1
    blocks = (BlockSpec("conv", 1, c, 2, 1),) * (stride.bit_length() - 2) if stride > 1 else ()
    arch = ArchSpec(stem=StemSpec(c, 1, min(stride, 2)), blocks=blocks, head=head,
                    input=InputSpec(3, h * stride, w * stride))
    return Sample(validate(arch), len(blocks) + 1, source)


def _ops_at_stride_1(head, c: int) -> bool:
    """Whether ``head`` lowers to the same ops at stride 1 (then its stride is only a check)."""
    try:
        moved = replace(head, stride=1)
        moved.validate()
        return unit_ops(moved, c) == unit_ops(head, c)
    except (TypeError, ValueError, ZeroDivisionError):  # no such head at stride 1 (ArchError)
        return False


def map_size(arch: ArchSpec) -> tuple[int, int]:
    """Height and width of the feature map the head of ``arch`` reads."""
    h, w = ceil(arch.input.height / arch.stem.stride), ceil(arch.input.width / arch.stem.stride)
    for b in arch.blocks:
        h, w = ceil(h / b.stride), ceil(w / b.stride)
    return h, w


def unit_of(arch: ArchSpec, u: int, source: str) -> Sample:
    """Unit ``u`` of a full network, cut out with its real successor."""
    if u == 0:
        return stem_in_context(arch, source)
    h, w = ceil(arch.input.height / arch.stem.stride), ceil(arch.input.width / arch.stem.stride)
    c = arch.stem.out
    for b in arch.blocks[:u - 1]:
        h, w, c = ceil(h / b.stride), ceil(w / b.stride), b.out
    if u == len(arch.blocks) + 1:
        return head_in_context(arch.head, c, h, w, source)
    nxt = arch.blocks[u] if u < len(arch.blocks) else arch.head
    return block_in_context(arch.blocks[u - 1], c, h, w, nxt, source)


def _macs_ok(block: BlockSpec, c: int, h: int, w: int, max_macs: float = MAX_BLOCK_MACS) -> bool:
    macs = sum(op.macs for op in unit_graph_ops(block_ops(block, c), c, h, w))
    if block.type == "ibn" and block.expand == 1:
        # Kept from the closed form this replaced, which also counted an expand conv that
        # expand-1 blocks lack: dropping it changes which random shapes are drawn.
        macs += h * w * c * block.mid(c)
    return macs <= max_macs


def _channels(rng: np.random.Generator, lo: int = CHANNELS[0], hi: int = CHANNELS[1],
              step: int = 32) -> int:
    """Log-uniform channel count: a third aligned to ``step``, a third to 8, a third any."""
    c = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    mode = rng.integers(3)
    if mode == 0:
        c = round(c / step) * step
    elif mode == 1:
        c = round(c / 8) * 8
    return int(min(hi, max(lo, round(c))))


def _random_block(rng, c: int, h: int, step: int, residual_p: float = 0.4) -> BlockSpec:
    kind = ("ibn", "fused_ibn", "conv")[int(rng.choice(3, p=(0.45, 0.35, 0.2)))]
    kernel = int(rng.choice(KERNELS, p=(0.1, 0.5, 0.25, 0.15)))
    stride = 2 if (h >= 2 and rng.random() < 0.3) else 1
    expand = 1 if kind == "conv" else EXPANDS[int(rng.integers(len(EXPANDS)))]
    if kind != "conv" and stride == 1 and rng.random() < residual_p:
        out = c
    else:
        out = _channels(rng, step=step)
    return BlockSpec(kind, kernel, out, stride, expand)


def unit_macs(sample: Sample) -> int:
    from hwnas.estimator.decompose import decompose

    df = decompose([sample.arch], None, "block")
    return int(df["macs"].to_numpy()[sample.unit])


def random_sample(rng: np.random.Generator, step: int = 32,
                  max_macs: float = MAX_BLOCK_MACS) -> Sample:
    """A unit with shapes drawn over the whole supported range, at most ``max_macs``."""
    for _ in range(50):
        s = _random_sample(rng, step, max_macs)
        if unit_macs(s) <= max_macs:
            break
    return s


def _random_sample(rng: np.random.Generator, step: int, max_macs: float) -> Sample:
    r = rng.random()
    if r < 0.08:  # stem
        res = int(np.exp(rng.uniform(np.log(RESOLUTION[0]), np.log(RESOLUTION[1]))))
        stem = StemSpec(_channels(rng, 8, 96, step), int(rng.choice((3, 5, 7))),
                        int(rng.choice((1, 2))))
        c = stem.out
        h = ceil(res / stem.stride)
        arch = ArchSpec(stem=stem, blocks=(_random_block(rng, c, h, step),),
                        head=ClassificationHead(0, 10),
                        input=InputSpec(int(rng.choice((1, 3))), res, res))
        return Sample(validate(arch), 0, "random")
    if r < 0.15:  # head
        h = int(rng.choice((1, 2, 3, 4, 5, 7, 8, 10, 14)))
        c = _channels(rng, 16, CHANNELS[1], step)
        feats = 0 if rng.random() < 0.2 else _channels(rng, 256, CHANNELS[1], step)
        head = ClassificationHead(feats, int(rng.choice((2, 10, 100, 1000))))
        return head_in_context(head, c, h, h, "random")
    for _ in range(100):
        h = int(np.exp(rng.uniform(np.log(RESOLUTION[0]), np.log(RESOLUTION[1]))))
        c = _channels(rng, step=step)
        block = _random_block(rng, c, h, step)
        if _macs_ok(block, c, h, h, max_macs):
            break
    while not _macs_ok(block, c, h, h, max_macs) and (h > RESOLUTION[0] or block.out > CHANNELS[0]
                                                      or c > CHANNELS[0]):
        # Shrink until it fits (halve resolution and channels, keeping a residual one).
        c2 = max(CHANNELS[0], c // 2)
        out = c2 if block.out == c else max(CHANNELS[0], block.out // 2)
        h, c, block = max(RESOLUTION[0], h // 2), c2, replace(block, out=out)
    oh = ceil(h / block.stride)
    if rng.random() < 0.15:
        nxt = ClassificationHead(int(rng.choice((0, 1280))), 10)
    else:
        nxt = _random_block(rng, block.out, oh, step)
    return block_in_context(block, c, h, h, nxt, "random")


def neighbour(sample: Sample, rng: np.random.Generator, source: str | None = None,
              max_macs: float = MAX_BLOCK_MACS) -> Sample:
    """A nearby shape: channels, resolution, kernel or expansion nudged, context kept."""
    source = source or sample.source
    arch = sample.arch
    for _ in range(20):
        try:
            if sample.role == "stem":
                res = int(np.clip(arch.input.height + rng.integers(-8, 9), *RESOLUTION))
                out = int(np.clip(arch.stem.out + rng.integers(-8, 9), 8, 128))
                new = replace(arch, input=replace(arch.input, height=res, width=res),
                              stem=replace(arch.stem, out=out))
                return Sample(validate(new), 0, source)
            c, h = arch.stem.out, arch.input.height
            if sample.role == "head":
                h = map_size(arch)[0]  # the input itself unless the stub strides
                c2 = int(np.clip(c + rng.integers(-16, 17), 8, CHANNELS[1]))
                h2 = int(np.clip(h + rng.integers(-1, 2), 1, 20))
                return head_in_context(arch.head, c2, h2, h2, source)
            block = arch.blocks[0]
            nxt = arch.blocks[1] if len(arch.blocks) > 1 else arch.head
            dc = int(rng.integers(-16, 17))
            c2 = int(np.clip(c + dc, CHANNELS[0], CHANNELS[1]))
            residual = block.residual(c)
            out = c2 if residual else int(np.clip(block.out + rng.integers(-16, 17), *CHANNELS))
            h2 = int(np.clip(h + rng.integers(-max(1, h // 8), max(1, h // 8) + 1), *RESOLUTION))
            kernel, expand = block.kernel, block.expand
            if rng.random() < 0.2:
                kernel = int(rng.choice(KERNELS))
            if block.type != "conv" and rng.random() < 0.2:
                expand = EXPANDS[int(rng.integers(len(EXPANDS)))]
            new_block = replace(block, out=out, kernel=kernel, expand=expand)
            if isinstance(nxt, BlockSpec) and nxt.type != "conv" and nxt.stride == 1 \
                    and nxt.out == block.out:
                nxt = replace(nxt, out=out)  # keep the successor's residual
            if not _macs_ok(new_block, c2, h2, h2, max_macs):
                continue
            return block_in_context(new_block, c2, h2, h2, nxt, source)
        except ValueError:
            continue
    return replace(sample, source=source)


def network_samples(n: int, spaces, rng: np.random.Generator, neighbours: int = 2) -> list[Sample]:
    """Units of networks drawn from ``spaces``, each followed by ``neighbours`` nearby shapes."""
    out: list[Sample] = []
    while len(out) < n:
        space = spaces[int(rng.integers(len(spaces)))]
        arch = space.sample(rng)
        u = int(rng.integers(len(arch.blocks) + 2))
        s = unit_of(arch, u, "network")
        out.append(s)
        for _ in range(neighbours):
            if len(out) < n:
                out.append(neighbour(s, rng))
    return out


def whole_network_samples(n: int, spaces, rng: np.random.Generator) -> list[Sample]:
    """Every unit of networks drawn from ``spaces``, each in its whole network (profiled
    targets time a network once and read all its units), until ``n`` units."""
    out: list[Sample] = []
    while len(out) < n:
        arch = spaces[int(rng.integers(len(spaces)))].sample(rng)
        out += [Sample(arch, u, "network") for u in range(len(arch.blocks) + 2)]
    return out[:n]
