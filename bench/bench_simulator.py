"""Kernel simulations per second on one core, against SCALE-Sim 3.0 on the same layers.

Run (repo root):  taskset -c 0 .venv/bin/python bench/bench_simulator.py   (or `make bench`)
The script also pins itself to one core. The issue asks for at least
10,000 kernel simulations per second on one core: the last line says PASS or FAIL.
"""
from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from pathlib import Path

from hardware.graph import Op
from hardware.simulator import simulate_op
from hardware.spec import load_spec
from hwnas.lowering import kernels
from hwnas.simulation import simulate_arch
from hwnas.registry import REFERENCES, reference

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests/
from tests.test_scalesim import scalesim_compute_cycles, scalesim_full_run  # noqa: E402

REQUIRED_PER_S = 10_000
SPEC = load_spec("neural-engine-32")


def op_mix(n: int = 600, seed: int = 0) -> list[Op]:
    """Varied ops in the shapes networks use: dense convs dominate, as in real models."""
    rng = random.Random(seed)
    kinds = ["conv"] * 5 + ["depthwise"] * 2 + ["fc", "add", "pool"]
    ops = []
    for i in range(n):
        kind, size = rng.choice(kinds), rng.choice((7, 8, 14, 16, 28, 32, 56, 112))
        c_in, c_out = rng.randrange(8, 321, 8), rng.randrange(8, 321, 8)
        if kind in ("depthwise", "add"):
            c_out = c_in
        kernel = rng.choice((1, 3, 5)) if kind in ("conv", "depthwise") else 1
        stride = rng.choice((1, 2)) if kind in ("conv", "depthwise") else 1
        ops.append(Op(f"op{i}", kind, size, size, c_in, c_out, kernel, stride))
    return ops


def per_second(fn, items: int, min_seconds: float = 1.0) -> float:
    """Items per second of ``fn()`` (which handles ``items`` items), over at least min_seconds."""
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds:
        fn()
        calls += 1
    return calls * items / elapsed


def simulate_all(ops: list[Op]) -> None:
    for op in ops:
        simulate_op(op, SPEC)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> int:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, whatever taskset says
    ops = op_mix()
    mix_rate = per_second(lambda: simulate_all(ops), len(ops))
    print(f"simulate_op, {len(ops)} varied ops: {mix_rate:,.0f} kernels/s")

    net_rates = []
    for name in REFERENCES:
        arch = reference(name)
        n_kernels = len(kernels(arch, SPEC))
        rate = per_second(lambda: simulate_arch(arch, SPEC, per_kernel=False), n_kernels, 0.5)
        net_rates.append(rate)
        print(f"simulate_arch {name:<22} {n_kernels:3d} kernels: {rate:,.0f} kernels/s "
              f"({1e3 * n_kernels / rate:.2f} ms per network)")

    # SCALE-Sim on the mix's small dense layers (its compute-only path takes seconds on an
    # ImageNet-size layer); ours on exactly the same layers.
    dense = [op for op in ops if op.kind in ("conv", "fc") and op.in_h <= 16][:12]
    ours_s = 1 / per_second(lambda: simulate_all(dense), len(dense))
    with tempfile.TemporaryDirectory() as tmp:
        cycles, seconds = timed(lambda: scalesim_compute_cycles(dense, Path(tmp) / "c"))
        compute_s = seconds / len(dense)
        small = sorted(dense, key=lambda op: op.macs)[:2]
        _, seconds = timed(lambda: scalesim_full_run(small, Path(tmp) / "f"))
        full_s = seconds / len(small)
        ours_small_s = 1 / per_second(lambda: simulate_all(small), len(small))
    match = cycles == [simulate_op(op, SPEC).compute_cycles for op in dense]
    print(f"same {len(dense)} dense layers: ours {1e6 * ours_s:.1f} us/layer, SCALE-Sim "
          f"compute-only {1e3 * compute_s:.1f} ms/layer (compute cycles equal: {match})")
    print(f"SCALE-Sim full run_scale on {len(small)} small layers: {1e3 * full_s:.0f} ms/layer "
          f"(ours {1e6 * ours_small_s:.1f} us/layer)")
    print(f"ours is {compute_s / ours_s:,.0f}x faster than SCALE-Sim compute-only, "
          f"{full_s / ours_small_s:,.0f}x faster than full")

    worst = min([mix_rate, *net_rates])
    verdict = "PASS" if worst >= REQUIRED_PER_S and match else "FAIL"
    print(f"{verdict}: slowest {worst:,.0f} kernel simulations/s on one core "
          f"(required {REQUIRED_PER_S:,})")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
