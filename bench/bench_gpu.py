"""A GPU against 2 CPU threads of the same machine, in one run: the default supernet's
training, the from-scratch runs and a search's scoring.

Run (repo root, on a machine with CUDA):
    python bench/bench_gpu.py [--full] [--json FILE]

Measured (params.yaml's classification pipeline, MNIST-5k at 32x32):
1. Sandwich steps of the default recipe (``train_supernet.train``) on the CPU (2 threads)
   and on CUDA, and of the GPU recipe (``train`` with ``train_supernet.cuda``'s overrides)
   on CUDA, fp32 and bf16. Steps are timed back to back with one synchronization at
   each end, as training runs them.
2. From-scratch steps of the baseline network: on the CPU two runs go at once, one thread
   each (``hwnas.scratch``), so a CPU step costs half a one-thread step.
3. A search's scoring of random candidates (extract, BN recalibration on 256 images,
   score on 500): the CPU's two one-thread worker processes (``search.workers``)
   against the GPU in one process.
4. ``--full``: whole supernet trainings on CUDA (each recipe, with the per-epoch
   validation the stage runs), their val scores against the CPU run's
   (``results/classification/train_supernet/metrics.json``), and their time against
   the CPU's, projected from its step and validation times (a CPU run takes minutes).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import hwnas  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root
from hwnas.context import pipeline_baseline, train_context  # noqa: E402
from hwnas.model import fresh_model  # noqa: E402
from hwnas.params import load_params, section  # noqa: E402
from hwnas.supernet import SuperNet, supernet_state  # noqa: E402
from hwnas.training import (extremes_val_score, make_optimizer, sandwich_archs,  # noqa: E402
                            sandwich_step, train_step, train_supernet)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batches(ctx, seed: int = 0):
    loader = ctx.loader("train", train=True, seed=seed)
    while True:
        yield from loader


def step_seconds(ctx, steps: int, step, warmup: int = 3) -> float:
    """Mean seconds of ``step(x, y, i)`` over ``steps`` steps after ``warmup``."""
    data = batches(ctx)
    for i in range(warmup):
        step(*next(data), i)
    sync(ctx.device)
    t0 = time.perf_counter()
    for i in range(steps):
        step(*next(data), warmup + i)
    sync(ctx.device)
    return (time.perf_counter() - t0) / steps


def sandwich_seconds(ctx, steps: int) -> float:
    torch.manual_seed(0)
    supernet = SuperNet(ctx.space, ctx.params.get("kernel_transform", True)).to(ctx.device)
    opt, rng = make_optimizer(supernet, ctx.train), np.random.default_rng(0)

    def step(x, y, i):
        archs = sandwich_archs(supernet, rng, ctx.train.num_random, i, ctx.train.extremes)
        sandwich_step(supernet, x, y, archs, opt, ctx.train)
    return step_seconds(ctx, steps, step)


def scratch_seconds(ctx, steps: int) -> float:
    net = fresh_model(pipeline_baseline(ctx.space, {"train_supernet": ctx.params}), 0, ctx.device)
    opt = make_optimizer(net, ctx.train)
    return step_seconds(ctx, steps, lambda x, y, i: train_step(net, x, y, opt, ctx.train))


def scoring_seconds(ctx, supernet_path: Path, n: int, workers: int) -> float:
    """Seconds per candidate of the search's inherited score (as ``hwnas.search``)."""
    from hwnas.search.objectives import ParallelSupernetScore, supernet_score
    from hwnas.supernet import load_supernet

    g = torch.Generator().manual_seed(0)
    calib = [ctx.splits.train.x[torch.randperm(len(ctx.splits.train.y), generator=g)[:256]]]
    val = (ctx.splits.val.x[:500], ctx.splits.val.y[:500])
    rng = np.random.default_rng(0)
    archs = [ctx.space.sample(rng) for _ in range(n + 2)]
    if ctx.device.type == "cpu":
        score = ParallelSupernetScore(supernet_path, calib, val, workers)
        run, close = score, score.close
    else:
        one = supernet_score(load_supernet(supernet_path, ctx.device).eval(),
                             [c.to(ctx.device) for c in calib],
                             tuple(v.to(ctx.device) for v in val))
        run, close = (lambda a: [one(x) for x in a]), (lambda: None)
    try:
        run(archs[:2])  # warm up (worker start, CUDA kernels)
        t0 = time.perf_counter()
        run(archs[2:])
        return (time.perf_counter() - t0) / n
    finally:
        close()


