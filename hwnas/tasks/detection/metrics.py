"""Detection metrics: COCO mAP and presence accuracy.

mAP is COCO's own evaluation (``faster_coco_eval.COCOeval_faster``, the C++ port of
pycocotools that ``torchmetrics.detection.MeanAveragePrecision`` runs as its
``faster_coco_eval`` backend), fed the same way torchmetrics feeds it: boxes xyxy in pixels,
area = box area, 100 detections per image, classes = the labels seen in targets and
predictions (a class with no ground truth is left out of the mean). ``map`` is
mAP@[.5:.95], ``map_50`` mAP@0.5; with no ground-truth box at all both are -1 (COCO's
"undefined"). torchmetrics itself is not used: it refuses to run without torchvision, and no
torchvision wheel built for the CPU torch 2.13.0 can be installed here.

Presence: an image is "present" when any predicted box scores at least ``score_threshold``,
and truly present when it has any ground-truth box; presence accuracy is the share of
images where the two agree.

Predictions are per image ``{"boxes": [N,4] xyxy, "scores": [N], "labels": [N]}``, targets
``{"boxes": [K,4] xyxy, "labels": [K]}`` (as ``hwnas.tasks.detection.coco`` loads them).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

Target = dict[str, torch.Tensor]


def _rows(d: Target, keys: tuple[str, ...], what: str, i: int) -> dict[str, np.ndarray]:
    missing = [k for k in keys if k not in d]
    if missing:
        raise ValueError(f"{what}[{i}] has no {missing[0]!r} (needs {', '.join(keys)})")
    out = {k: torch.as_tensor(d[k]).detach().cpu().numpy() for k in keys}
    n = len(out["boxes"].reshape(-1, 4))
    out["boxes"] = out["boxes"].reshape(-1, 4).astype(np.float64)
    for k in keys[1:]:
        out[k] = out[k].reshape(-1)
        if len(out[k]) != n:
            raise ValueError(f"{what}[{i}]: {n} boxes but {len(out[k])} {k}")
    return out


def _xywh(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def mean_average_precision(preds: Sequence[Target], targets: Sequence[Target]) -> dict[str, float]:
    """``{"map": mAP@[.5:.95], "map_50": mAP@0.5}`` over all images (COCO's evaluation)."""
    from faster_coco_eval import COCO, COCOeval_faster

    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
    images, annotations, detections, classes = [], [], [], set()
    for i, (p, t) in enumerate(zip(preds, targets)):
        t = _rows(t, ("boxes", "labels"), "targets", i)
        p = _rows(p, ("boxes", "scores", "labels"), "preds", i)
        images.append({"id": i + 1})
        for box, label in zip(_xywh(t["boxes"]).tolist(), t["labels"].tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": int(label) + 1, "bbox": box,
                                "area": box[2] * box[3], "iscrowd": 0})
            classes.add(int(label))
        for box, score, label in zip(_xywh(p["boxes"]).tolist(), p["scores"].tolist(),
                                     p["labels"].tolist()):
            detections.append({"image_id": i + 1, "category_id": int(label) + 1, "bbox": box,
                               "score": float(score), "area": box[2] * box[3]})
            classes.add(int(label))
    if not annotations:
        return {"map": -1.0, "map_50": -1.0}
    quiet = lambda *args, **kwargs: None  # noqa: E731
    gt = COCO({"images": images, "annotations": annotations,
               "categories": [{"id": c + 1, "name": str(c)} for c in sorted(classes)]},
              print_function=quiet)
    evaluation = COCOeval_faster(gt, gt.loadRes(detections), "bbox", print_function=quiet)
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return {"map": float(evaluation.stats[0]), "map_50": float(evaluation.stats[1])}


def presence(preds: Sequence[Target], score_threshold: float = 0.5) -> torch.Tensor:
    """Per image: does any predicted box score at least ``score_threshold``?"""
    return torch.tensor([bool((torch.as_tensor(p["scores"]) >= score_threshold).any())
                         for p in preds], dtype=torch.bool)


def presence_accuracy(preds: Sequence[Target], targets: Sequence[Target],
                      score_threshold: float = 0.5) -> float:
    """Share of images where "a box scores at least the threshold" matches "a digit is there"."""
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
    if not len(targets):
        raise ValueError("presence accuracy of no images")
    truth = torch.tensor([len(torch.as_tensor(t["boxes"]).reshape(-1, 4)) > 0 for t in targets])
    return float((presence(preds, score_threshold) == truth).float().mean())


class DetectionMetric:
    """Accumulates batches (``update``) and scores them all at once (``compute``)."""

    def __init__(self, score_threshold: float = 0.5):
        self.score_threshold = score_threshold
        self.reset()

    def reset(self) -> None:
        self.preds: list[Target] = []
        self.targets: list[Target] = []

    def update(self, preds: Sequence[Target], targets: Sequence[Target]) -> None:
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
        detach = lambda d: {k: torch.as_tensor(v).detach().cpu() for k, v in d.items()}  # noqa: E731
        self.preds += [detach(p) for p in preds]
        self.targets += [detach(t) for t in targets]

    def compute(self) -> dict[str, float]:
        return {**mean_average_precision(self.preds, self.targets),
                "presence_accuracy": presence_accuracy(self.preds, self.targets,
                                                       self.score_threshold)}
