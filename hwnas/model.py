"""Build a PyTorch model from an ArchSpec. ``build_model`` is pure: same arch,
same structure; block types come from a registry and absent parts are
``nn.Identity`` so that ``forward`` has no branches on the architecture."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hwnas import tasks
from hwnas.arch import ArchSpec, BlockSpec, InputSpec


class ConvBNAct(nn.Sequential):
    """Conv (no bias) -> BN -> ReLU; "same" padding so output = ceil(in / stride)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1,
                 groups: int = 1, act: bool = True):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True) if act else nn.Identity())


class IBN(nn.Module):
    """Inverted bottleneck: 1x1 expand -> KxK depthwise -> 1x1 linear project."""

    def __init__(self, cin: int, b: BlockSpec):
        super().__init__()
        mid = b.mid(cin)
        self.expand = ConvBNAct(cin, mid) if b.expand != 1 else nn.Identity()
        self.dw = ConvBNAct(mid, mid, b.kernel, b.stride, groups=mid)
        self.project = ConvBNAct(mid, b.out, act=False)
        self.residual = b.residual(cin)

    def forward(self, x):
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.residual else y


class FusedIBN(nn.Module):
    """Fused inverted bottleneck: KxK dense expand -> 1x1 linear project."""

    def __init__(self, cin: int, b: BlockSpec):
        super().__init__()
        mid = b.mid(cin)
        self.fused = ConvBNAct(cin, mid, b.kernel, b.stride)
        self.project = ConvBNAct(mid, b.out, act=False)
        self.residual = b.residual(cin)

    def forward(self, x):
        y = self.project(self.fused(x))
        return x + y if self.residual else y


class ConvBlock(nn.Module):
    def __init__(self, cin: int, b: BlockSpec):
        super().__init__()
        self.conv = ConvBNAct(cin, b.out, b.kernel, b.stride)

    def forward(self, x):
        return self.conv(x)


BLOCKS: dict[str, type[nn.Module]] = {"ibn": IBN, "fused_ibn": FusedIBN, "conv": ConvBlock}


class Network(nn.Module):
    def __init__(self, arch: ArchSpec):
        super().__init__()
        self.arch = arch
        self.stem = ConvBNAct(arch.input.channels, arch.stem.out, arch.stem.kernel,
                              arch.stem.stride)
        self.blocks = nn.Sequential(*(BLOCKS[b.type](cin, b)
                                      for cin, b in zip(arch.channels(), arch.blocks)))
        self.head = tasks.torch_task(arch.head.task).head_module(arch.last_channels, arch.head)

    def forward(self, x):
        return self.head(self.blocks(self.stem(fit_input(x, self.arch.input))))


def fit_input(x: torch.Tensor, inp: InputSpec) -> torch.Tensor:
    """Images scaled to the network's input, as the host does before the accelerator runs
    (a searched resolution reads the dataset's images at its own size); a no-op when they
    already have it, so exported graphs hold no resize."""
    if tuple(x.shape[-2:]) == (inp.height, inp.width):
        return x
    return F.interpolate(x, size=(inp.height, inp.width), mode="bilinear", align_corners=False,
                         antialias=True)


def build_model(arch: ArchSpec) -> Network:
    return Network(arch)


def fresh_model(arch: ArchSpec, seed: int, device: str | torch.device = "cpu") -> Network:
    """``arch`` initialised from ``seed``, on ``device``, channels-last (the supernet's
    layout). The from-scratch runs of extract, baseline and eval_supernet start here, so
    their numbers agree."""
    torch.manual_seed(seed)
    return build_model(arch).to(device).to(memory_format=torch.channels_last)


def folded_param_count(model: nn.Module) -> int:
    """Parameters once BN is folded into its conv (weights + one bias per channel),
    the count the accelerator stores and ``static_cost`` reports."""
    total = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            total += m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
        elif isinstance(m, nn.BatchNorm2d):
            total += m.num_features
    return total
