"""The detection head's PyTorch side: module, elastic supernet head, dense targets, loss, decode.

Loss and decode use ``torchvision.ops`` only (no hand-written IoU or NMS):

- **Labels** (``pack_targets``): a split's ``y`` is each image's boxes as one tensor
  ``[N, M, 5]`` (label, x1, y1, x2, y2; label -1 pads to the split's most boxes), so the
  ``Loader`` batches, shuffles and joins splits as it does a classifier's labels (no
  translation augmentation: it would move the pixels and not the boxes).
- **Targets** (``encode_targets``, inside the loss): one dense tensor per image,
  ``[classes + 4, H, W]`` at the head's stride: channels ``:classes`` the 0/1 heatmap, the
  last 4 the assigned box (xyxy, pixels; 0 where no object is assigned).
  Assignment (FCOS with centre sampling): a cell is positive for a box when its centre lies
  inside the box and within ``CENTER_RADIUS`` strides of the box's centre; the cell holding the
  box's centre always is (small boxes keep one positive); a cell claimed by several boxes goes
  to the smallest.
- **Loss** (``detection_loss``): ``torchvision.ops.sigmoid_focal_loss`` over every cell and
  class (alpha 0.25, gamma 2) + ``torchvision.ops.generalized_box_iou_loss`` on the positive
  cells, both summed and divided by the number of positives (FCOS's normalization).
- **Score** (``Detection.score``): mAP@0.5 of the decoded boxes against the packed ones.
- **Decode** (``decode``, the host's post-processing): sigmoid, top-k over classes x cells,
  l/t/r/b -> xyxy at each cell's centre, score threshold, ``torchvision.ops.batched_nms`` per
  class, at most ``max_detections`` per image.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, box_area, generalized_box_iou_loss, sigmoid_focal_loss

from hwnas.data import Splits, TensorData
from hwnas.model import ConvBNAct
from hwnas.supernet import DynamicConvBN
from hwnas.tasks.detection import coco, metrics
from hwnas.tasks.detection.coco import DatasetError, DetectionData
from hwnas.tasks.detection.head import HEAD_KERNEL, DetectionHead

CENTER_RADIUS = 1.5  # strides; FCOS's centre sampling
PRIOR = 0.01  # initial heatmap probability (RetinaNet's bias init: focal loss starts stable)
BOX_INIT = 2.0  # initial l/t/r/b, in strides


def _init_pred(pred: nn.Conv2d, classes: int) -> None:
    nn.init.normal_(pred.weight, std=0.01)
    with torch.no_grad():
        pred.bias[:classes] = -math.log((1 - PRIOR) / PRIOR)
        pred.bias[classes:] = math.log(math.expm1(BOX_INIT))  # softplus^-1


class DetectionHeadModule(nn.Module):
    """KxK conv + BN + ReLU -> 1x1 conv to ``classes`` heatmap logits + 4 raw box values.
    Output: ``[N, classes + 4, H, W]`` (decode it with ``decode``)."""

    def __init__(self, cin: int, head: DetectionHead):
        super().__init__()
        self.conv = ConvBNAct(cin, head.features, HEAD_KERNEL)
        self.pred = nn.Conv2d(head.features, head.out_channels, 1)
        _init_pred(self.pred, head.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pred(self.conv(x))


class DynamicDetectionHead(nn.Module):
    """The supernet's elastic head, built at the widest ``head``: the first conv takes any
    number of input channels and gives ``head.features`` of its own (the first ones, sliced
    as ``DynamicConvBN`` does), which the prediction conv reads; same interface."""

    def __init__(self, cin: int, head: DetectionHead):
        super().__init__()
        self.conv = DynamicConvBN(cin, head.features, HEAD_KERNEL)
        self.pred = nn.Conv2d(head.features, head.out_channels, 1)
        _init_pred(self.pred, head.classes)

    def forward(self, x: torch.Tensor, head: DetectionHead) -> torch.Tensor:
        h = self.conv(x, head.features, HEAD_KERNEL)
        return F.conv2d(h, self.pred.weight[:, :head.features], self.pred.bias)

    @torch.no_grad()
    def export_to(self, target: nn.Module, cin: int, head: DetectionHead) -> None:
        self.conv.export_to(target.conv, cin, head.features, HEAD_KERNEL)
        target.pred.weight.copy_(self.pred.weight[:, :head.features])
        target.pred.bias.copy_(self.pred.bias)


# ---- geometry -----------------------------------------------------------------------------


def feature_size(resolution: int, stride: int) -> int:
    return -(-resolution // stride)  # "same" padding: ceil


def cell_centers(size: int, stride: int, device=None) -> torch.Tensor:
    """``[size * size, 2]`` (x, y) pixel centres of the cells, row-major."""
    c = (torch.arange(size, dtype=torch.float32, device=device) + 0.5) * stride
    ys, xs = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)


def box_distances(raw: torch.Tensor, stride: int) -> torch.Tensor:
    """Raw box channels -> l, t, r, b in pixels (positive)."""
    return F.softplus(raw) * stride


def boxes_from_distances(centers: torch.Tensor, ltrb: torch.Tensor) -> torch.Tensor:
    """``centers`` [..., 2] and ``ltrb`` [..., 4] -> xyxy [..., 4]."""
    return torch.cat([centers - ltrb[..., :2], centers + ltrb[..., 2:]], -1)


# ---- dense targets --------------------------------------------------------------------------


def encode_image(boxes: torch.Tensor, labels: torch.Tensor, head: DetectionHead,
                 resolution: int) -> torch.Tensor:
    """One image's dense target ``[classes + 4, H, W]`` (see the module's docstring)."""
    size = feature_size(resolution, head.stride)
    out = torch.zeros(head.out_channels, size * size)
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
    if not len(boxes):
        return out.reshape(-1, size, size)
    centers = cell_centers(size, head.stride)  # P, 2
    x, y = centers[:, 0:1], centers[:, 1:2]  # P, 1
    bc = (boxes[:, :2] + boxes[:, 2:]) / 2  # K, 2
    inside = (x > boxes[:, 0]) & (x < boxes[:, 2]) & (y > boxes[:, 1]) & (y < boxes[:, 3])
    radius = CENTER_RADIUS * head.stride
    near = ((x - bc[:, 0]).abs() < radius) & ((y - bc[:, 1]).abs() < radius)
    positive = inside & near  # P, K
    own = (bc / head.stride).floor().long().clamp(0, size - 1)  # the cell holding the centre
    positive[own[:, 1] * size + own[:, 0], torch.arange(len(boxes))] = True
    area = box_area(boxes).expand_as(positive).masked_fill(~positive, float("inf"))
    best_area, best = area.min(1)  # the smallest box claiming each cell
    cells = torch.isfinite(best_area).nonzero().squeeze(1)
    out[labels[best[cells]], cells] = 1.0
    out[head.classes:, cells] = boxes[best[cells]].T
    return out.reshape(-1, size, size)


def encode_targets(targets: list[dict[str, torch.Tensor]], head: DetectionHead,
                   resolution: int) -> torch.Tensor:
    """``DetectionData.targets`` -> ``[N, classes + 4, H, W]`` float32 (the ``y`` of a split)."""
    size = feature_size(resolution, head.stride)
    if not targets:
        return torch.zeros(0, head.out_channels, size, size)
    return torch.stack([encode_image(t["boxes"], t["labels"], head, resolution) for t in targets])


def pack_targets(targets: list[dict[str, torch.Tensor]], max_boxes: int) -> torch.Tensor:
    """Per-image boxes as one tensor ``[N, max_boxes, 5]`` (label, x1, y1, x2, y2; label -1
    pads), so a split's labels batch, shuffle and concatenate like a classifier's."""
    out = torch.zeros(len(targets), max_boxes, 5)
    out[..., 0] = -1
    for i, t in enumerate(targets):
        k = len(t["labels"])
        out[i, :k, 0] = t["labels"].float()
        out[i, :k, 1:] = t["boxes"].reshape(-1, 4)
    return out


def unpack_targets(y: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """``pack_targets``'s inverse."""
    out = []
    for rows in y:
        rows = rows[rows[:, 0] >= 0]
        out.append({"boxes": rows[:, 1:], "labels": rows[:, 0].long()})
    return out


