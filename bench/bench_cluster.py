"""The search's candidate scoring on a real Dask cluster: 2 workers against 1.

Run (repo root, after the classification pipeline):
    .venv/bin/python bench/bench_cluster.py [--candidates 60]

Starts ``dask scheduler`` and one-thread ``dask worker`` processes on 127.0.0.1 (as the
tests do), scores the same random candidates of the default space on the pipeline's
supernet (``hwnas.search.objectives.ParallelSupernetScore``, BN recalibration on 256
training images, 500 val images) with 1 worker, then with 2, and prints the time ratio
(the issue asks for at most 0.6x) and whether the scores are the same as in local
processes. The supernet and the data go to each worker once (a worker plugin), before
the clock starts.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.reaper import stop  # noqa: E402


def _dask(*args: str) -> subprocess.Popen:
    return subprocess.Popen([str(Path(sys.executable).parent / "dask"), *args], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def timed_scoring(archs, calib, val, workers: int) -> tuple[float, list[float]]:
    from hwnas import layout
    from hwnas.search.objectives import ParallelSupernetScore

    score = ParallelSupernetScore(layout.SUPERNET, calib, val, workers)
    try:
        score(archs[:workers])  # every worker set up and warm
        t0 = time.perf_counter()
        scores = score(archs[workers:])
        return time.perf_counter() - t0, scores
    finally:
        score.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=60)
    args = ap.parse_args()
    os.chdir(ROOT)
    from distributed import Client

    from hwnas.params import load_params
    from hwnas.search.run import load_search_context

    ctx = load_search_context(load_params(task="classification"))
    rng = np.random.default_rng(0)
    archs = [ctx.space.sample(rng) for _ in range(args.candidates + 2)]
    os.environ.pop("HWNAS_CLUSTER", None)
    local_s, local = timed_scoring(archs, ctx.calib, ctx.val, 2)
    print(f"local processes x2: {local_s:.1f} s for {args.candidates} candidates "
          f"(load {os.getloadavg()[0]:.1f})")
    times = {}
    for n in (1, 2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        address = f"tcp://127.0.0.1:{port}"
        procs = [_dask("scheduler", "--host", "127.0.0.1", "--port", str(port),
                       "--no-dashboard")]
        try:
            procs += [_dask("worker", address, "--nthreads", "1", "--no-dashboard",
                            "--memory-limit", "0") for _ in range(n)]
            with Client(address, timeout="60s", set_as_default=False) as client:
                client.wait_for_workers(n, timeout=120)
            os.environ["HWNAS_CLUSTER"] = address
            # warm-up on the first n, the clock on the same candidates as local's
            times[n], scores = timed_scoring(archs[2 - n:], ctx.calib, ctx.val, n)
            same = scores == local
            print(f"Dask cluster, {n} worker(s): {times[n]:.1f} s, scores "
                  f"{'the same as local' if same else 'DIFFERENT from local'} "
                  f"(load {os.getloadavg()[0]:.1f})")
        finally:
            os.environ.pop("HWNAS_CLUSTER", None)
            for p in reversed(procs):
                stop(p)
    ratio = times[2] / times[1]
    print(f"2 workers / 1 worker: {ratio:.2f}x -> {'PASS' if ratio <= 0.6 else 'FAIL'} (<= 0.6x)")


if __name__ == "__main__":
    main()
