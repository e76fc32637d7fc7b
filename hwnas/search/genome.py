"""A fixed-length genome for a SearchSpace.

Every slot a network could use is a named categorical gene, including the
blocks a shallower choice of depth leaves unused. A fixed set of genes lets
NSGA-II cross over and mutate any two candidates, and every value it can produce
comes from the space's own choices, so each genome decodes to a valid network.
"""
from __future__ import annotations

import numpy as np

from hwnas.arch import ArchSpec, BlockSpec, StemSpec, validate
from hwnas.space import SearchSpace, StageChoices

Genome = dict[str, object]


def _max_depth(space: SearchSpace, stage: StageChoices) -> int:
    ms = space.depth_multipliers or (None,)
    return max(max(space.stage_depths(stage, m)) for m in ms)


def genes(space: SearchSpace) -> dict[str, tuple]:
    """Gene name -> the values it may take, in a stable order."""
    out: dict[str, tuple] = {"stem": space.stem_channels}
    if space.depth_multipliers:
        out["depth"] = space.depth_multipliers
    for i, stage in enumerate(space.stages):
        if not space.depth_multipliers:
            out[f"s{i}.depth"] = stage.depths
        out[f"s{i}.out"] = stage.channels
        for j in range(_max_depth(space, stage)):
            out[f"s{i}.b{j}.type"] = stage.types
            out[f"s{i}.b{j}.kernel"] = stage.kernels
            out[f"s{i}.b{j}.expand"] = stage.expands
    return out


def random_genome(space: SearchSpace, rng: np.random.Generator) -> Genome:
    return {name: values[int(rng.integers(len(values)))] for name, values in genes(space).items()}


def to_arch(space: SearchSpace, genome: Genome) -> ArchSpec:
    m = genome.get("depth")
    blocks = []
    for i, stage in enumerate(space.stages):
        depth = genome[f"s{i}.depth"] if m is None else space.stage_depths(stage, m)[0]
        out = genome[f"s{i}.out"]
        for j in range(depth):
            kind = genome[f"s{i}.b{j}.type"]
            expand = 1 if kind == "conv" else genome[f"s{i}.b{j}.expand"]
            blocks.append(BlockSpec(kind, genome[f"s{i}.b{j}.kernel"], out,
                                    stage.stride if j == 0 else 1, expand))
    return validate(ArchSpec(stem=StemSpec(genome["stem"], 3, space.stem_stride),
                             blocks=tuple(blocks), head=space.head, input=space.input))


def from_arch(space: SearchSpace, arch: ArchSpec) -> Genome:
    """The genome of an architecture the space holds (unused slots get the first
    choice); raises ValueError naming the first gene the space cannot express."""
    table = genes(space)
    genome: Genome = {name: values[0] for name, values in table.items()}

    def put(name, value):
        if value not in table[name]:
            raise ValueError(f"gene {name}: {value!r} is not among the space's choices "
                             f"{table[name]}")
        genome[name] = value

    put("stem", arch.stem.out)
    depths = _stage_depths(space, arch.blocks)
    if depths is None:
        raise ValueError("the architecture's blocks do not split into the space's stages")
    m, depths = depths
    pos = 0
    for i, n in enumerate(depths):
        put(f"s{i}.out", arch.blocks[pos].out)
        for j, b in enumerate(arch.blocks[pos:pos + n]):
            put(f"s{i}.b{j}.type", b.type)
            put(f"s{i}.b{j}.kernel", b.kernel)
            if b.type != "conv":
                put(f"s{i}.b{j}.expand", b.expand)
        if not space.depth_multipliers:
            put(f"s{i}.depth", n)
        pos += n
    if m is not None:
        genome["depth"] = m
    if to_arch(space, genome).blocks != arch.blocks:
        raise ValueError("the architecture's stages do not line up with the space's stages")
    return genome


def _stage_depths(space: SearchSpace, blocks: tuple[BlockSpec, ...]):
    """(multiplier, depth per stage) splitting ``blocks`` into the space's stages:
    each stage starts with its stride and keeps one width; None if none fits."""
    def split(i: int, pos: int, allowed) -> list[int] | None:
        if i == len(space.stages):
            return [] if pos == len(blocks) else None
        for n in allowed(space.stages[i]):
            run = blocks[pos:pos + n]
            if (len(run) == n and run[0].stride == space.stages[i].stride
                    and all(b.out == run[0].out and b.stride == 1 for b in run[1:])):
                rest = split(i + 1, pos + n, allowed)
                if rest is not None:
                    return [n] + rest
        return None

    for m in space.depth_multipliers or (None,):
        depths = split(0, 0, lambda stage: space.stage_depths(stage, m))
        if depths is not None:
            return m, depths
    return None
