"""Estimator throughput against the simulator, on the same batch of networks.

The estimator estimates the whole batch in one call (``Estimator.estimate``: decompose,
one LightGBM predict per kernel kind, memory from the graph, full records); the simulator
runs ``simulate_arch`` per network (its batched form, as ``hwnas simulate --arch -`` does).
Requirement (issue 3): at least 5,000 networks/s in one batched call.

    .venv/bin/python bench/bench_estimator.py [--networks 5000] [--estimator DIR]
"""
from __future__ import annotations

import argparse
import platform
import time


from hardware.spec import load_spec
from hwnas import layout
from hwnas.estimator import Estimator
from hwnas.estimator.scoring import heldout_networks
from hwnas.simulation import simulate_arch

SPACES = [{"resolution": 32, "in_channels": 1},
          {"resolution": 96, "in_channels": 3, "classes": 2, "stages": 224, "stem_stride": 2},
          {"resolution": 224, "in_channels": 3, "classes": 1000, "stages": 224, "stem_stride": 2}]


def best_of(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hardware", default="neural-engine-32")
    ap.add_argument("--estimator", default=None)
    ap.add_argument("--networks", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sim-networks", type=int, default=1000,
                    help="simulate this many of the batch (the rate is per network)")
    args = ap.parse_args()
    spec = load_spec(args.hardware)
    est = Estimator.load(args.estimator or layout.estimator_dir(spec.name), spec)
    archs, _ = heldout_networks(spec, SPACES, args.networks, seed=4242, with_references=False)
    kernels = len(est.kernel_frame(archs[:500])) / 500
    est.estimate(archs[:200])  # warm up
    t_est = best_of(lambda: est.estimate(archs), args.runs)
    t_lat = best_of(lambda: est.predict_latency(archs), args.runs)
    sim = archs[:args.sim_networks]
    t_sim = best_of(lambda: [simulate_arch(a, spec, per_kernel=False) for a in sim], 1)
    est_rate, lat_rate = len(archs) / t_est, len(archs) / t_lat
    sim_rate = len(sim) / t_sim
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"batch: {len(archs)} networks from curated+uncurated spaces at 32/96/224 px, "
          f"{kernels:.1f} kernels per network on average")
    print(f"estimator, estimate() records:     {est_rate:10,.0f} networks/s  ({t_est:.3f} s, best of {args.runs})")
    print(f"estimator, predict_latency() only: {lat_rate:10,.0f} networks/s  ({t_lat:.3f} s)")
    print(f"simulator, simulate_arch per net:  {sim_rate:10,.0f} networks/s  ({len(sim)} networks)")
    print(f"ratio estimator/simulator: {est_rate / sim_rate:.1f}x (records), {lat_rate / sim_rate:.1f}x (latency only)")
    print(f"requirement >= 5,000 networks/s in one batched call: "
          f"{'PASS' if est_rate >= 5000 else 'FAIL'} ({est_rate:,.0f}/s)")


if __name__ == "__main__":
    main()
