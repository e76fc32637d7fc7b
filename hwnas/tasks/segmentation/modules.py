"""The segmentation head's PyTorch side: module, elastic supernet head, loss, mIoU, pictures.

- **Output**: logits ``[N, classes + 1, H / out_stride, W / out_stride]`` at the network's own
  input resolution (``hwnas.model.fit_input`` scales the images to it first).
- **Judged on the labels' pixels** (``to_labels``, the host's post-processing): the logits are
  upsampled bilinearly to the masks' resolution before the loss, the distillation and the
  score, so networks with a smaller input or a coarser output are trained and judged on the
  same pixels as the baseline.
- **Loss**: per-pixel cross-entropy plus the soft Dice loss of the foreground classes over the
  batch (nnU-Net's pairing; pixels labelled ``IGNORE`` are left out, VOC's convention). Digits
  cover a few percent of the pixels: with cross-entropy alone every network first learns to
  say "background" everywhere, and a weight-sharing supernet stayed there for six epochs
  (its subnets' mIoU 48%, background only); Dice weighs the foreground by its overlap, not
  its pixel count. Students distil the largest's per-pixel class probabilities (KL) when
  ``train.distill`` is on.
- **Score**: mIoU in percent over every class, background included (VOC's mean), by
  ``torchmetrics``' ``MulticlassJaccardIndex``; pixel accuracy by ``MulticlassAccuracy``.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from hwnas.data import Splits
from hwnas.model import ConvBNAct
from hwnas.supernet import DynamicConvBN
from hwnas.tasks.segmentation import masks
from hwnas.tasks.segmentation.head import REFINE_KERNEL, SegmentationHead

IGNORE = masks.IGNORE


class Gate(nn.Module):
    """Squeeze-and-excite gating: ``x * sigmoid(fc(mean_hw(x)))`` (the ``gate`` op)."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc(x.mean((2, 3)))).unsqueeze(-1).unsqueeze(-1)


def _upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    if factor == 1:
        return x
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


