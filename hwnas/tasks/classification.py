"""Classification's PyTorch side: the classifier head, its elastic version, data, loss, score.

The head's spec (``ClassificationHead``) and ops are built into ``hwnas.arch`` and
``hwnas.lowering``; the datasets into ``hwnas.data``. The score is top-1 accuracy in percent.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.arch import ClassificationHead
from hwnas.data import Splits, load_dataset
from hwnas.model import ConvBNAct
from hwnas.supernet import DynamicConvBN


class ClassifierHead(nn.Module):
    def __init__(self, cin: int, head: ClassificationHead):
        super().__init__()
        self.conv = ConvBNAct(cin, head.features) if head.features else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(head.features or cin, head.classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.conv(x)), 1))


class DynamicClassifierHead(nn.Module):
    def __init__(self, cin: int, head: ClassificationHead):
        super().__init__()
        self.conv = DynamicConvBN(cin, head.features) if head.features else None
        self.fc = nn.Linear(head.features or cin, head.classes)

    def forward(self, x: torch.Tensor, head: ClassificationHead) -> torch.Tensor:
        if self.conv is not None:
            x = self.conv(x, head.features)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return F.linear(x, self.fc.weight[:, :x.shape[1]], self.fc.bias)

    @torch.no_grad()
    def export_to(self, target: nn.Module, cin: int, head: ClassificationHead) -> None:
        if self.conv is not None:
            self.conv.export_to(target.conv, cin, head.features, 1)
        target.fc.weight.copy_(self.fc.weight[:, :target.fc.in_features])
        target.fc.bias.copy_(self.fc.bias)


class Classification:
    head_module = ClassifierHead
    dynamic_head = DynamicClassifierHead
    # per-sample means (cross-entropy, KL): equal shards' gradients average to the global
    # batch's, so torchrun may train it data-parallel (``hwnas.distributed``)
    data_parallel = True

    def load(self, data: dict, seed: int) -> Splits:
        return load_dataset(data["dataset"], data["resolution"], seed, data["val_fraction"],
                            data["test_fraction"])

    def loss(self, out, y, head, cfg) -> torch.Tensor:
        return F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)

    def soft_targets(self, out, head) -> torch.Tensor:
        return F.softmax(out.detach(), 1)

    def distill(self, out, soft, head) -> torch.Tensor:
        """KL(teacher || student), batch mean."""
        return F.kl_div(F.log_softmax(out, 1), soft, reduction="batchmean")

    @torch.no_grad()
    def score(self, model, loader, head) -> float:
        correct, total = 0, 0  # counted on the device, read once
        for x, y in loader:
            correct = correct + (model(x).argmax(1) == y).sum()
            total += len(y)
        return 100.0 * int(correct) / max(1, total)

    @torch.no_grad()
    def examples(self, nets: dict[str, nn.Module], data, path, count: int = 10) -> dict:
        """Test images spread over the split (it is ordered by class) with each network's
        predicted class (red where wrong)."""
        import matplotlib.pyplot as plt

        pick = torch.linspace(0, len(data) - 1, count).long()
        x, y = data.x[pick], data.y[pick]
        fig, axes = plt.subplots(len(nets), count, figsize=(1.1 * count, 1.3 * len(nets)),
                                 squeeze=False)
        for row, (name, net) in zip(axes, nets.items()):
            pred = net.eval()(x).argmax(1)
            for ax, image, p, t in zip(row, x, pred, y):
                ax.imshow(image[0].numpy(), cmap="gray")
                ax.set_title(str(int(p)), color="black" if p == t else "red", fontsize=9)
                ax.set_xticks([]), ax.set_yticks([])
            row[0].set_ylabel(name, fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return {}


TASK = Classification()
