"""The segmentation head as a plug-in: its architecture fields and the ops the accelerator runs.

A light, NPU-friendly decoder in the LR-ASPP family on ONE backbone feature level (the last,
at the backbone's total ``stride``), with its own output stride ``out_stride``:

    1x1 conv (BN + ReLU)           -> ``features`` channels
    gate                           squeeze-and-excite: x * sigmoid(fc(mean_hw(x)))
    resize x (stride / out_stride) bilinear; left out when out_stride == stride
    KxK conv (``REFINE_KERNEL``)   -> ``features``: refines at the output stride (a linear map
                                      after the resize would commute with it and buy nothing)
    1x1 conv (bias)                -> ``classes + 1`` logits (background is class 0)

A finer ``out_stride`` runs the refinement conv on four times the pixels per halving: the
search weighs that cost against the sharper masks. The searched input resolution is the
architecture's own ``input`` (``hwnas.space.SearchSpace.resolutions``).

**What the host runs** (not accelerator ops, not in the simulated latency): scaling the image
to the network's input resolution, and the logits' bilinear upsampling to the labels'
resolution plus the per-pixel argmax (``hwnas.tasks.segmentation.modules``).

Compact string: ``seg_f64_n1_s8_o4`` (features 64, 1 foreground class, backbone stride 8,
output stride 4). Free of torch, like ``hwnas.arch`` and ``hwnas.lowering``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hwnas.arch import (MAX_CHANNELS, MAX_CLASSES, ArchError, _fields, check_int,
                        check_total_stride, register_head)
from hwnas.lowering import HEAD_OPS, OpSpec

REFINE_KERNEL = 3


@register_head
@dataclass(frozen=True, slots=True)
class SegmentationHead:
    task: ClassVar[str] = "segmentation"
    code: ClassVar[str] = "seg"
    searched_width: ClassVar[bool] = True  # a space searches the decoder's width
    features: int = 64  # the decoder's width
    classes: int = 1  # foreground classes; the logits have one more (background)
    stride: int = 8  # the backbone's total stride the head expects
    out_stride: int = 4  # the logits' stride (a power of 2, at most ``stride``)

    @classmethod
    def for_space(cls, features: int, classes: int, stride: int) -> "SegmentationHead":
        """The head of a search space whose stem and stages downsample by ``stride``: the
        output at half the backbone's stride (one 2x upsampling), as LR-ASPP's."""
        return cls(features, classes, stride, max(1, stride // 2))

    @classmethod
    def from_json(cls, data: dict, where: str) -> "SegmentationHead":
        _fields(data, where, ("task", "classes"), ("features", "stride", "out_stride"))
        head = cls(features=check_int(data.get("features", 64), f"{where}.features", 1,
                                      MAX_CHANNELS),
                   classes=check_int(data["classes"], f"{where}.classes", 1, MAX_CLASSES),
                   stride=check_total_stride(data.get("stride", 8), f"{where}.stride"),
                   out_stride=check_total_stride(data.get("out_stride", 4), f"{where}.out_stride"))
        head._check_out_stride(f"{where}.out_stride")
        return head

    def _check_out_stride(self, where: str) -> None:
        if self.out_stride > self.stride:
            raise ArchError(f"{where}: {self.out_stride} is coarser than the backbone's stride "
                            f"{self.stride} (the head upsamples, it does not downsample)")

    def validate(self) -> None:
        check_int(self.features, "head.features", 1, MAX_CHANNELS)
        check_int(self.classes, "head.classes", 1, MAX_CLASSES)
        check_total_stride(self.stride, "head.stride")
        check_total_stride(self.out_stride, "head.out_stride")
        self._check_out_stride("head.out_stride")

    @property
    def upsample(self) -> int:
        """The head's own upsampling factor (1: none)."""
        return self.stride // self.out_stride

    @property
    def out_channels(self) -> int:
        return self.classes + 1

    def to_json(self) -> dict:
        return {"task": self.task, "features": self.features, "classes": self.classes,
                "stride": self.stride, "out_stride": self.out_stride}

    def encode(self) -> str:
        return f"{self.code}_f{self.features}_n{self.classes}_s{self.stride}_o{self.out_stride}"

    @classmethod
    def decode(cls, fields: dict[str, str]) -> "SegmentationHead":
        return cls(features=int(fields["f"]), classes=int(fields["n"]), stride=int(fields["s"]),
                   out_stride=int(fields["o"]))


def segmentation_ops(head: SegmentationHead, in_c: int) -> tuple[OpSpec, ...]:
    """The accelerator's part of the head (the host's resizes are not ops here)."""
    f = head.features
    up = (OpSpec("up", "resize", f, head.upsample),) if head.upsample > 1 else ()
    return (OpSpec("reduce", "conv", f), OpSpec("gate", "gate", f), *up,
            OpSpec("refine", "conv", f, REFINE_KERNEL), OpSpec("pred", "conv", head.out_channels))


HEAD_OPS[SegmentationHead.task] = segmentation_ops
