"""Single-shot weight-sharing supernet over a ``SearchSpace``.

Every block position owns the largest weights its choices need (one set per block
type) and slices them: output/input channels take the first N, a smaller kernel is
the center crop of the largest, depth is the first blocks of each stage. The
architecture is an argument of ``forward(x, arch)``; nothing is set beforehand.

    supernet = SuperNet(space)
    logits = supernet(x, arch)                  # any arch the space can sample
    net = extract_subnet(supernet, arch)        # a standalone ``build_model(arch)``
    recalibrate_bn(net, loader)                 # BN statistics for that subnet alone

BatchNorm: each dynamic conv owns one BN of its largest width; a subnet uses the
first channels of its affine parameters and running statistics. Running statistics
collected while training many subnets are a mixture, so an extracted subnet needs
``recalibrate_bn`` before its score means anything. In eval mode the supernet
and the extracted subnet compute the same function (same weights, same statistics).
"""
from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable, Iterable
from itertools import product
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hwnas import distributed, tasks
from hwnas.arch import ArchSpec, BlockSpec
from hwnas.errors import UserError, one_line
from hwnas.model import ConvBNAct, Network, build_model, fit_input
from hwnas.space import STEM_KERNEL, SearchSpace


class SupernetError(UserError):
    """An architecture the supernet cannot run; the message names the block and field."""


# ---- dynamic ops -------------------------------------------------------------------------


