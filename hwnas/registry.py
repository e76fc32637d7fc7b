"""Named reference architectures: the baselines searches are measured against,
and the set every test parametrizes over."""
from __future__ import annotations

from collections.abc import Callable

from hwnas.arch import ArchSpec, BlockSpec, ClassificationHead, InputSpec, StemSpec, validate

# MobileNetV2's stage table: (expand t, channels c, repeats n, first stride s).
MBV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
               (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _stages(table, types=None, strides=None) -> tuple[BlockSpec, ...]:
    blocks = []
    for i, (t, c, n, s) in enumerate(table):
        kind = types[i] if types else "ibn"
        s = strides[i] if strides else s
        for j in range(n):
            blocks.append(BlockSpec(kind, 3, c, s if j == 0 else 1, t))
    return tuple(blocks)


def mobilenetv2_224() -> ArchSpec:
    return ArchSpec(name="mobilenetv2_224", input=InputSpec(3, 224, 224),
                    stem=StemSpec(32, 3, 2), blocks=_stages(MBV2_STAGES),
                    head=ClassificationHead(1280, 1000))


def mobilenetv2_fused_224() -> ArchSpec:
    """MobileNetV2 with its first three stages as fused IBNs (EfficientNet-EdgeTPU style)."""
    types = ["fused_ibn"] * 3 + ["ibn"] * 4
    return ArchSpec(name="mobilenetv2_fused_224", input=InputSpec(3, 224, 224),
                    stem=StemSpec(32, 3, 2), blocks=_stages(MBV2_STAGES, types),
                    head=ClassificationHead(1280, 1000))


# 32x32 inputs (CIFAR, padded MNIST): stride-1 stem, two fewer downsamplings.
_STRIDES_32 = (1, 1, 2, 2, 1, 2, 1)


def mobilenetv2_32(channels: int = 1, classes: int = 10) -> ArchSpec:
    return ArchSpec(name="mobilenetv2_32", input=InputSpec(channels, 32, 32),
                    stem=StemSpec(32, 3, 1), blocks=_stages(MBV2_STAGES, strides=_STRIDES_32),
                    head=ClassificationHead(1280, classes))


def mobilenetv2_fused_32(channels: int = 1, classes: int = 10) -> ArchSpec:
    types = ["fused_ibn"] * 3 + ["ibn"] * 4
    return ArchSpec(name="mobilenetv2_fused_32", input=InputSpec(channels, 32, 32),
                    stem=StemSpec(32, 3, 1),
                    blocks=_stages(MBV2_STAGES, types, _STRIDES_32),
                    head=ClassificationHead(1280, classes))


def tiny_conv_32(channels: int = 1, classes: int = 10) -> ArchSpec:
    """A small plain-conv network: the fastest thing that still learns digits."""
    blocks = (BlockSpec("conv", 3, 32, 2), BlockSpec("conv", 3, 64, 2),
              BlockSpec("fused_ibn", 3, 64, 1, 2))
    return ArchSpec(name="tiny_conv_32", input=InputSpec(channels, 32, 32),
                    stem=StemSpec(16, 3, 1), blocks=blocks, head=ClassificationHead(0, classes))


REFERENCES: dict[str, Callable[[], ArchSpec]] = {
    "mobilenetv2_224": mobilenetv2_224,
    "mobilenetv2_fused_224": mobilenetv2_fused_224,
    "mobilenetv2_32": mobilenetv2_32,
    "mobilenetv2_fused_32": mobilenetv2_fused_32,
    "tiny_conv_32": tiny_conv_32,
}


def reference(name: str) -> ArchSpec:
    if name not in REFERENCES:
        raise KeyError(f"unknown reference architecture {name!r} "
                       f"(known: {', '.join(REFERENCES)})")
    return validate(REFERENCES[name]())
