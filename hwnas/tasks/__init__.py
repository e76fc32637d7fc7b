"""Tasks as plug-ins: what a network is trained for, and how it is scored.

Everything else (backbone, supernet, extraction, estimator, search, tracking, evaluation,
report) speaks of "the task's score": a number in percent, higher is better, named by the
task's ``metric`` (``accuracy``, ``map50``, ``miou``). A task is one entry of ``TASKS`` and one
package with two halves:

- its head's spec (free of torch): the architecture fields (registered in
  ``hwnas.arch.HEADS``) and the ops the accelerator runs (``hwnas.lowering.HEAD_OPS``), so
  specs, the simulator and the estimator know the head without importing torch;
- its PyTorch side, a module whose ``TASK`` is a ``TorchTask``: the head's module and the
  supernet's elastic version, the data, the loss, in-place distillation and the score.

Classification is built in (its head spec lives in ``hwnas.arch``, its data in
``hwnas.data``); detection and segmentation are the packages ``hwnas.tasks.detection`` and
``hwnas.tasks.segmentation``.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Protocol

from hwnas.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from hwnas.data import Splits


@dataclass(frozen=True)
class Task:
    name: str          # the head's ``task`` field
    metric: str        # the score's name in records, MLflow and reports
    label: str         # the score in prose
    head_module: str   # registers the head's spec and ops (no torch)
    torch_module: str  # defines ``TASK``, a ``TorchTask``


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("classification", "accuracy", "top-1 accuracy", "hwnas.arch",
         "hwnas.tasks.classification"),
    Task("detection", "map50", "mAP@0.5", "hwnas.tasks.detection.head",
         "hwnas.tasks.detection.modules"),
    Task("segmentation", "miou", "mIoU", "hwnas.tasks.segmentation.head",
         "hwnas.tasks.segmentation.modules"),
)}


class TorchTask(Protocol):
    """A task's PyTorch side. ``head`` is the architecture's head spec; scores are percent."""

    head_module: type  # nn.Module(cin, head): the standalone head
    dynamic_head: type  # the supernet's elastic head: forward(x, head), export_to(target, cin, head)

    def load(self, data: dict, seed: int) -> Splits:
        """The train/val/test splits of the ``data`` params section; ``y`` is whatever
        ``loss`` and ``score`` read (one tensor per image, so loaders batch it)."""

    def loss(self, out: torch.Tensor, y: torch.Tensor, head, cfg) -> torch.Tensor: ...

    def soft_targets(self, out: torch.Tensor, head) -> torch.Tensor:
        """The teacher's (largest subnet's) output as the students' target."""

    def distill(self, out: torch.Tensor, soft: torch.Tensor, head) -> torch.Tensor: ...

    def score(self, model: nn.Module, loader, head) -> float: ...

    def examples(self, nets: dict[str, nn.Module], data, path) -> dict:
        """A picture of test inputs with each network's output (the report shows it), and
        any figures measured on the way (detection: the host's post-processing time)."""


# Tasks whose data a generator writes: its module and config class (``generate(config, out)``).
SCENES = {"detection": ("hwnas.tasks.detection.scenes", "SceneConfig"),
          "segmentation": ("hwnas.tasks.segmentation.scenes", "SegmentationScenes")}


def scene_generator(name: str):
    """(config class, ``generate``) of task ``name``'s scene generator."""
    if name not in SCENES:
        raise UserError(f"task: {name!r} has no scene generator (these do: {', '.join(SCENES)})")
    module, config = SCENES[name]
    scenes = import_module(module)
    return getattr(scenes, config), scenes.generate


def get(name: str) -> Task:
    if name not in TASKS:
        raise UserError(f"task: unknown task {name!r} (known: {', '.join(TASKS)})")
    return TASKS[name]


def torch_task(name: str) -> TorchTask:
    """The PyTorch side of task ``name`` (imported on first use)."""
    return import_module(get(name).torch_module).TASK


def load_heads() -> None:
    """Import every task's head spec (they register into ``hwnas.arch.HEADS``)."""
    for task in TASKS.values():
        import_module(task.head_module)
