"""What a search candidate is scored on: score (inherited from the supernet, or
a zero-shot proxy) and latency and memory from the estimator, in batches."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from hwnas.arch import ArchSpec
from hwnas.errors import UserError
from hwnas.model import build_model
from hwnas.search.evolution import Constraints, ObjectiveFn
from hwnas.search.zeroshot import PROXIES
from hwnas.space import SearchSpace
from hwnas.supernet import SuperNet, task_score, extract_subnet, recalibrate_bn

ScoreFn = Callable[[ArchSpec], float]


class SearchInputError(UserError):
    """A search that cannot succeed; raised before any candidate is evaluated."""


def check_feasible(space: SearchSpace, estimate, constraints: Constraints) -> None:
    """Raise SearchInputError when even the cheapest networks break a constraint."""
    records = estimate(space.cheapest())
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


def supernet_score(supernet: SuperNet, calib: list[torch.Tensor],
                      val: tuple[torch.Tensor, torch.Tensor]) -> ScoreFn:
    """Score (%) inherited from the supernet after BN recalibration on ``calib``."""
    def score(arch: ArchSpec) -> float:
        net = extract_subnet(supernet, arch)
        recalibrate_bn(net, calib)
        return task_score(net, [val])
    return score


def _worker_scorer(state: dict, calib: list[torch.Tensor],
                   val: tuple[torch.Tensor, torch.Tensor]) -> ScoreFn:
    from hwnas.supernet import supernet_from_state

    torch.set_num_threads(1)
    return supernet_score(supernet_from_state(state).eval(), calib, val)


def _score(score: ScoreFn, arch: ArchSpec) -> float:
    return score(arch)


class ParallelSupernetScore:
    """Inherited score over workers (``hwnas.workers.Fanout``: local processes or a Dask
    cluster), one supernet each, sent once: the subnets are small, so one core per
    subnet beats two threads on one subnet."""

    def __init__(self, supernet_path, calib, val, workers: int = 2):
        from hwnas.supernet import load_supernet, supernet_state
        from hwnas.workers import Fanout

        state = supernet_state(load_supernet(supernet_path))
        self.fanout = Fanout(workers, _worker_scorer, (state, calib, val))

    def __call__(self, archs: Sequence[ArchSpec]) -> list[float]:
        return self.fanout.map(_score, [(a,) for a in archs])

    def close(self) -> None:
        self.fanout.close()


def proxy_score(name: str, x: torch.Tensor, y: torch.Tensor, seed: int) -> ScoreFn:
    """A zero-shot proxy score of the freshly initialised network (seeded)."""
    if name not in PROXIES:
        raise SearchInputError(f"search.score: unknown proxy {name!r} "
                               f"(known: supernet, {', '.join(PROXIES)})")
    proxy = PROXIES[name]

    def score(arch: ArchSpec) -> float:
        torch.manual_seed(seed)
        return proxy(build_model(arch).to(x.device), x, y)
    return score


def make_objective_fn(score_batch: Callable[[Sequence[ArchSpec]], list[float]],
                      estimate) -> ObjectiveFn:
    """Score and cost of a whole batch (latency and memory in one estimator call)."""
    def objective(archs: Sequence[ArchSpec]) -> list[dict]:
        costs = estimate(list(archs))
        accs = score_batch(list(archs))
        # a kernel kind the estimator has no model for: never feasible, never chosen
        return [{"score": float(acc),
                 "latency_ms": float("inf") if c["latency_ms"] is None else c["latency_ms"],
                 "memory_bytes": c["memory_bytes"], "macs": c["macs"],
                 "out_of_range": len(c["out_of_range"])} for acc, c in zip(accs, costs)]
    return objective
