"""Supernet training cost against training the largest subnet alone.

Run (repo root):  .venv/bin/python bench/bench_supernet.py [--steps 12] [--full]

Times one sandwich step (largest + smallest + ``num_random`` random subnets, in-place
distillation) against one plain step of the largest subnet as a standalone model,
interleaved batch by batch so that load from other jobs hits both alike, with the
default ``train_supernet`` params (MNIST-5k at 32x32). An epoch is a fixed number of
steps for both, so the ratio of mean step times is the ratio of epoch times. The issue
asks for at most 3x. ``--full`` also runs the whole default training (all epochs,
with per-epoch BN recalibration and validation, checkpoints in a temp dir) and
reports its wall time against the 8-minute budget.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import hwnas  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root
from hwnas.lowering import static_cost  # noqa: E402
from hwnas.model import build_model  # noqa: E402
from hwnas.params import load_params, section  # noqa: E402
from hwnas.supernet import SuperNet  # noqa: E402
from hwnas.training import make_optimizer, sandwich_archs, sandwich_step, train_step  # noqa: E402
from hwnas.context import train_context as setup  # noqa: E402
from hwnas.training import train_supernet as train  # noqa: E402

MAX_RATIO, BUDGET_S = 3.0, 8 * 60


def step_ratio(s, steps: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    supernet = SuperNet(s.space, s.params.get("kernel_transform", True)).to(s.device)
    # channels-last like the stage's models (see hwnas.supernet.to_channels_last)
    largest = build_model(supernet.largest()).to(s.device).to(memory_format=torch.channels_last)
    opt_s, opt_l = make_optimizer(supernet, s.train), make_optimizer(largest, s.train)
    rng = np.random.default_rng(seed)
    loader = s.loader("train", train=True, seed=seed)
    batches = iter(loader)
    sync = torch.cuda.synchronize if s.device.type == "cuda" else (lambda: None)
    t_s, t_l = [], []
    for i in range(steps + 1):  # the first step of each warms up and is not counted
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        archs = sandwich_archs(supernet, rng, s.train.num_random, i, s.train.extremes)
        sync(), (t0 := time.perf_counter())
        sandwich_step(supernet, x, y, archs, opt_s, s.train)
        sync(), (t1 := time.perf_counter())
        train_step(largest, x, y, opt_l, s.train)
        sync(), (t2 := time.perf_counter())
        if i:
            t_s.append(t1 - t0)
            t_l.append(t2 - t1)
    n = len(loader)
    return {"steps_per_epoch": n, "sandwich_s": float(np.mean(t_s)), "largest_s": float(np.mean(t_l)),
            "ratio_mean": float(np.mean(t_s) / np.mean(t_l)),
            "ratio_median": float(np.median(t_s) / np.median(t_l)),
            "epoch_supernet_s": float(np.mean(t_s)) * n, "epoch_largest_s": float(np.mean(t_l)) * n,
            "largest_mmacs": static_cost(supernet.largest()).macs / 1e6,
            "smallest_mmacs": static_cost(supernet.smallest()).macs / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12, help="interleaved steps to time")
    ap.add_argument("--full", action="store_true", help="also run the whole default training")
    ap.add_argument("--epochs", type=int, default=None, help="override epochs for --full")
    args = ap.parse_args()
    p = section(load_params(), "train_supernet")
    if args.epochs:
        p = {**p, "train": {**p["train"], "epochs": args.epochs}}
    s = setup(p)
    print(f"threads={torch.get_num_threads()} device={s.device} OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY')} load={os.getloadavg()[0]:.1f}")
    r = step_ratio(s, args.steps, p["seed"])
    print(f"largest subnet {r['largest_mmacs']:.1f} MMACs, smallest {r['smallest_mmacs']:.2f} MMACs; "
          f"sandwich = largest + smallest + {s.train.num_random} random, extremes "
          f"{s.train.extremes!r}")
    print(f"step: sandwich {r['sandwich_s']:.3f} s, largest alone {r['largest_s']:.3f} s "
          f"(mean of {args.steps} interleaved steps)")
    print(f"epoch ({r['steps_per_epoch']} steps): supernet {r['epoch_supernet_s']:.1f} s, "
          f"largest alone {r['epoch_largest_s']:.1f} s")
    print(f"ratio supernet/largest epoch: {r['ratio_mean']:.2f}x (median-based {r['ratio_median']:.2f}x)"
          f" -> {'PASS' if r['ratio_mean'] <= MAX_RATIO else 'FAIL'} (<= {MAX_RATIO:g}x)")
    if args.full:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            _, summary = train(s, Path(tmp) / "last.pt", progress=False)
            wall = time.perf_counter() - t0
        print(f"full training: {s.train.epochs} epochs in {wall:.0f} s wall "
              f"(training loop {summary['train_seconds']:.0f} s), val acc largest "
              f"{summary['val_score_largest']:.1f}% smallest {summary['val_score_smallest']:.1f}% "
              f"load={os.getloadavg()[0]:.1f} -> {'PASS' if wall <= BUDGET_S else 'FAIL'} "
              f"(<= {BUDGET_S} s)")


if __name__ == "__main__":
    main()
