"""A fixed-length genome for a SearchSpace.

Every slot a network could use is a named categorical gene, including the
blocks a shallower choice of depth leaves unused. A fixed set of genes lets
NSGA-II cross over and mutate any two candidates, and every value it can produce
comes from the space's own choices, so each genome decodes to a valid network.
"""
from __future__ import annotations

import numpy as np

from hwnas.arch import ArchSpec
from hwnas.space import SearchSpace

Genome = dict[str, object]


def genes(space: SearchSpace) -> dict[str, tuple]:
    """Gene name -> the values it may take, in a stable order."""
    out: dict[str, tuple] = {"stem": space.stem_channels}
    if space.depth_multipliers:
        out["depth"] = space.depth_multipliers
    for i, (stage, most) in enumerate(zip(space.stages, space.max_depths())):
        if not space.depth_multipliers:
            out[f"s{i}.depth"] = stage.depths
        out[f"s{i}.out"] = stage.channels
        for j in range(most):
            out[f"s{i}.b{j}.type"] = stage.types
            out[f"s{i}.b{j}.kernel"] = stage.kernels
            out[f"s{i}.b{j}.expand"] = stage.expands
    if space.head_widths:
        out["head"] = space.head_widths
    if space.out_strides:
        out["out_stride"] = space.out_strides
    if space.resolutions:
        out["resolution"] = space.resolutions
    return out


def random_genome(space: SearchSpace, rng: np.random.Generator) -> Genome:
    return {name: values[int(rng.integers(len(values)))] for name, values in genes(space).items()}


def to_arch(space: SearchSpace, genome: Genome) -> ArchSpec:
    m = genome.get("depth")
    stages = []
    for i, stage in enumerate(space.stages):
        depth = genome[f"s{i}.depth"] if m is None else space.stage_depths(stage, m)[0]
        stages.append((genome[f"s{i}.out"], [(genome[f"s{i}.b{j}.type"], genome[f"s{i}.b{j}.kernel"],
                                              genome[f"s{i}.b{j}.expand"]) for j in range(depth)]))
    return space.build(genome["stem"], stages, head_width=genome.get("head"),
                       out_stride=genome.get("out_stride"), resolution=genome.get("resolution"))


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
    if space.head_widths:
        put("head", arch.head.features)
    if space.out_strides:
        put("out_stride", arch.head.out_stride)
    if space.resolutions:
        put("resolution", arch.input.height)
    # the split ignores widths and types so that the gene checks below name the culprit
    fit = space.split(arch, choices=False)
    if fit is None:
        raise ValueError("the architecture's blocks do not split into the space's stages")
    m, depths = fit
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
    if (to_arch(space, genome).blocks != arch.blocks or not space.holds_head(arch.head)
            or not space.holds_input(arch.input)):
        raise ValueError("the architecture's stages do not line up with the space's stages")
    return genome

