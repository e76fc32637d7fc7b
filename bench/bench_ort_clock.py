"""Which clock the ONNX Runtime protocol should use: each network of a set is timed twice
(two pinned processes, one after the other) with the thread's CPU time and with the wall
clock, on a quiet machine and while busy processes hold every core. The share of networks
whose two rounds agree within 5% / 10% is the clock's repeatability.

    .venv/bin/python bench/bench_ort_clock.py [--networks 40]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _spin(stop) -> None:
    x = 0
    while not stop.is_set():
        x += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--networks", type=int, default=40)
    args = ap.parse_args()

    import yaml

    from hardware.spec import load_spec
    from hwnas.estimator.microbench import network_module
    from hwnas.estimator.onnxrt import Protocol, Timer, export, summary
    from hwnas.estimator.sampling import space_configs, spaces_for

    params = yaml.safe_load(open("params.yaml"))
    spaces = spaces_for(load_spec(params["base"]["hardware"]),
                        space_configs(params["train_estimator"]["spaces"]))
    rng = np.random.default_rng(7)
    archs = [spaces[i % len(spaces)].sample(rng) for i in range(args.networks)]
    with tempfile.TemporaryDirectory() as tmp:
        paths = [export(*network_module(a), Path(tmp) / f"{i}.onnx") for i, a in enumerate(archs)]
        print(f"{len(paths)} networks at {sorted({a.input.height for a in archs})} px; "
              f"load average {os.getloadavg()[0]:.2f}")
        print("| machine | clock | within ±5% | within ±10% | median difference |")
        print("| --- | --- | --- | --- | --- |")
        for busy in (False, True):
            stop = mp.Event()
            spinners = [mp.Process(target=_spin, args=(stop,)) for _ in range(os.cpu_count() if busy else 0)]
            for p in spinners:
                p.start()
            time.sleep(1 if busy else 0)
            for clock in ("thread", "wall"):
                rounds = []
                for r in range(2):
                    with Timer(Protocol(repeats=5, warmup=2, min_repeat_ms=5.0, clock=clock)) as t:
                        rounds.append(summary(t.time_files(paths, seed=r)))
                rel = np.abs(rounds[1] / rounds[0] - 1)
                print(f"| {'busy (' + str(len(spinners)) + ' spinning processes)' if busy else 'quiet'} "
                      f"| {clock} | {np.mean(rel <= 0.05):.1%} | {np.mean(rel <= 0.10):.1%} "
                      f"| {np.median(rel):.1%} |", flush=True)
            stop.set()
            for p in spinners:
                p.join()


if __name__ == "__main__":
    main()
