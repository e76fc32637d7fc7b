"""What a search candidate is scored on: accuracy (inherited from the supernet, or
a zero-shot proxy) and latency and memory from the estimator, in batches."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from hwnas.arch import ArchSpec, BlockSpec, StemSpec, validate
from hwnas.model import build_model
from hwnas.search.evolution import Constraints, ObjectiveFn
from hwnas.search.zeroshot import PROXIES
from hwnas.space import SearchSpace
from hwnas.supernet import SuperNet, accuracy, extract_subnet, recalibrate_bn

AccuracyFn = Callable[[ArchSpec], float]


class SearchInputError(ValueError):
    """A search that cannot succeed; raised before any candidate is evaluated."""


def baseline_arch(space: SearchSpace, base_channels: Sequence[int] | None = None,
                  base_stem: int = 32) -> ArchSpec:
    """The MobileNetV2-like network of a space: IBN blocks, 3x3 kernels, the largest
    expansion, depth multiplier 1 (or each stage's base depth) and the widths
    closest to the base widths."""
    def nearest(choices, target):
        return min(choices, key=lambda c: (abs(c - target), c))

    m = 1.0 if space.depth_multipliers and 1.0 in space.depth_multipliers else None
    blocks = []
    for i, stage in enumerate(space.stages):
        kind = "ibn" if "ibn" in stage.types else stage.types[0]
        depth = space.stage_depths(stage, m)[-1] if m is not None else max(stage.depths)
        out = nearest(stage.channels, base_channels[i]) if base_channels else stage.channels[-1]
        for j in range(depth):
            blocks.append(BlockSpec(kind, 3 if 3 in stage.kernels else stage.kernels[0], out,
                                    stage.stride if j == 0 else 1,
                                    1 if kind == "conv" else max(stage.expands)))
    return validate(ArchSpec(stem=StemSpec(nearest(space.stem_channels, base_stem), 3,
                                           space.stem_stride),
                             blocks=tuple(blocks), head=space.head, input=space.input,
                             name="baseline"))


def cheapest_archs(space: SearchSpace) -> list[ArchSpec]:
    """Small corners of the space (narrowest, shallowest, 3x3, expand 1, each block
    type): a lower bound to check constraints against before searching."""
    m = min(space.depth_multipliers) if space.depth_multipliers else None
    out = []
    for kind in dict.fromkeys(t for s in space.stages for t in s.types):
        blocks = []
        for stage in space.stages:
            k = kind if kind in stage.types else stage.types[0]
            for j in range(min(space.stage_depths(stage, m))):
                blocks.append(BlockSpec(k, min(stage.kernels), min(stage.channels),
                                        stage.stride if j == 0 else 1,
                                        1 if k == "conv" else min(stage.expands)))
        out.append(validate(ArchSpec(stem=StemSpec(min(space.stem_channels), 3, space.stem_stride),
                                     blocks=tuple(blocks), head=space.head, input=space.input)))
    return out


def check_feasible(space: SearchSpace, estimate, constraints: Constraints) -> None:
    """Raise SearchInputError when even the cheapest networks break a constraint."""
    records = estimate(cheapest_archs(space))
    if any(r["latency_ms"] is None for r in records):
        missing = next(r["out_of_range"] for r in records if r["latency_ms"] is None)
        raise SearchInputError(f"the estimator cannot cost this space: {'; '.join(missing[:2])}")
    lat = min(r["latency_ms"] for r in records)
    mem = min(r["memory_bytes"] for r in records)
    if constraints.max_latency_ms is not None and lat > constraints.max_latency_ms:
        raise SearchInputError(
            f"infeasible: search.max_latency_ms = {constraints.max_latency_ms:g} ms, but the "
            f"fastest corner of the space is estimated at {lat:.4f} ms")
    if constraints.max_memory_bytes is not None and mem > constraints.max_memory_bytes:
        raise SearchInputError(
            f"infeasible: the memory budget is {constraints.max_memory_bytes:.0f} bytes, but the "
            f"smallest corner of the space needs {mem:.0f} bytes")


def supernet_accuracy(supernet: SuperNet, calib: list[torch.Tensor],
                      val: tuple[torch.Tensor, torch.Tensor]) -> AccuracyFn:
    """Accuracy (%) inherited from the supernet after BN recalibration on ``calib``."""
    def score(arch: ArchSpec) -> float:
        net = extract_subnet(supernet, arch)
        recalibrate_bn(net, calib)
        return accuracy(net, [val])
    return score


_worker_score: AccuracyFn | None = None


def _init_worker(supernet_path: str, calib: list[torch.Tensor],
                 val: tuple[torch.Tensor, torch.Tensor]) -> None:
    global _worker_score
    from hwnas.supernet import load_supernet

    torch.set_num_threads(1)
    _worker_score = supernet_accuracy(load_supernet(supernet_path).eval(), calib, val)


def _score_in_worker(arch: ArchSpec) -> float:
    return _worker_score(arch)


class ParallelSupernetAccuracy:
    """Inherited accuracy over a pool of worker processes, one supernet each: the
    subnets are small, so one core per subnet beats two threads on one subnet."""

    def __init__(self, supernet_path, calib, val, workers: int = 2):
        import multiprocessing as mp
        import os
        from concurrent.futures import ProcessPoolExecutor

        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                        initializer=_init_worker,
                                        initargs=(str(supernet_path), calib, val))

    def __call__(self, archs: Sequence[ArchSpec]) -> list[float]:
        return list(self.pool.map(_score_in_worker, archs))

    def close(self) -> None:
        self.pool.shutdown()


def proxy_accuracy(name: str, x: torch.Tensor, y: torch.Tensor, seed: int) -> AccuracyFn:
    """A zero-shot proxy score of the freshly initialised network (seeded)."""
    if name not in PROXIES:
        raise SearchInputError(f"search.accuracy: unknown proxy {name!r} "
                               f"(known: supernet, {', '.join(PROXIES)})")
    proxy = PROXIES[name]

    def score(arch: ArchSpec) -> float:
        torch.manual_seed(seed)
        return proxy(build_model(replace(arch, name="")).to(x.device), x, y)
    return score


def make_objective_fn(accuracy_batch: Callable[[Sequence[ArchSpec]], list[float]],
                      estimate) -> ObjectiveFn:
    """Accuracy and cost of a whole batch (latency and memory in one estimator call)."""
    def evaluate(archs: Sequence[ArchSpec]) -> list[dict]:
        costs = estimate(list(archs))
        accs = accuracy_batch(list(archs))
        # a kernel kind the estimator has no model for: never feasible, never chosen
        return [{"accuracy": float(acc),
                 "latency_ms": float("inf") if c["latency_ms"] is None else c["latency_ms"],
                 "memory_bytes": c["memory_bytes"], "macs": c["macs"],
                 "out_of_range": len(c["out_of_range"])} for acc, c in zip(accs, costs)]
    return evaluate
