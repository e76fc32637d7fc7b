"""What every training run reads, built from the ``train_supernet`` params section:
the task's dataset splits, the curated search space, the training recipe and the device.

The supernet, its proof, extraction and every from-scratch run start from one
``TrainContext``, so "the same budget" means the same data, batches and recipe.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from hardware.spec import load_spec
from hwnas import tasks
from hwnas.data import Loader, Splits, TensorData
from hwnas.params import ParamsError
from hwnas.space import SearchSpace, SpaceConfig, curated_space
from hwnas.training import TrainConfig


@dataclass
class TrainContext:
    params: dict
    splits: Splits
    space: SearchSpace
    train: TrainConfig
    device: torch.device

    def loader(self, split: str = "train", train: bool = False, seed: int = 0) -> Loader:
        """Training batches (shuffled, augmented) or plain batches of a split; ``a+b``
        joins splits (e.g. ``val+test`` for a larger evaluation set)."""
        parts = [getattr(self.splits, name) for name in split.split("+")]
        data = parts[0] if len(parts) == 1 else TensorData(torch.cat([p.x for p in parts]),
                                                           torch.cat([p.y for p in parts]))
        if train:
            return Loader(data, self.train.batch_size, shuffle=True, max_shift=self.train.max_shift,
                          seed=seed, device=self.device, drop_last=True)
        return Loader(data, 256, device=self.device)

    def calib_loader(self) -> Loader:
        """Training images, shuffled once by the seed, without augmentation: BN recalibration."""
        return Loader(self.splits.train, 256, shuffle=True, seed=self.params["seed"] + 1,
                      device=self.device)

    def data(self, seed: int):
        """What extraction and from-scratch runs read: training batches in the order
        ``seed`` draws, calibration, val and test splits, the device."""
        from hwnas.extract import Data

        return Data(train=lambda: self.loader("train", train=True, seed=seed),
                    calib=self.calib_loader(), test=self.loader("test"), train_config=self.train,
                    val=self.loader("val"), device=self.device)


def pipeline_baseline(space: SearchSpace, params: dict):
    """The network every stage compares against: ``space``'s MobileNetV2-like baseline at
    the base widths of ``train_supernet.space.stages`` (named ``baseline``)."""
    return space.baseline([c for c, _, _ in params["train_supernet"]["space"]["stages"]])


def _tuples(d: dict) -> dict:
    return {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list)
            else v for k, v in d.items()}


def train_context(params: dict, splits: Splits | None = None) -> TrainContext:
    """Dataset, curated search space and recipe from the ``train_supernet`` section
    (merged under ``base``); ``splits`` when the data is already loaded."""
    device = torch.device(params.get("device", "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ParamsError("params.yaml: train_supernet.device: 'cuda', but no CUDA device is "
                          "available here")
    if device.type == "cpu" and params.get("threads"):
        torch.set_num_threads(int(params["threads"]))
    task = params.get("task", "classification")
    if task != "classification" and params["train"].get("max_shift"):
        raise ParamsError(f"params.yaml: train_supernet.train.max_shift: must be 0 for {task} "
                          f"(a shift moves the pixels, not the labels)")
    if splits is None:
        splits = tasks.torch_task(task).load(params["data"], params["seed"])
    cfg = SpaceConfig(resolution=splits.resolution, in_channels=splits.channels,
                      classes=splits.classes, task=task, **_tuples(params["space"]))
    space = curated_space(load_spec(params["hardware"]), cfg)
    return TrainContext(params, splits, space, TrainConfig(**recipe(params)), device)


def recipe(params: dict) -> dict:
    """The ``train_supernet`` section's ``train``, with ``cuda``'s overrides on a GPU."""
    gpu = (params.get("cuda") or {}) if params.get("device", "cpu").startswith("cuda") else {}
    return {**params["train"], **{k: v for k, v in gpu.items() if v is not None}}


# ---- the context in worker processes (``hwnas.workers.Fanout``) ---------------------------


def _one_thread(ctx: TrainContext) -> TrainContext:
    """A worker's copy of the context: one torch thread (the workers share the cores)."""
    torch.set_num_threads(1)
    return ctx


def context_fanout(ctx: TrainContext, workers: int):
    """A ``Fanout`` whose tasks get ``ctx`` first (built here and sent once per worker: a
    worker needs neither the data files nor a spec file)."""
    from hwnas.workers import Fanout

    return Fanout(workers, _one_thread, (ctx,))