class DynamicConvBN(nn.Module):
    """Conv (no bias) -> BN -> ReLU|identity owning the largest weight; ``forward``
    slices the first ``cout`` (and input) channels and center-crops the kernel.

    ``small_kernels``: the smaller kernel sizes the layer serves. Each gets a learned
    k^2 x k^2 kernel transformation (Once-for-All), identity at initialization, applied
    in a chain (7 -> 5 -> 3): a small kernel is a transformed center crop, not the raw
    center of the large one, so both sizes can be good with shared weights."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, depthwise: bool = False,
                 act: bool = True, small_kernels: tuple[int, ...] = ()):
        super().__init__()
        self.depthwise, self.act = depthwise, act
        # nn.Conv2d for the same initialization as the static model's convs
        self.conv = nn.Conv2d(cin, cout, kernel, groups=cin if depthwise else 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.small_kernels = tuple(sorted({k for k in small_kernels if k < kernel}, reverse=True))
        self.ktrans = nn.ParameterDict({str(k): nn.Parameter(torch.eye(k * k))
                                        for k in self.small_kernels})

    def weight(self, cin: int, cout: int, kernel: int) -> torch.Tensor:
        w = self.conv.weight[:cout, :1 if self.depthwise else cin]
        for k in self.small_kernels:  # largest first: 7 -> 5 -> 3
            if k < kernel:
                break
            o = (w.shape[-1] - k) // 2
            crop = w[..., o:o + k, o:o + k]
            w = (crop.reshape(-1, k * k) @ self.ktrans[str(k)]).reshape(crop.shape)
        o = (w.shape[-1] - kernel) // 2
        return w[..., o:o + kernel, o:o + kernel]

    def forward(self, x: torch.Tensor, cout: int, kernel: int = 1, stride: int = 1) -> torch.Tensor:
        cin = x.shape[1]
        # a sliced weight in channels-last layout, like the input: 2x faster (measured)
        w = self.weight(cin, cout, kernel).contiguous(memory_format=torch.channels_last)
        y = F.conv2d(x, w, None, stride, kernel // 2, 1, cin if self.depthwise else 1)
        bn = self.bn
        factor = 0.0
        if self.training:
            bn.num_batches_tracked.add_(1)
            factor = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        if self.training and distributed.active():  # torchrun: the global batch's statistics
            y = distributed.batch_norm(y, bn.running_mean[:cout], bn.running_var[:cout],
                                       bn.weight[:cout], bn.bias[:cout], factor, bn.eps)
        else:
            y = F.batch_norm(y, bn.running_mean[:cout], bn.running_var[:cout], bn.weight[:cout],
                             bn.bias[:cout], self.training, factor, bn.eps)
        return F.relu(y) if self.act else y

    @torch.no_grad()
    def export_to(self, target: ConvBNAct, cin: int, cout: int, kernel: int) -> None:
        conv, bn = target[0], target[1]
        conv.weight.copy_(self.weight(cin, cout, kernel))
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(bn, name).copy_(getattr(self.bn, name)[:cout])
        bn.num_batches_tracked.copy_(self.bn.num_batches_tracked)


class DynamicIBN(nn.Module):
    def __init__(self, cin: int, out: int, mid: int, kernel: int,
                 small_kernels: tuple[int, ...] = ()):
        super().__init__()
        self.expand = DynamicConvBN(cin, mid)
        self.dw = DynamicConvBN(mid, mid, kernel, depthwise=True, small_kernels=small_kernels)
        self.project = DynamicConvBN(mid, out, act=False)

    def forward(self, x: torch.Tensor, b: BlockSpec) -> torch.Tensor:
        cin = x.shape[1]
        mid = b.mid(cin)
        h = self.expand(x, mid) if b.expand != 1 else x
        y = self.project(self.dw(h, mid, b.kernel, b.stride), b.out)
        return x + y if b.residual(cin) else y

    def export_to(self, target: nn.Module, cin: int, b: BlockSpec) -> None:
        mid = b.mid(cin)
        if b.expand != 1:
            self.expand.export_to(target.expand, cin, mid, 1)
        self.dw.export_to(target.dw, mid, mid, b.kernel)
        self.project.export_to(target.project, mid, b.out, 1)


class DynamicFusedIBN(nn.Module):
    def __init__(self, cin: int, out: int, mid: int, kernel: int,
                 small_kernels: tuple[int, ...] = ()):
        super().__init__()
        self.fused = DynamicConvBN(cin, mid, kernel, small_kernels=small_kernels)
        self.project = DynamicConvBN(mid, out, act=False)

    def forward(self, x: torch.Tensor, b: BlockSpec) -> torch.Tensor:
        cin = x.shape[1]
        y = self.project(self.fused(x, b.mid(cin), b.kernel, b.stride), b.out)
        return x + y if b.residual(cin) else y

    def export_to(self, target: nn.Module, cin: int, b: BlockSpec) -> None:
        mid = b.mid(cin)
        self.fused.export_to(target.fused, cin, mid, b.kernel)
        self.project.export_to(target.project, mid, b.out, 1)


class DynamicConvBlock(nn.Module):
    def __init__(self, cin: int, out: int, mid: int, kernel: int,
                 small_kernels: tuple[int, ...] = ()):
        super().__init__()
        self.conv = DynamicConvBN(cin, out, kernel, small_kernels=small_kernels)

    def forward(self, x: torch.Tensor, b: BlockSpec) -> torch.Tensor:
        return self.conv(x, b.out, b.kernel, b.stride)

    def export_to(self, target: nn.Module, cin: int, b: BlockSpec) -> None:
        self.conv.export_to(target.conv, cin, b.out, b.kernel)


DYNAMIC_BLOCKS: dict[str, type[nn.Module]] = {
    "ibn": DynamicIBN, "fused_ibn": DynamicFusedIBN, "conv": DynamicConvBlock}


# ---- the supernet ------------------------------------------------------------------------


class SuperNet(nn.Module):
    """Weight-sharing supernet: ``stages[s][j][type]`` is block ``j`` of stage ``s``.
    ``kernel_transform``: smaller kernels are transformed center crops (Once-for-All)
    rather than raw ones; see ``DynamicConvBN``."""

    def __init__(self, space: SearchSpace, kernel_transform: bool = True):
        super().__init__()
        self.space, self.kernel_transform = space, kernel_transform
        self.max_depths = space.max_depths()
        self.stem_max = max(space.stem_channels)
        self.stem = DynamicConvBN(space.input.channels, self.stem_max, STEM_KERNEL)
        stages, cin = [], self.stem_max
        self.mid_max: list[list[int]] = []
        for stage, depth in zip(space.stages, self.max_depths):
            out, kernel = max(stage.channels), max(stage.kernels)
            blocks, mids = [], []
            for j in range(depth):
                c = cin if j == 0 else out
                mid = max(1, round(c * max(stage.expands)))
                mids.append(mid)
                small = tuple(stage.kernels) if kernel_transform else ()
                blocks.append(nn.ModuleDict({t: DYNAMIC_BLOCKS[t](c, out, mid, kernel, small)
                                             for t in stage.types}))
            stages.append(nn.ModuleList(blocks))
            self.mid_max.append(mids)
            cin = out
        self.stages = nn.ModuleList(stages)
        widest = space.head_of(max(space.head_widths)) if space.head_widths else space.head
        self.head = tasks.torch_task(space.head.task).dynamic_head(cin, widest)
        # Blocks after a stage's first are residual; their last BN starts at zero so each
        # starts as the identity (BigNAS): a shallower subnet then computes nearly what the
        # deeper one does. Measured: +1.3 to +2.6 points inherited on the middle subnets.
        for stage in self.stages:
            for blocks in list(stage)[1:]:
                for block in blocks.values():
                    if hasattr(block, "project"):
                        nn.init.zeros_(block.project.bn.weight)
        # Training aid for stage distillation (``train.stage_regressor``), used by no subnet:
        # per stage, a learned map (identity at init) from a student's stage output to the
        # largest's, so a student's features need only predict the teacher's linearly
        # (FitNets' hint regressor) rather than equal its first channels.
        self.stage_maps = nn.ParameterList([nn.Parameter(torch.eye(max(s.channels)))
                                            for s in space.stages])
        self._plans: dict[ArchSpec, tuple[tuple[int, int], ...]] = {}

    # -- which supernet position runs each block of ``arch`` --
    def plan(self, arch: ArchSpec) -> tuple[tuple[int, int], ...]:
        """(stage, index) of each block of ``arch``; SupernetError if it does not fit."""
        if arch not in self._plans:  # ArchSpec equality ignores the name
            self._plans[arch] = self._plan(arch)
        return self._plans[arch]

    def _plan(self, arch: ArchSpec) -> tuple[tuple[int, int], ...]:
        sp = self.space
        if arch.input.channels != sp.input.channels:
            raise SupernetError(f"input.channels: {arch.input.channels} != the supernet's "
                                f"{sp.input.channels}")
        if not sp.holds_head(arch.head):
            raise SupernetError(f"head: {arch.head.encode()} is not among the supernet's "
                                f"({sp.head.encode()}, widths {sp.head_widths or 'fixed'}, "
                                f"output strides {sp.out_strides or 'fixed'})")
        if not sp.holds_input(arch.input):
            raise SupernetError(f"input: {arch.input.height}x{arch.input.width} is not among the "
                                f"supernet's resolutions ({sp.resolutions or sp.input.height})")
        if arch.stem.out > self.stem_max:
            raise SupernetError(f"stem.out: {arch.stem.out} exceeds the supernet's {self.stem_max}")
        if arch.stem.kernel > STEM_KERNEL:
            raise SupernetError(f"stem.kernel: {arch.stem.kernel} exceeds {STEM_KERNEL}")
        problem = f"blocks: {len(arch.blocks)} blocks match no depth combination of the space"
        # the space's own depth vectors first, then any per-stage depths the supernet
        # holds (an uncurated space picks each stage's depth on its own)
        free = product(*(range(1, d + 1) for d in self.max_depths))
        for depths in dict.fromkeys([*sp.depth_vectors(), *free]):
            if sum(depths) != len(arch.blocks):
                continue
            try:
                return self._fit(arch, depths)
            except SupernetError as err:
                problem = str(err)
        raise SupernetError(problem)

    def _fit(self, arch: ArchSpec, depths: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
        plan, i = [], 0
        chans = arch.channels()
        for s, (stage, depth) in enumerate(zip(self.space.stages, depths)):
            for j in range(depth):
                b, where = arch.blocks[i], f"blocks[{i}]"
                stride = stage.block_stride(j)
                if b.type not in stage.types:
                    raise SupernetError(f"{where}.type: {b.type!r} is not a choice of stage {s} "
                                        f"({', '.join(stage.types)})")
                if b.stride != stride:
                    raise SupernetError(f"{where}.stride: stage {s} block {j} has stride {stride}")
                if b.kernel > max(stage.kernels):
                    raise SupernetError(f"{where}.kernel: {b.kernel} exceeds stage {s}'s largest "
                                        f"kernel {max(stage.kernels)}")
                if b.out > max(stage.channels):
                    raise SupernetError(f"{where}.out: {b.out} exceeds stage {s}'s widest "
                                        f"{max(stage.channels)}")
                if b.type != "conv" and b.mid(chans[i]) > self.mid_max[s][j]:
                    raise SupernetError(f"{where}.expand: {b.expand:g} gives {b.mid(chans[i])} "
                                        f"channels, more than the {self.mid_max[s][j]} held")
                plan.append((s, j))
                i += 1
        return tuple(plan)

    def forward(self, x: torch.Tensor, arch: ArchSpec) -> torch.Tensor:
        return self.forward_stages(x, arch)[0]

    def forward_stages(self, x: torch.Tensor, arch: ArchSpec
                       ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and every stage's output (for stage-output distillation)."""
        plan = self.plan(arch)
        x = to_channels_last(fit_input(x, arch.input))
        x = self.stem(x, arch.stem.out, arch.stem.kernel, arch.stem.stride)
        outputs = []
        for i, ((s, j), b) in enumerate(zip(plan, arch.blocks)):
            x = self.stages[s][j][b.type](x, b)
            if i + 1 == len(plan) or plan[i + 1][0] != s:
                outputs.append(x)
        return self.head(x, arch.head), outputs

    def sample(self, rng) -> ArchSpec:
        return self.space.sample(rng)

    def largest(self, block_type: str | None = None) -> ArchSpec:
        return self.space.largest(block_type)

    def smallest(self, block_type: str | None = None) -> ArchSpec:
        return self.space.smallest(block_type)


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """NHWC strides for a 4-D batch (same values): PyTorch's oneDNN convolutions run
    depthwise and 7x7 convs 2-5x faster on CPU in this layout (measured here)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def extract_subnet(supernet: SuperNet, arch: ArchSpec) -> Network:
    """A standalone ``build_model(arch)`` holding the supernet's weights and BN
    statistics for ``arch``; on the supernet's device, in the supernet's mode. Its
    conv weights are channels-last (see ``to_channels_last``): same function, faster."""
    plan = supernet.plan(arch)
    device = next(supernet.parameters()).device
    net = build_model(arch).to(device)
    supernet.stem.export_to(net.stem, arch.input.channels, arch.stem.out, arch.stem.kernel)
    for (s, j), b, cin, target in zip(plan, arch.blocks, arch.channels(), net.blocks):
        supernet.stages[s][j][b.type].export_to(target, cin, b)
    supernet.head.export_to(net.head, arch.last_channels, arch.head)
    return net.to(memory_format=torch.channels_last).train(supernet.training)


# ---- BN recalibration and evaluation ----------------------------------------------------


def _inputs(batch):
    return batch[0] if isinstance(batch, (tuple, list)) else batch


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: Iterable, max_batches: int | None = None,
                   forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> nn.Module:
    """Reset every BatchNorm's running statistics and re-estimate them as the plain
    average over ``loader``'s batches (``(x, y)`` pairs or tensors), in train mode
    without gradients. ``forward`` replaces ``model(x)`` (e.g. ``lambda x:
    supernet(x, arch)``). The model's mode and BN momenta are restored."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta, was_training = [m.momentum for m in bns], model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    run = forward or model
    try:
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            run(_inputs(batch))
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        model.train(was_training)
    return model


