"""Is "equal accuracy" more than one lucky seed? The chosen latency and memory models and
the baseline, each trained from scratch with the baseline's budget for several seeds.

Run (repo root, after ``hwnas run``):  .venv/bin/python bench/bench_seeds.py [--seeds 3]

Seed ``s`` draws the initialization and batch order; data splits stay fixed. Prints each
seed's test accuracy, the mean difference to the baseline and its paired standard error.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the stages do

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root
from hwnas.arch import decode  # noqa: E402
from hwnas.params import load_params, section  # noqa: E402
from stages.baseline import budget_epochs  # noqa: E402
from stages.eval_supernet import scratch_accuracy  # noqa: E402
from stages.train_supernet import setup  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    params = load_params()
    metrics = json.loads(Path("results/evaluate/metrics.json").read_text())
    archs = {"baseline": metrics["baseline_arch"], "latency": metrics["arch"],
             "memory": metrics["memory_model"]["arch"]}
    s = setup(section(params, "train_supernet"))
    epochs, _ = budget_epochs(params)
    s.train = replace(s.train, epochs=epochs)
    acc = {name: [] for name in archs}
    for seed in range(args.seeds):
        for name, arch in archs.items():
            acc[name].append(scratch_accuracy(decode(arch), s, "test", params["base"]["seed"] + seed))
        print(f"seed {seed}: " + ", ".join(f"{n} {a[-1]:.1f}" for n, a in acc.items()), flush=True)
    base = np.array(acc["baseline"])
    for name in ("latency", "memory"):
        d = np.array(acc[name]) - base
        se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
        print(f"{name}: mean {np.mean(acc[name]):.2f} vs baseline {base.mean():.2f}: "
              f"{d.mean():+.2f} points (paired SE {se:.2f}) over {len(d)} seeds, {epochs} epochs each")


if __name__ == "__main__":
    main()