def step_profile(ctx) -> dict:
    """Where one sandwich step's time goes: host (dispatching ops) against device (kernels)."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    supernet = SuperNet(ctx.space, True).to(ctx.device)
    opt, rng = make_optimizer(supernet, ctx.train), np.random.default_rng(0)
    x, y = next(batches(ctx))
    for i in range(3):
        archs = sandwich_archs(supernet, rng, ctx.train.num_random, i, ctx.train.extremes)
        sandwich_step(supernet, x, y, archs, opt, ctx.train)
    sync(ctx.device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        sandwich_step(supernet, x, y, archs, opt, ctx.train)
        sync(ctx.device)
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    kernels = [e for e in events if e.device_type.name == "CUDA"]
    return {"wall_s": wall, "aten_ops": sum(e.count for e in events if e.key.startswith("aten::")),
            "cuda_kernels": sum(e.count for e in kernels),
            "cuda_kernel_s": sum(e.self_device_time_total for e in kernels) / 1e6}


def full_training(ctx, cpu_seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        _, s = train_supernet(ctx, Path(tmp) / "ckpt", progress=False)
        wall = time.perf_counter() - t0
    return {"steps": ctx.train.epochs * len(ctx.loader("train", train=True)), "wall_s": wall,
            "train_seconds": s["train_seconds"], "val_largest": s["val_score_largest"],
            "val_smallest": s["val_score_smallest"], "speedup_vs_cpu": cpu_seconds / wall}


def context(params: dict, device: str, threads: int = 2, **train):
    p = {**params, "device": device, "threads": threads}
    if train:
        p["cuda"] = {**(p.get("cuda") or {}), **train}
    return train_context(p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-steps", type=int, default=10)
    ap.add_argument("--gpu-steps", type=int, default=40)
    ap.add_argument("--candidates", type=int, default=20, help="search scoring: candidates timed")
    ap.add_argument("--full", action="store_true", help="also whole trainings on CUDA")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    ap.add_argument("--cuda", type=json.loads, default={},
                    help="JSON overrides of train_supernet.cuda (a recipe to try)")
    ap.add_argument("--also", type=json.loads, default=[],
                    help="--full: a JSON list of further cuda recipes to train with")
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of this script")
    ap.add_argument("--seed", type=int, default=None, help="another seed (base.seed)")
    ap.add_argument("--only-full", action="store_true", help="skip steps 1-3")
    ap.add_argument("--runs", default="gpu_recipe,default_recipe,gpu_recipe_bf16",
                    help="--full: which recipes train (and then --also's)")
    ap.add_argument("--cpu-train-s", type=float, default=float("nan"),
                    help="--only-full: the CPU's projected training seconds of an earlier run")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu: no CUDA device here (the CPU path is bench_supernet.py)")
    params = section(load_params(task="classification"), "train_supernet")
    params["cuda"] = {**(params.get("cuda") or {}), **args.cuda}
    if args.seed is not None:
        params["seed"] = args.seed
    dev = args.device
    out: dict = {"gpu": torch.cuda.get_device_name(0) if dev == "cuda" else None,
                 "torch": torch.__version__,
                 "cpu_count": os.cpu_count(), "load": os.getloadavg()[0]}

    def report(key: str, value) -> None:
        if callable(value):  # a measurement that fails is reported, and the rest goes on
            try:
                value = value()
            except Exception as err:  # noqa: BLE001
                value = {"error": f"{type(err).__name__}: {err}"}
        out[key] = value
        print(f"{key}: {value}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))

    cpu = context(params, "cpu")
    gpu_default = context(params, dev, **{k: params["train"][k] for k in
                                             ("epochs", "batch_size", "lr", "warmup_epochs")},
                          bf16=False)
    gpu = context(params, dev)
    gpu_bf16 = context(params, dev, bf16=True)
    report("gpu_recipe", {k: getattr(gpu.train, k) for k in
                          ("epochs", "batch_size", "lr", "warmup_epochs", "bf16")})
    steps = {name: c.train.epochs * len(c.loader("train", train=True))
             for name, c in (("default", cpu), ("gpu_recipe", gpu))}
    report("total_steps", steps)

    cpu_train_s = args.cpu_train_s  # --only-full: an earlier run's projection
    if not args.only_full:
        # 1. supernet steps
        report("sandwich_cpu_s", lambda: sandwich_seconds(cpu, args.cpu_steps))
        report("sandwich_cuda_default_s", lambda: sandwich_seconds(gpu_default, args.gpu_steps))
        report("sandwich_cuda_recipe_s", lambda: sandwich_seconds(gpu, args.gpu_steps))
        report("sandwich_cuda_recipe_bf16_s", lambda: sandwich_seconds(gpu_bf16, args.gpu_steps))
        torch.manual_seed(0)
        supernet = SuperNet(cpu.space, True)
        t0 = time.perf_counter()
        extremes_val_score(supernet, cpu)
        report("val_cpu_s", time.perf_counter() - t0)
        cpu_train_s = (steps["default"] * out["sandwich_cpu_s"]
                       + cpu.train.epochs * out["val_cpu_s"])
        report("train_cpu_projected_s", cpu_train_s)
        report("step_speedup_default_recipe",
               lambda: out["sandwich_cpu_s"] / out["sandwich_cuda_default_s"])
        report("cuda_step_profile", lambda: step_profile(gpu_default))

        # 2. from scratch: two one-thread CPU runs at once
        report("scratch_cpu_1thread_s",
               lambda: scratch_seconds(context(params, "cpu", threads=1), args.cpu_steps))
        report("scratch_cuda_s", lambda: scratch_seconds(gpu_default, args.gpu_steps))
        report("scratch_speedup",
               lambda: out["scratch_cpu_1thread_s"] / 2 / out["scratch_cuda_s"])

        # 3. search scoring
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "supernet.pt"
            torch.save(supernet_state(supernet), path)
            report("scoring_cpu_2workers_s",
                   lambda: scoring_seconds(cpu, path, args.candidates, 2))
            report("scoring_cuda_s", lambda: scoring_seconds(gpu, path, args.candidates, 1))
        report("scoring_speedup", lambda: out["scoring_cpu_2workers_s"] / out["scoring_cuda_s"])

    # 4. whole trainings on CUDA
    if args.full:
        cpu_run = json.loads(Path("results/classification/train_supernet/metrics.json").read_text())
        report("cpu_run_val", {"largest": cpu_run["val_score_largest"],
                               "smallest": cpu_run["val_score_smallest"],
                               "train_seconds_this_repo_machine": cpu_run["train_seconds"]})
        runs = {"gpu_recipe": gpu, "default_recipe": gpu_default, "gpu_recipe_bf16": gpu_bf16}
        runs = [(name, runs[name]) for name in args.runs.split(",") if name]
        runs += [(json.dumps(r), context(params, dev, **r)) for r in args.also]
        for name, c in runs:
            report(f"full_{name}", lambda c=c: full_training(c, cpu_train_s))


if __name__ == "__main__":
    main()
