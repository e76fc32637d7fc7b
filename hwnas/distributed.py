"""Data-parallel supernet training over the processes ``torchrun`` starts (gloo on CPU,
NCCL on GPUs), exact against one process that trains on the same global batch.

Every rank iterates the same seeded ``Loader`` and samples the same subnets (same seeds),
takes its contiguous shard of each global batch (``shard``), and steps on the gradients
averaged over the ranks (``all_reduce_grads``), so the weights stay identical. Whatever
is a statistic of the whole batch is reduced over the ranks with gradients: BatchNorm's
mean and variance (``batch_norm``) and the stage-distillation ratio (``global_sum``);
per-sample means (cross-entropy, KL) need nothing. Without a process group (the default,
one process) none of this runs and training is unchanged.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def active() -> bool:
    """A process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> int:
    """Processes in the group (torchrun's ``WORLD_SIZE`` before it starts; 1 alone)."""
    return dist.get_world_size() if active() else int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank (torchrun's ``RANK`` before the group starts; 0 alone)."""
    return dist.get_rank() if active() else int(os.environ.get("RANK", "0"))


def init(device: torch.device) -> tuple[torch.device, bool]:
    """Start the process group when torchrun launched several processes: NCCL with one
    GPU per rank (``cuda:LOCAL_RANK``) on CUDA, gloo otherwise. Returns this rank's device
    and whether the group was started here (then the caller destroys it)."""
    if world() <= 1 or dist.is_initialized():
        return device, False
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            device_id=device if device.type == "cuda" else None)
    return device, True


def barrier() -> None:
    """Wait for every rank (nothing alone)."""
    if active():
        dist.barrier()


def shard(x: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous rows of a global batch (its size a multiple of ``world``)."""
    n = len(x) // world()
    return x[rank() * n:(rank() + 1) * n]


@torch.no_grad()
def all_reduce_grads(model: torch.nn.Module) -> None:
    """Average the gradients over the ranks, in one flat buffer (one collective). Every
    rank ran the same subnets, so the same parameters have gradients everywhere."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world()
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


def mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The mean of a metric over the ranks (no gradient)."""
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / world()


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose backward all-reduces the gradient: each rank's loss depends
    on every rank's activations through the sum. (The same as the deprecated
    ``torch.distributed.nn.functional.all_reduce``, without its warning.)"""

    @staticmethod
    def forward(ctx, x):
        x = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


def global_sum(x: torch.Tensor) -> torch.Tensor:
    """``x`` summed over the ranks, differentiable."""
    return _SumOverRanks.apply(x)


def batch_norm(y: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor,
               weight: torch.Tensor, bias: torch.Tensor, momentum: float,
               eps: float) -> torch.Tensor:
    """Training-mode ``F.batch_norm`` over the global batch: the per-channel sum and sum of
    squares of the local shard are summed over the ranks (one collective), so every rank
    normalizes with the statistics one process would see; the running statistics are
    updated as ``F.batch_norm`` updates them (unbiased variance)."""
    dims = [d for d in range(y.dim()) if d != 1]
    x = y.float() if y.element_size() < 4 else y  # bf16 autocast: statistics in fp32
    count = x.numel() // x.shape[1] * world()
    stats = global_sum(torch.cat([x.sum(dims), x.pow(2).sum(dims)]))
    mean, sq = (stats / count).chunk(2)
    var = (sq - mean * mean).clamp_min(0.0)  # biased, as the normalization uses
    with torch.no_grad():
        running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
        running_var.mul_(1 - momentum).add_((var * count / max(1, count - 1))
                                            .to(running_var.dtype), alpha=momentum)
    shape = [1, -1] + [1] * (y.dim() - 2)
    scale = torch.rsqrt(var + eps) * weight
    out = (x - mean.view(shape)) * scale.view(shape) + bias.view(shape)
    return out.to(y.dtype)