def tensor_data(data: DetectionData, mean: float, std: float, max_boxes: int) -> TensorData:
    """A split as the ``Loader``'s (x, y): images as normalized float32, packed boxes."""
    x = (data.images.float() / 255 - mean) / std
    return TensorData(x, pack_targets(data.targets, max_boxes))


# ---- loss -----------------------------------------------------------------------------------


def _flat(t: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, H*W, C]."""
    return t.flatten(2).transpose(1, 2)


def detection_loss(out: torch.Tensor, y: torch.Tensor, head: DetectionHead,
                   box_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Focal heatmap loss + GIoU box loss on positives, per positive; and its two parts."""
    c = head.classes
    logits, raw = _flat(out[:, :c]).float(), _flat(out[:, c:]).float()
    heat, target_boxes = _flat(y[:, :c]), _flat(y[:, c:])
    positive = heat.amax(-1) > 0  # N, P
    num_pos = max(1.0, float(positive.sum()))
    cls_loss = sigmoid_focal_loss(logits, heat, alpha=0.25, gamma=2.0, reduction="sum") / num_pos
    if positive.any():
        centers = cell_centers(out.shape[-1], head.stride, out.device).expand(len(out), -1, -1)
        pred = boxes_from_distances(centers[positive], box_distances(raw[positive], head.stride))
        box_loss = generalized_box_iou_loss(pred, target_boxes[positive], reduction="sum") / num_pos
    else:
        box_loss = raw.sum() * 0.0
    loss = cls_loss + box_weight * box_loss
    return loss, {"cls": float(cls_loss.detach()), "box": float(box_loss.detach())}


