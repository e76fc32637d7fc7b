"""The detection head as a plug-in: its architecture fields and the ops the accelerator runs.

An NPU-friendly single-shot, anchor-free head (FCOS/CenterNet family) on ONE backbone feature
level: no upsampling, no concatenation, no second level. The backbone's total stride is the
head's ``stride`` (8: a 12x12 map at 96 px) and the head is two convs on that map:

    KxK conv (``HEAD_KERNEL``, BN + ReLU) -> ``features`` channels
    1x1 conv (bias)                       -> ``classes`` heatmap logits + 4 box distances

Box channels are FCOS's (l, t, r, b): distances in pixels from the cell's centre to the box's
four sides, ``softplus(raw) * stride``. Chosen over CenterNet's (w, h) + offset because the
decoded box of every location is what ``torchvision.ops.generalized_box_iou_loss`` compares, with
no separate offset regression, and because several cells per object can be positive (FCOS's
centre sampling), which gives a few-epoch CPU run several times more positive samples than
CenterNet's one cell per object; the duplicates it makes are removed by NMS on the host.

**What the accelerator runs** (``HEAD_OPS["detection"]``): the two convs, lowered as the
existing ``conv`` kind, so the simulator and the estimator cost the head with no new op kind.
**What the host runs** (not accelerator ops, not in the simulated latency): the sigmoid of the
heatmap, top-k peak picking over classes x cells, box decoding and class-wise NMS
(``hwnas.tasks.detection.modules.decode``).

Compact string: ``det_f64_n1_s8`` (features 64, 1 class, stride 8). This module is free of
torch (like ``hwnas.arch`` and ``hwnas.lowering``); the PyTorch side lives in ``modules``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hwnas.arch import (MAX_CHANNELS, MAX_CLASSES, _fields, check_int,
                        check_total_stride, register_head)
from hwnas.lowering import HEAD_OPS, OpSpec

HEAD_KERNEL = 3  # the head's first conv
BOX_CHANNELS = 4  # l, t, r, b


@register_head
@dataclass(frozen=True, slots=True)
class DetectionHead:
    task: ClassVar[str] = "detection"
    code: ClassVar[str] = "det"
    searched_width: ClassVar[bool] = True  # a space searches the first conv's width
    features: int = 64  # the KxK conv's width
    classes: int = 1  # heatmap channels (1: presence)
    stride: int = 8  # the backbone's total stride the head expects

    @classmethod
    def for_space(cls, features: int, classes: int, stride: int) -> "DetectionHead":
        """The head of a search space whose stem and stages downsample by ``stride``."""
        return cls(features, classes, stride)

    @classmethod
    def from_json(cls, data: dict, where: str) -> "DetectionHead":
        _fields(data, where, ("task", "classes"), ("features", "stride"))
        return cls(features=check_int(data.get("features", 64), f"{where}.features", 1,
                                      MAX_CHANNELS),
                   classes=check_int(data["classes"], f"{where}.classes", 1, MAX_CLASSES),
                   stride=check_total_stride(data.get("stride", 8), f"{where}.stride"))

    def validate(self) -> None:
        check_int(self.features, "head.features", 1, MAX_CHANNELS)
        check_int(self.classes, "head.classes", 1, MAX_CLASSES)
        check_total_stride(self.stride, "head.stride")

    @property
    def out_channels(self) -> int:
        return self.classes + BOX_CHANNELS

    def to_json(self) -> dict:
        return {"task": self.task, "features": self.features, "classes": self.classes,
                "stride": self.stride}

    def encode(self) -> str:
        return f"{self.code}_f{self.features}_n{self.classes}_s{self.stride}"

    @classmethod
    def decode(cls, fields: dict[str, str]) -> "DetectionHead":
        return cls(features=int(fields["f"]), classes=int(fields["n"]), stride=int(fields["s"]))


def detection_ops(head: DetectionHead, in_c: int) -> tuple[OpSpec, ...]:
    """The accelerator's part of the head: two convs on the feature map (post-processing
    runs on the host and is not an op here)."""
    return (OpSpec("conv", "conv", head.features, HEAD_KERNEL),
            OpSpec("pred", "conv", head.out_channels))


HEAD_OPS[DetectionHead.task] = detection_ops
