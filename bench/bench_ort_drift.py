"""How far this machine drifts between the microbenchmarks and a later timing (the stage
``train_estimator`` reports it too, as ``retest_later``, from one round): the whole
networks a microbench table calibrated on (``kind == "network"``) timed again now, as the
held-out networks are (``hwnas.estimator.scoring.truth_measured``: two rounds, each in its own
pinned process). Prints the two new rounds' agreement (the test-retest the estimator's metrics
report) beside the agreement of the new timing with the table's (the same networks, minutes
or hours apart): the second is the repeatability an estimator trained on the table can hope for.

    .venv/bin/python bench/bench_ort_drift.py data/microbench/onnxruntime.parquet [--networks 120]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np


def agreement(a: np.ndarray, b: np.ndarray) -> str:
    rel = b / a - 1
    return (f"{100 * np.mean(np.abs(rel) <= 0.05):.1f}% | {100 * np.mean(np.abs(rel) <= 0.10):.1f}% | "
            f"{100 * np.median(rel):+.1f}% | {100 * np.std(np.log(b / a)):.1f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("table")
    ap.add_argument("--networks", type=int, default=120)
    args = ap.parse_args()

    import pandas as pd

    from hwnas.arch import parse_arch
    from hwnas.estimator.onnxrt import Protocol
    from hwnas.estimator.scoring import rounds_mean, table_networks, truth_measured

    then = table_networks(pd.read_parquet(args.table)).iloc[:args.networks]
    archs = [parse_arch(a) for a in then.index]
    start = time.time()
    load = os.getloadavg()[0]
    rounds = truth_measured(archs, Protocol(repeats=5, warmup=2, min_repeat_ms=5.0))
    now = rounds_mean(rounds)
    age = (start - os.path.getmtime(args.table)) / 60
    print(f"{len(archs)} networks of {args.table} (written {age:.0f} min before), timed again "
          f"in {time.time() - start:.0f} s; load average {load:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")
    print("| comparison | within ±5% | within ±10% | median change | sd of log ratio |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| round 2 against round 1 (back to back) | {agreement(rounds[0], rounds[1])} |")
    print(f"| now against the table | {agreement(then.to_numpy(), now)} |")


if __name__ == "__main__":  # the timer's process is spawned
    main()
