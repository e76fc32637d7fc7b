"""Tasks: a task is a plug-in: datasets, head, loss, metric.

One package per task (``detection`` so far; classification still lives in ``hwnas.data``
and the classifier head). A task's head registers itself when its package loads: the spec
side (``hwnas.arch.HEADS``, ``hwnas.lowering.HEAD_OPS``, free of torch) when
``hwnas.lowering`` loads (``hwnas.arch`` imports it), the PyTorch side (``hwnas.model.HEADS``, ``hwnas.supernet.DYNAMIC_HEADS``) on first
use, through ``load_torch``, so that specs and lowering never import torch.
"""
from importlib import import_module

# task -> the module registering its PyTorch head (imported by ``load_torch``)
TORCH_MODULES: dict[str, str] = {}


def load_torch(task: str) -> None:
    """Import the module that registers ``task``'s PyTorch modules (no-op when built in)."""
    if task in TORCH_MODULES:
        import_module(TORCH_MODULES[task])


from hwnas.tasks.detection import head as _detection_head  # noqa: E402,F401  registers "det"
