"""Training loops shared by the supernet stage, its proof, from-scratch runs and the benchmarks.

``sandwich_step``: one optimizer step over the largest subnet (ground truth), the
smallest and ``num_random`` random subnets (soft targets from the largest: in-place
distillation), gradients accumulated. ``train_step``: one plain step of a standalone
model. Both use the same optimizer and per-step cosine schedule, so "the same
budget" means the same epochs, batches, augmentation and learning rates.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from hwnas import distributed, tasks
from hwnas.arch import ArchSpec


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 6
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-5
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.1
    num_random: int = 2       # sandwich rule: random subnets per step besides largest/smallest
    # block types of the largest (teacher) and smallest subnets: "fixed" (all fused_ibn /
    # all ibn), "cycle" (every type in turn, step by step), "random" (per block, per step)
    # or "all" (the largest of every type each step, fused_ibn teaching; smallest cycles)
    extremes: str = "fixed"
    distill: bool = True      # in-place distillation from the largest subnet
    max_shift: int = 2        # augmentation: random translation in pixels
    grad_clip: float = 5.0    # 0 = off
    # sandwich: the step's gradient sums one per subnet, so clip at grad_clip x subnets
    # (without it the clip was active on most steps, shrinking the supernet's learning rate)
    clip_per_subnet: bool = False
    # sandwich: weight of stage-output distillation. Each student's stage outputs learn the
    # largest's (its first channels; normalized squared error), so every path hands the
    # shared later blocks the features they were trained on (0 = logits only)
    distill_stages: float = 0.0
    # stage distillation through the supernet's learned per-stage maps (``SuperNet.stage_maps``):
    # a student's stage output need only predict the largest's linearly
    stage_regressor: bool = False
    # sandwich: weight of the largest subnet's loss (the teacher), against 1 per student
    teacher_weight: float = 1.0
    optimizer: str = "sgd"    # sgd (Nesterov momentum) | adamw (decoupled weight decay)
    bf16: bool = False        # CUDA only: forward passes under bf16 autocast


EXTREMES = ("fixed", "cycle", "random", "all")


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (or AdamW); no weight decay on BN parameters, biases, kernel
    transformations and stage maps (identity at init: decay would pull them towards zero)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        identity = "ktrans" in name or "stage_maps" in name
        (decay if p.ndim > 1 and not identity else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


def lr_at(step: int, total_steps: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Linear warmup then cosine decay to zero, per step (so a resume needs only the step)."""
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total_steps - warmup)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, t)))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def stage_distill_loss(student: list[torch.Tensor], teacher: list[torch.Tensor],
                       maps: Iterable[torch.Tensor] | None = None) -> torch.Tensor:
    """Sum over stages of the squared error between a student's stage output and the
    teacher's first as many channels, relative to the teacher's mean square. With
    ``maps`` (one square matrix per stage, the teacher's width), the student's output
    is first mapped to all of the teacher's channels: ``maps[s][:, :c] @ student``."""
    loss = student[0].new_zeros(())
    if maps is not None:
        student = [torch.einsum("nchw,dc->ndhw", s, m[:, :s.shape[1]])
                   for s, m in zip(student, maps, strict=True)]
    for s, t in zip(student, teacher, strict=True):
        t = t[:, :s.shape[1]]
        if distributed.active():  # the ratio of the global batch's means, as one process has it
            err, ref = distributed.global_sum(torch.stack([(s - t).pow(2).sum(),
                                                           t.pow(2).sum()]))
            n = s.numel() * distributed.world()
            loss = loss + (err / n) / (ref / n).clamp_min(1e-6)
        else:
            loss = loss + (s - t).pow(2).mean() / t.pow(2).mean().clamp_min(1e-6)
    return loss


def autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``cfg.bf16``; elsewhere nothing (CPU runs stay fp32)."""
    if cfg.bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _clip_and_step(model: nn.Module, opt: torch.optim.Optimizer, cfg: TrainConfig,
                   scale: float = 1.0) -> None:
    if cfg.grad_clip:
        nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None],
                                 cfg.grad_clip * scale)
    opt.step()


def sandwich_step(supernet: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  archs: list[ArchSpec], opt: torch.optim.Optimizer, cfg: TrainConfig) -> dict:
    """``archs[0]`` is the teacher (largest); the rest learn from its soft targets.
    Returns the losses as tensors: reading them waits for the device, so the epoch reads
    them once, not every step."""
    head = supernet.space.head
    task = tasks.torch_task(head.task)
    opt.zero_grad(set_to_none=True)
    with autocast(cfg, x.device):
        out, stages = supernet.forward_stages(x, archs[0])
        loss = task.loss(out, y, head, cfg)
    (loss * cfg.teacher_weight).backward()
    teacher, teacher_stages = task.soft_targets(out, head), [t.detach() for t in stages]
    student_loss = torch.zeros((), device=x.device)
    for arch in archs[1:]:
        with autocast(cfg, x.device):
            out, stages = supernet.forward_stages(x, arch)
            sl = task.distill(out, teacher, head) if cfg.distill else task.loss(out, y, head, cfg)
            if cfg.distill_stages:
                maps = supernet.stage_maps if cfg.stage_regressor else None
                sl = sl + cfg.distill_stages * stage_distill_loss(stages, teacher_stages, maps)
        sl.backward()
        student_loss += sl.detach() / max(1, len(archs) - 1)
    if distributed.active():  # every rank steps on the global batch's gradient
        distributed.all_reduce_grads(supernet)
    _clip_and_step(supernet, opt, cfg, len(archs) if cfg.clip_per_subnet else 1.0)
    return {"loss_largest": loss.detach(), "loss_students": student_loss}


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               opt: torch.optim.Optimizer, cfg: TrainConfig) -> dict:
    """One step; the loss comes back as a tensor (see ``sandwich_step``)."""
    head = model.arch.head
    opt.zero_grad(set_to_none=True)
    with autocast(cfg, x.device):
        loss = tasks.torch_task(head.task).loss(model(x), y, head, cfg)
    loss.backward()
    _clip_and_step(model, opt, cfg)
    return {"loss": loss.detach()}


def _random_types(supernet, arch: ArchSpec, rng: np.random.Generator) -> ArchSpec:
    """``arch`` with each block's type drawn uniformly from its stage's choices."""
    blocks = []
    for (st, _), b in zip(supernet.plan(arch), arch.blocks):
        types = supernet.space.stages[st].types
        kind = types[int(rng.integers(len(types)))]
        blocks.append(replace(b, type=kind, expand=1 if kind == "conv" else b.expand))
    return replace(arch, blocks=tuple(blocks))


def sandwich_archs(supernet, rng: np.random.Generator, num_random: int, step: int = 0,
                   extremes: str = "fixed") -> list[ArchSpec]:
    """Largest, smallest and ``num_random`` random subnets (the sandwich rule).
    ``extremes`` picks the block types of the largest and smallest (``TrainConfig``)."""
    extra: list[ArchSpec] = []
    if extremes == "fixed":
        big, small = supernet.largest(), supernet.smallest()
    elif extremes in ("cycle", "all"):
        big_t, small_t = supernet.largest().blocks[0].type, supernet.smallest().blocks[0].type
        types = supernet.space.common_types()
        big = supernet.largest(types[(types.index(big_t) + step) % len(types)])
        small = supernet.smallest(types[(types.index(small_t) + step) % len(types)])
        if extremes == "all":  # the default largest teaches; the other types' largest learn
            big = supernet.largest()
            extra = [supernet.largest(t) for t in types if t != big_t]
    elif extremes == "random":
        big = _random_types(supernet, supernet.largest(), rng)
        small = _random_types(supernet, supernet.smallest(), rng)
    else:
        raise ValueError(f"extremes: {extremes!r} is not one of {', '.join(EXTREMES)}")
    return [big, small, *extra] + [supernet.sample(rng) for _ in range(num_random)]


def supernet_epoch(supernet: nn.Module, loader: Iterable, opt: torch.optim.Optimizer,
                   cfg: TrainConfig, rng: np.random.Generator, step: int, total_steps: int,
                   on_step: Callable[[int], None] | None = None) -> tuple[dict, int]:
    """One epoch of sandwich training from global step ``step``; returns (metrics, next step)."""
    supernet.train()
    n_batches = len(loader)
    sums = {"loss_largest": 0.0, "loss_students": 0.0}  # tensors after the first step
    for x, y in loader:
        if distributed.active():  # every rank drew the same global batch: train on its rows
            x, y = distributed.shard(x), distributed.shard(y)
        set_lr(opt, lr_at(step, total_steps, n_batches, cfg))
        archs = sandwich_archs(supernet, rng, cfg.num_random, step, cfg.extremes)
        out = sandwich_step(supernet, x, y, archs, opt, cfg)
        for k in sums:
            sums[k] += out[k] / n_batches
        step += 1
        if on_step:
            on_step(step)
    if distributed.active() and n_batches:  # each rank's losses are its shard's
        sums = {k: distributed.mean_over_ranks(v) for k, v in sums.items()}
    return {k: float(v) for k, v in sums.items()}, step


def model_epoch(model: nn.Module, loader: Iterable, opt: torch.optim.Optimizer,
                cfg: TrainConfig, step: int, total_steps: int,
                on_step: Callable[[int], None] | None = None) -> tuple[dict, int]:
    """One epoch of plain training (a subnet from scratch); returns (metrics, next step)."""
    model.train()
    n_batches = len(loader)
    loss = 0.0
    for x, y in loader:
        set_lr(opt, lr_at(step, total_steps, n_batches, cfg))
        loss += train_step(model, x, y, opt, cfg)["loss"] / n_batches
        step += 1
        if on_step:
            on_step(step)
    return {"loss": float(loss)}, step


def train_from_scratch(model: nn.Module, loader: Iterable, cfg: TrainConfig,
                       on_step: Callable[[int], None] | None = None) -> nn.Module:
    """``cfg.epochs`` epochs of plain training with the supernet's optimizer and schedule."""
    opt = make_optimizer(model, cfg)
    total, step = cfg.epochs * len(loader), 0
    for _ in range(cfg.epochs):
        _, step = model_epoch(model, loader, opt, cfg, step, total, on_step)
    return model