# ---- decode (host post-processing) -----------------------------------------------------------


@torch.no_grad()
def decode(out: torch.Tensor, head: DetectionHead, top_k: int = 100, score_threshold: float = 0.05,
           iou_threshold: float = 0.5, max_detections: int = 100) -> list[dict[str, torch.Tensor]]:
    """Head outputs ``[N, classes + 4, H, W]`` -> per image ``{"boxes" xyxy, "scores",
    "labels"}``: the host's work (sigmoid, top-k, box decode, class-wise NMS)."""
    c = head.classes
    scores = _flat(out[:, :c]).float().sigmoid().flatten(1)  # N, P*C (cell-major)
    ltrb = box_distances(_flat(out[:, c:]).float(), head.stride)  # N, P, 4
    centers = cell_centers(out.shape[-1], head.stride, out.device)
    boxes = boxes_from_distances(centers, ltrb)  # N, P, 4
    k = min(top_k, scores.shape[1])
    top, idx = scores.topk(k, 1)
    results = []
    for i in range(len(out)):
        keep = top[i] >= score_threshold
        s, flat = top[i][keep], idx[i][keep]
        b, lab = boxes[i][flat // c], flat % c
        chosen = batched_nms(b, s, lab, iou_threshold)[:max_detections]
        results.append({"boxes": b[chosen], "scores": s[chosen], "labels": lab[chosen]})
    return results


# ---- the task's hooks (``hwnas.tasks.TorchTask``) ---------------------------------------------


def load_splits(root: Path, resolution: int, channels: int = 1) -> Splits:
    """A COCO root with ``train/``, ``val/`` and ``test/`` folders (each ``instances.json`` +
    ``images/``, as ``hwnas scenes`` writes them), every split checked before any training."""
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder (a COCO root with train/, val/ and test/ "
                           f"folders; hwnas scenes writes one)")
    parts = {s: coco.load_split(root / s, resolution, channels) for s in ("train", "val", "test")}
    for name, part in parts.items():
        if part.categories != parts["train"].categories:
            raise DatasetError(f"{root / name / 'instances.json'}: categories "
                               f"{part.categories} differ from the train split's "
                               f"{parts['train'].categories}")
    images = parts["train"].images.float() / 255
    mean, std = float(images.mean()), float(images.std()) or 1.0
    most = max(1, *(len(t["labels"]) for p in parts.values() for t in p.targets))
    data = {s: tensor_data(p, mean, std, most) for s, p in parts.items()}
    return Splits(name=str(root), **data, classes=len(parts["train"].categories),
                  channels=channels, resolution=resolution, mean=mean, std=std)


@torch.no_grad()
def predict(model, loader, head: DetectionHead) -> tuple[list[dict], list[dict]]:
    """Decoded predictions (host post-processing included) and the targets, in loader order."""
    preds, targets = [], []
    for x, y in loader:
        preds += decode(model(x), head)
        targets += unpack_targets(y)
    return preds, targets


class Detection:
    head_module = DetectionHeadModule
    dynamic_head = DynamicDetectionHead
    # not data_parallel: the losses divide by the batch's positives (and the teacher's
    # confidence), so a shard's gradients do not average to the global batch's; torchrun
    # training refuses it (``hwnas.training.train_supernet``)
    data_parallel = False

    def load(self, data: dict, seed: int) -> Splits:
        return load_splits(Path(data["dataset"]), data["resolution"], data.get("channels", 1))

    def loss(self, out, y, head, cfg) -> torch.Tensor:
        dense = encode_targets(unpack_targets(y.cpu()), head, out.shape[-1] * head.stride)
        return detection_loss(out, dense.to(out.device), head)[0]

    def soft_targets(self, out, head) -> torch.Tensor:
        return out.detach()

    def distill(self, out, soft, head) -> torch.Tensor:
        """The teacher's heatmap probabilities as soft labels (binary cross-entropy) and its
        box distances where it sees an object (L1 in strides, weighted by its confidence)."""
        c = head.classes
        prob = soft[:, :c].sigmoid()
        weight = prob.amax(1, keepdim=True)
        norm = weight.sum().clamp_min(1.0)
        cls = F.binary_cross_entropy_with_logits(out[:, :c], prob, reduction="sum") / norm
        box = (weight * (F.softplus(out[:, c:]) - F.softplus(soft[:, c:])).abs()).sum() / norm
        return cls + box

    def score(self, model, loader, head) -> float:
        """mAP@0.5 in percent (COCO's evaluation through torchmetrics)."""
        return 100.0 * metrics.mean_average_precision(*predict(model, loader, head))["map_50"]

    @torch.no_grad()
    def examples(self, nets: dict[str, nn.Module], data, path, count: int = 6,
                 shown_score: float = 0.3) -> dict:
        """Test scenes with each network's boxes (red, score >= ``shown_score``) over the
        true ones (green), one row per network; and the host's post-processing time."""
        import time

        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle

        x, truth = data.x[:count], unpack_targets(data.y[:count])
        fig, axes = plt.subplots(len(nets), count, figsize=(2 * count, 2.2 * len(nets)),
                                 squeeze=False)
        host = {}
        for row, (name, net) in zip(axes, nets.items()):
            head = net.arch.head
            out = net.eval()(data.x)
            start = time.perf_counter()
            preds = decode(out, head)
            host[name] = 1000 * (time.perf_counter() - start) / len(out)
            for ax, image, pred, t in zip(row, x, preds, truth):
                ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray")
                for box in t["boxes"].tolist():
                    ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1],
                                           fill=False, color="lime", lw=1.2, ls="--"))
                for box, score in zip(pred["boxes"].tolist(), pred["scores"].tolist()):
                    if score >= shown_score:
                        ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1],
                                               fill=False, color="red", lw=1.2))
                        ax.text(box[0], box[1] - 1, f"{score:.2f}", color="red", fontsize=6)
                ax.set_xticks([]), ax.set_yticks([])
            row[0].set_ylabel(name, fontsize=9)
        fig.suptitle(f"test scenes: true boxes (green, dashed), predicted (red, score >= "
                     f"{shown_score})", fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return {"host_postprocess_ms": {k: round(v, 3) for k, v in host.items()}}


TASK = Detection()
