"""Detection metrics: COCO mAP and presence accuracy.

mAP is COCO's own evaluation run by ``torchmetrics.detection.MeanAveragePrecision`` with its
``faster_coco_eval`` backend (the C++ port of pycocotools): boxes xyxy in pixels, 100 detections
per image, classes = the labels seen in targets and predictions (a class with no ground truth
is left out of the mean). ``map`` is mAP@[.5:.95], ``map_50`` mAP@0.5; with no ground-truth box
at all both are -1 (COCO's "undefined").

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


def mean_average_precision(preds: Sequence[Target], targets: Sequence[Target]) -> dict[str, float]:
    """``{"map": mAP@[.5:.95], "map_50": mAP@0.5}`` over all images (COCO's evaluation)."""
    from torchmetrics.detection import MeanAveragePrecision

    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
    tensors = lambda d: {k: torch.from_numpy(v) for k, v in d.items()}  # noqa: E731
    targets = [tensors(_rows(t, ("boxes", "labels"), "targets", i)) for i, t in enumerate(targets)]
    preds = [tensors(_rows(p, ("boxes", "scores", "labels"), "preds", i))
             for i, p in enumerate(preds)]
    if not any(len(t["boxes"]) for t in targets):
        return {"map": -1.0, "map_50": -1.0}
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="faster_coco_eval")
    metric.update(preds, targets)
    result = metric.compute()
    return {"map": float(result["map"]), "map_50": float(result["map_50"])}


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