def extremes_val_score(supernet, ctx) -> dict:
    """Val score of the largest and smallest subnets, BN-recalibrated."""
    from hwnas.supernet import subnet_score

    calib, val = ctx.calib_loader(), ctx.loader("val")
    nb = ctx.params.get("calib_batches", 8)
    return {"val_score_largest": subnet_score(supernet, supernet.largest(), calib, val, nb),
            "val_score_smallest": subnet_score(supernet, supernet.smallest(), calib, val, nb)}


def supernet_fingerprint(params: dict) -> str:
    """A supernet checkpoint resumes only with the same params and supernet/training code."""
    import hwnas.context
    import hwnas.distributed
    import hwnas.space
    import hwnas.supernet
    import hwnas.training
    from hwnas.checkpoint import code_fingerprint

    # the recipe trained (``cuda``'s overrides on a GPU), not the section's two recipes
    trained = {**{k: v for k, v in params.items() if k != "cuda"},
               "train": hwnas.context.recipe(params)}
    return code_fingerprint(trained, hwnas.supernet, hwnas.training, hwnas.space, hwnas.context,
                            hwnas.distributed)


def train_supernet(ctx, ckpt_path, progress: bool = True, log=None):
    """Train (or resume) the supernet of ``ctx`` (a ``hwnas.context.TrainContext``),
    checkpointing after every epoch to ``ckpt_path``. ``log(metrics, epoch)`` receives
    each epoch's metrics. Returns the supernet and the final summary.

    Launched by ``torchrun`` over several processes, it trains data-parallel
    (``hwnas.distributed``): each rank takes its share of every global batch of
    ``train.batch_size``; rank 0 alone shows progress, logs and writes the checkpoint;
    every rank resumes from it and returns the same supernet."""
    if distributed.world() > 1:
        _check_data_parallel(ctx)
    device, started = distributed.init(ctx.device)
    if device != ctx.device:  # cuda:LOCAL_RANK
        ctx = replace(ctx, device=device)
    lead = distributed.rank() == 0
    try:
        return _train_supernet(ctx, ckpt_path, progress and lead, log if lead else None)
    finally:
        if started:
            torch.distributed.destroy_process_group()