class SegmentationHeadModule(nn.Module):
    """1x1 conv -> gate -> bilinear x``upsample`` -> KxK refine -> 1x1 logits."""

    def __init__(self, cin: int, head: SegmentationHead):
        super().__init__()
        self.upsample = head.upsample
        self.reduce = ConvBNAct(cin, head.features, 1)
        self.gate = Gate(head.features)
        self.refine = ConvBNAct(head.features, head.features, REFINE_KERNEL)
        self.pred = nn.Conv2d(head.features, head.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gate(self.reduce(x))
        return self.pred(self.refine(_upsample(x, self.upsample)))


class DynamicSegmentationHead(nn.Module):
    """The supernet's elastic head, built at the widest ``head``: every width and output
    stride shares the first channels of the same weights."""

    def __init__(self, cin: int, head: SegmentationHead):
        super().__init__()
        f = head.features
        self.reduce = DynamicConvBN(cin, f, 1)
        self.gate = nn.Linear(f, f)
        self.refine = DynamicConvBN(f, f, REFINE_KERNEL)
        self.pred = nn.Conv2d(f, head.out_channels, 1)

    def forward(self, x: torch.Tensor, head: SegmentationHead) -> torch.Tensor:
        f = head.features
        x = self.reduce(x, f, 1)
        gate = F.linear(x.mean((2, 3)), self.gate.weight[:f, :f], self.gate.bias[:f])
        x = x * torch.sigmoid(gate).unsqueeze(-1).unsqueeze(-1)
        x = self.refine(_upsample(x, head.upsample), f, REFINE_KERNEL)
        return F.conv2d(x, self.pred.weight[:, :f], self.pred.bias)

    @torch.no_grad()
    def export_to(self, target: SegmentationHeadModule, cin: int, head: SegmentationHead) -> None:
        f = head.features
        self.reduce.export_to(target.reduce, cin, f, 1)
        target.gate.fc.weight.copy_(self.gate.weight[:f, :f])
        target.gate.fc.bias.copy_(self.gate.bias[:f])
        self.refine.export_to(target.refine, f, f, REFINE_KERNEL)
        target.pred.weight.copy_(self.pred.weight[:, :f])
        target.pred.bias.copy_(self.pred.bias)


def to_labels(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Logits at the labels' resolution (the host's bilinear upsampling)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def dice_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 - the soft Dice coefficient of the foreground classes (1..), each over the whole
    batch (an image without a digit adds only false positives), averaged over classes."""
    valid = (y != IGNORE).unsqueeze(1)
    prob = torch.softmax(logits, 1)[:, 1:] * valid
    target = F.one_hot(y.where(y != IGNORE, 0), logits.shape[1]).permute(0, 3, 1, 2)[:, 1:]
    target = target * valid
    dims = (0, 2, 3)
    overlap = (prob * target).sum(dims)
    dice = (2 * overlap + 1.0) / (prob.sum(dims) + target.sum(dims) + 1.0)
    return 1.0 - dice.mean()


def predict(model, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Per-pixel classes at ``size`` (the host's upsampling and argmax)."""
    return to_labels(model(x), size).argmax(1)


@torch.no_grad()
def pixel_scores(model, loader, head: SegmentationHead) -> dict[str, float]:
    """mIoU and pixel accuracy in percent over the loader's images."""
    k = head.out_channels
    miou = MulticlassJaccardIndex(k, average="macro", ignore_index=IGNORE)
    acc = MulticlassAccuracy(k, average="micro", ignore_index=IGNORE)
    for x, y in loader:
        pred = predict(model, x, y.shape[-2:]).cpu()
        y = y.cpu()
        miou.update(pred, y)
        acc.update(pred, y)
    return {"miou": 100.0 * float(miou.compute()), "pixel_accuracy": 100.0 * float(acc.compute())}


class Segmentation:
    head_module = SegmentationHeadModule
    dynamic_head = DynamicSegmentationHead
    # not data_parallel: the loss is a mean over the batch's labelled pixels, so shards with
    # different counts of ignored pixels do not average to the global batch's
    data_parallel = False

    def load(self, data: dict, seed: int) -> Splits:
        if not data.get("classes"):
            raise masks.DatasetError("train_supernet.data.classes: required for segmentation "
                                     "(the masks' foreground classes, ids 1..classes)")
        return masks.load(Path(data["dataset"]), data["resolution"], data.get("channels", 1),
                          data["classes"], seed)

    def loss(self, out, y, head, cfg) -> torch.Tensor:
        logits = to_labels(out, y.shape[-2:])
        return F.cross_entropy(logits, y, ignore_index=IGNORE,
                               label_smoothing=cfg.label_smoothing) + dice_loss(logits, y)

    def soft_targets(self, out, head) -> torch.Tensor:
        return F.softmax(out.detach(), 1)

    def distill(self, out, soft, head) -> torch.Tensor:
        """KL(teacher || student) per pixel, at the teacher's resolution, pixel mean."""
        log_p = F.log_softmax(to_labels(out, soft.shape[-2:]), 1)
        return F.kl_div(log_p, soft, reduction="sum") / (soft.numel() / soft.shape[1])

    def score(self, model, loader, head) -> float:
        return pixel_scores(model, loader, head)["miou"]

    @torch.no_grad()
    def examples(self, nets: dict[str, nn.Module], data, path, count: int = 6) -> dict:
        """Test scenes with the true masks (first row) and each network's (one row each);
        and each network's pixel accuracy on the whole split."""
        import matplotlib.pyplot as plt
        import numpy as np

        from hwnas.data import Loader

        x, y = data.x[:count], data.y[:count]
        k = 1 + int(max(int(y[y != IGNORE].max()) if (y != IGNORE).any() else 0,
                        *(n.arch.head.classes for n in nets.values())))
        colours = plt.get_cmap("tab10", max(k, 2))

        def overlay(ax, image, mask):
            ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray")
            m = mask.numpy()
            rgba = colours(np.where(m > 0, m - 1, 0) % 10)
            rgba[..., 3] = np.where((m > 0) & (m != IGNORE), 0.55, 0.0)
            ax.imshow(rgba)
            ax.set_xticks([]), ax.set_yticks([])

        fig, axes = plt.subplots(len(nets) + 1, count, figsize=(1.9 * count, 2.0 * (len(nets) + 1)),
                                 squeeze=False)
        for ax, image, mask in zip(axes[0], x, y):
            overlay(ax, image, mask)
        axes[0][0].set_ylabel("truth", fontsize=9)
        accuracy = {}
        for row, (name, net) in zip(axes[1:], nets.items()):
            net.eval()
            pred = predict(net, x, y.shape[-2:])
            for ax, image, mask in zip(row, x, pred):
                overlay(ax, image, mask)
            a = net.arch
            row[0].set_ylabel(f"{name}\n{a.input.height} px, /{a.head.out_stride}", fontsize=8)
            accuracy[name] = round(pixel_scores(net, Loader(data, 64), a.head)["pixel_accuracy"], 3)
        fig.suptitle("test scenes: masks (colour) over the input", fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return {"pixel_accuracy": accuracy}


TASK = Segmentation()
