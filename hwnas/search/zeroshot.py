"""Zero-shot proxies: trainability scores of an untrained network, as cheap
stand-ins for score. Each is reported beside the parameter count, the
baseline a proxy must beat to be worth using.

- NASWOT (Mellor et al. 2021): log-determinant of the Hamming-similarity kernel of
  the ReLU activation patterns over a batch: networks that tell inputs apart
  at init tend to train well.
- synflow (Tanaka et al. 2020): log of the sum of |theta * dR/dtheta| for R the output sum of
  the network with |weights| on an all-ones input; data-free.
- grad_norm: norm of the loss gradient on one batch.
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn


def naswot(model: nn.Module, x: torch.Tensor) -> float:
    n = x.shape[0]
    k = torch.zeros(n, n, dtype=torch.float64, device=x.device)

    def hook(_module, _inp, out):  # accumulate per layer: never hold every code at once
        nonlocal k
        c = (out.detach().flatten(1) > 0).double()
        k = k + c @ c.T + (1 - c) @ (1 - c).T

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        model.train()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return float(torch.linalg.slogdet(k)[1])


def synflow(model: nn.Module, x: torch.Tensor) -> float:
    net = copy.deepcopy(model).double().eval()  # BN as a fixed affine map
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad()
    ones = torch.ones((1,) + tuple(x.shape[1:]), dtype=torch.float64, device=x.device)
    net(ones).sum().backward()
    with torch.no_grad():
        total = sum((p * p.grad).abs().sum() for p in net.parameters() if p.grad is not None)
    return float(torch.log(total))  # the raw sum spans dozens of orders of magnitude


def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The gradient's norm under the task's loss (a fresh network, one batch)."""
    from hwnas import tasks
    from hwnas.training import TrainConfig

    net = copy.deepcopy(model).train()
    net.zero_grad()
    head = net.arch.head
    tasks.torch_task(head.task).loss(net(x), y, head, TrainConfig(label_smoothing=0.0)).backward()
    with torch.no_grad():
        return float(sum(p.grad.norm() ** 2 for p in net.parameters() if p.grad is not None) ** 0.5)


def param_count(model: nn.Module, *_args) -> float:
    return float(sum(p.numel() for p in model.parameters()))


PROXIES: dict[str, Callable[..., float]] = {
    "naswot": lambda m, x, y: naswot(m, x),
    "synflow": lambda m, x, y: synflow(m, x),
    "grad_norm": grad_norm,
    "params": lambda m, x, y: param_count(m),
}


def score_all(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
              names=tuple(PROXIES)) -> dict[str, float]:
    """Every proxy on one freshly initialised model and one batch."""
    return {name: PROXIES[name](model, x, y) for name in names}