def _check_data_parallel(ctx) -> None:
    from hwnas.errors import UserError

    task, world = ctx.space.head.task, distributed.world()
    if not getattr(tasks.torch_task(task), "data_parallel", False):
        raise UserError(f"task {task}: its loss is not exact over several processes; train "
                        f"its supernet in one process (not under torchrun)")
    if ctx.train.batch_size % world:
        raise UserError(f"train_supernet.train.batch_size: {ctx.train.batch_size} is not a "
                        f"multiple of the {world} processes torchrun started")


def _train_supernet(ctx, ckpt_path, progress: bool, log):
    import json
    import time

    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    from hwnas.checkpoint import load_checkpoint, save_atomic
    from hwnas.supernet import SuperNet

    seed, cfg = ctx.params["seed"], ctx.train
    fp = supernet_fingerprint(ctx.params)
    torch.manual_seed(seed)
    supernet = SuperNet(ctx.space, ctx.params.get("kernel_transform", True)).to(ctx.device)
    opt = make_optimizer(supernet, cfg)
    loader = ctx.loader("train", train=True, seed=seed)
    rng = np.random.default_rng(seed)
    start_epoch, step, history, elapsed = 0, 0, [], 0.0
    lead = distributed.rank() == 0  # every rank resumes; rank 0 alone says so
    ckpt = load_checkpoint(ckpt_path, fp, ctx.device,
                           log=lambda m: lead and print(f"train_supernet: {m}"))
    if ckpt is not None:
        supernet.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        loader.load_state_dict(ckpt["loader"])
        rng.bit_generator.state = json.loads(ckpt["rng"])
        start_epoch, step, history = ckpt["epoch"], ckpt["step"], json.loads(ckpt["history"])
        elapsed = ckpt["train_seconds"]
        if lead:
            print(f"train_supernet: resuming after epoch {start_epoch}/{cfg.epochs} "
                  f"from {ckpt_path}")
        if log:  # the resumed run's curve is whole, not only the epochs it trains
            for metrics in history:
                log(metrics, metrics["epoch"])
    total = cfg.epochs * len(loader)
    columns = (TextColumn("[bold]supernet[/] epoch {task.fields[epoch]}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[info]}"))
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("train", total=total, completed=step, epoch=start_epoch + 1, info="")
        for epoch in range(start_epoch, cfg.epochs):
            bar.update(task, epoch=f"{epoch + 1}/{cfg.epochs}")
            t0 = time.perf_counter()
            metrics, step = supernet_epoch(supernet, loader, opt, cfg, rng, step, total,
                                           on_step=lambda n: bar.update(task, completed=n))
            epoch_s = time.perf_counter() - t0
            elapsed += epoch_s
            # on every rank: the same weights give the same scores (extracted subnets run
            # no collectives), and each rank's history stays whole
            metrics.update(extremes_val_score(supernet, ctx), epoch=epoch + 1,
                           epoch_seconds=epoch_s, lr=opt.param_groups[0]["lr"])
            history.append(metrics)
            info = (f"val largest {metrics['val_score_largest']:.1f}% "
                    f"smallest {metrics['val_score_smallest']:.1f}%")
            bar.update(task, info=info)
            if progress:
                bar.console.print(f"epoch {epoch + 1}/{cfg.epochs}: {epoch_s:.0f} s, "
                                  f"loss {metrics['loss_largest']:.3f}, {info}")
            if lead:  # the ranks' states are the same: one writer
                save_atomic({"fingerprint": fp, "epoch": epoch + 1, "step": step,
                             "model": supernet.state_dict(), "optimizer": opt.state_dict(),
                             "loader": loader.state_dict(),
                             "rng": json.dumps(rng.bit_generator.state),
                             "history": json.dumps(history), "train_seconds": elapsed},
                            ckpt_path)
            distributed.barrier()  # the others wait until the checkpoint is whole
            if log:
                log(metrics, epoch + 1)
    summary = {"epochs": cfg.epochs, "train_seconds": round(elapsed, 1),
               "epoch_seconds_mean": round(elapsed / max(1, cfg.epochs), 2),
               "val_score_largest": history[-1]["val_score_largest"] if history else None,
               "val_score_smallest": history[-1]["val_score_smallest"] if history else None,
               "params": sum(p.numel() for p in supernet.parameters()),
               "space_size": float(ctx.space.size())}
    return supernet, summary
