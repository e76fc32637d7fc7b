"""Multishot: candidates trained briefly from scratch, fanned out over a Prefect
task runner: threads or processes locally, a Dask cluster given its scheduler
address (``DaskTaskRunner(address=...)``), with the same task code."""
from __future__ import annotations

import json
import threading
import time
from functools import lru_cache

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
from prefect.utilities.annotations import unmapped


# torch's default generator is process-wide: threads seed and initialise one at a time
_INIT = threading.Lock()


@lru_cache(maxsize=2)
def _splits(task: str, data: str, seed: int):
    """The task's splits of the ``data`` section (as JSON: a cache key)."""
    from hwnas import tasks

    return tasks.torch_task(task).load(json.loads(data), seed)


def train_and_score(arch: str, data: dict, train: dict, seed: int, threads: int = 1) -> dict:
    """Train one architecture from scratch on its task's data; its validation score (%)
    and time."""
    import torch

    from hwnas.arch import parse_arch
    from hwnas.data import Loader
    from hwnas.model import build_model
    from hwnas.supernet import task_score
    from hwnas.training import TrainConfig, train_from_scratch

    torch.set_num_threads(threads)
    cfg = TrainConfig(**train)
    net = parse_arch(arch)
    splits = _splits(net.head.task, json.dumps(data, sort_keys=True), seed)
    with _INIT:
        torch.manual_seed(seed)
        model = build_model(net)
    loader = Loader(splits.train, cfg.batch_size, shuffle=True, max_shift=cfg.max_shift,
                    seed=seed, drop_last=True)
    t0 = time.perf_counter()
    train_from_scratch(model, loader, cfg)
    return {"arch": arch, "score": task_score(model, Loader(splits.val, 256)),
            "train_seconds": time.perf_counter() - t0}


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def train_candidate(arch: str, data: dict, train: dict, seed: int) -> dict:
    return train_and_score(arch, data, train, seed)


@flow(name="hwnas-multishot")
def train_candidates(archs: list[str], data: dict, train: dict, seed: int = 0) -> list[dict]:
    """Fan the candidates out over the flow's task runner; results in input order."""
    futures = train_candidate.map(archs, data=unmapped(data), train=unmapped(train),
                                  seed=unmapped(seed))
    return [f.result() for f in futures]


def task_runner(kind: str = "threads", workers: int = 2, dask_address: str | None = None):
    """Where candidates train: ``threads``, ``processes``, or a Dask cluster (``dask_address``
    or else ``HWNAS_CLUSTER``, as every fan-out: ``hwnas.workers``)."""
    from hwnas.workers import cluster_address

    dask_address = dask_address or cluster_address()
    if dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=dask_address)
    if kind == "processes":
        return ProcessPoolTaskRunner(max_workers=workers)
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=workers)
    raise ValueError(f"task runner: unknown kind {kind!r} (threads, processes, or a Dask address)")


def multishot(archs: list[str], data: dict, train: dict, seed: int = 0, kind: str = "threads",
              workers: int = 2, dask_address: str | None = None) -> list[dict]:
    runner = task_runner(kind, workers, dask_address)
    return train_candidates.with_options(task_runner=runner)(archs, data, train, seed)