@torch.no_grad()
def task_score(model: nn.Module, loader: Iterable, head=None) -> float:
    """The task's score of ``model`` in percent (in eval mode); ``head`` defaults to the
    model's own (``model.arch.head``)."""
    head = head or model.arch.head
    was_training = model.training
    model.eval()
    try:
        return tasks.torch_task(head.task).score(model, loader, head)
    finally:
        model.train(was_training)


def subnet_score(supernet: SuperNet, arch: ArchSpec, calib_loader: Iterable,
                    eval_loader: Iterable, calib_batches: int | None = None) -> float:
    """Score inherited from the supernet: extract, recalibrate BN, evaluate."""
    net = extract_subnet(supernet, arch)
    recalibrate_bn(net, calib_loader, calib_batches)
    return task_score(net, eval_loader)


# ---- persistence: weights + the space, loadable with ``weights_only=True`` -------------


def supernet_state(supernet: SuperNet) -> dict:
    return {"space": supernet.space.to_json(), "state_dict": supernet.state_dict(),
            "kernel_transform": supernet.kernel_transform}


def supernet_from_state(state: dict) -> SuperNet:
    """The supernet ``supernet_state`` describes."""
    net = SuperNet(SearchSpace.from_json(state["space"]), state.get("kernel_transform", False))
    net.load_state_dict(state["state_dict"])
    return net


def load_supernet(path, map_location: str | torch.device = "cpu") -> SuperNet:
    """Rebuild a supernet from a file written by the ``train_supernet`` stage."""
    if not Path(path).is_file():
        raise SupernetError(f"{path}: not found; run the train_supernet stage first")
    try:  # a truncated or foreign file: torch raises any of these, naming no file
        with warnings.catch_warnings():  # and may warn first (an odd pickle protocol)
            warnings.simplefilter("ignore", UserWarning)
            net = supernet_from_state(torch.load(path, map_location=map_location,
                                                 weights_only=True))
    except (OSError, EOFError, RuntimeError, ValueError, KeyError, TypeError, AttributeError,
            pickle.UnpicklingError) as err:
        raise SupernetError(f"{path}: not a readable supernet file ({type(err).__name__}: "
                            f"{one_line(str(err), 120)}); rerun dvc repro train_supernet"
                            ) from None
    return net.to(map_location)
