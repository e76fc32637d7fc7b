"""Microbenchmarks: measure sampled units on a backend and tabulate every raw repeat.

Backends:
- ``sim``: the analytic simulator with measurement noise on (one seeded draw per repeat);
  one row per fused kernel of the unit (the estimator's model key is the kernel kind).
- ``cpu``: this machine's CPU, timing the real PyTorch module of the unit (stem
  ``ConvBNAct``, ``IBN``/``FusedIBN``/``ConvBlock``, the task's head module) with warm-up,
  repeats and a fixed thread count; one row per unit (block kinds).

A second round samples neighbours of the units a first model gets most wrong
(nn-Meter's adaptive sampling). The table has one row per (sample, kernel, repeat),
with the named features and ``latency_ms``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from hardware.spec import HardwareSpec
from hwnas.arch import encode
from hwnas.errors import UserError
from hwnas.estimator.decompose import decompose, feature_names
from hwnas.estimator.sampling import (MAX_BLOCK_MACS, Sample, map_size, network_samples,
                                      neighbour, random_sample, space_configs, spaces_for)

BACKENDS = ("sim", "cpu")
GROUPING = {"sim": "kernel", "cpu": "block"}


def backend_arg(argv: list[str] | None, description: str | None) -> str:
    """``--backend sim|cpu`` from a command line (both estimator stages take it)."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--backend", choices=BACKENDS, default="sim")
    return ap.parse_args(argv).backend


class MicrobenchError(UserError):
    """A microbenchmark table or configuration that cannot be used."""


@dataclass
class MicrobenchConfig:
    backend: str = "sim"
    samples: int = 10_000          # at most this many units
    time_budget_s: float = 180.0   # stop sampling when this is spent
    repeats: int = 5
    noise: float = 0.03            # sim: relative measurement noise per repeat
    warmup: int = 2                # cpu: untimed calls first
    threads: int = 1               # cpu: torch.set_num_threads
    min_repeat_ms: float = 2.0     # cpu: one repeat loops the module for at least this long
    clock: str = "thread"          # cpu: thread CPU time (robust to other load) or wall
    network_share: float = 0.6     # round 1: share of units cut from space networks (rest random)
    neighbours: int = 2            # nearby shapes per network unit
    adaptive_share: float = 0.25   # share of the budget for the adaptive round
    adaptive_top: float = 0.2      # round-1 samples with the highest error to resample around
    calibration_networks: int = 0  # cpu: whole space networks timed to calibrate the unit sum
    max_block_macs: float = MAX_BLOCK_MACS  # random shapes: largest unit (MACs) worth measuring
    seed: int = 0
    spaces: list = field(default_factory=lambda: [{"resolution": 32, "in_channels": 1}])

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise MicrobenchError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.clock not in CLOCKS:
            raise MicrobenchError(f"clock must be one of {', '.join(CLOCKS)}, got {self.clock!r}")
        if self.samples < 1 or self.repeats < 1:
            raise MicrobenchError("samples and repeats must be at least 1")


# ---- measurement -------------------------------------------------------------


def measure_sim(samples: list[Sample], rows: pd.DataFrame, spec: HardwareSpec, repeats: int,
                noise: float, seed: int) -> np.ndarray:
    """Latency (ms) of each kernel row, per repeat, from the noisy simulator."""
    from hardware.graph import fuse
    from hardware.simulator import simulate_kernels
    from hwnas.lowering import to_graph

    out = np.empty((len(rows), repeats))
    nets, positions = rows["net"].to_numpy(), rows["position"].to_numpy()
    start = 0
    for i, s in enumerate(samples):
        end = start
        while end < len(nets) and nets[end] == i:
            end += 1
        graph = to_graph(s.arch)
        ks = fuse(graph, spec.fusion)  # once for all repeats (simulate_graph fuses per call)
        for r in range(repeats):
            res = simulate_kernels(graph, ks, spec, noise, seed=seed * 1_000_003 + i * repeats + r)
            for j in range(start, end):
                out[j, r] = res.kernels[positions[j]].latency_ms
        start = end
    return out


def unit_module(sample: Sample):
    """The PyTorch module of a sample's unit and its input shape (batch 1)."""
    from hwnas import tasks
    from hwnas.model import BLOCKS, ConvBNAct

    a = sample.arch
    if sample.role == "stem":
        return (ConvBNAct(a.input.channels, a.stem.out, a.stem.kernel, a.stem.stride),
                (1, a.input.channels, a.input.height, a.input.width))
    shape = (1, a.stem.out, a.input.height, a.input.width)  # the stub stem is 1x1, stride 1
    if sample.role == "head":  # its stub may stride (a decoder that upsamples): see sampling
        shape = (1, a.last_channels, *map_size(a))
        return tasks.torch_task(a.head.task).head_module(a.last_channels, a.head), shape
    block = a.blocks[sample.unit - 1]
    return BLOCKS[block.type](a.stem.out, block), shape


CLOCKS = {"thread": time.thread_time_ns, "wall": time.perf_counter_ns}


def time_module(module, shape, repeats: int, warmup: int = 2, min_repeat_ms: float = 2.0,
                clock: str = "thread") -> list[float]:
    """Milliseconds per call of ``module`` on a random input: ``repeats`` timed repeats,
    each looping the call enough times to last ``min_repeat_ms``.

    ``clock="thread"`` (the default) counts the CPU time of the calling thread, which with
    one intra-op thread is all of the inference's work, and is not inflated when other
    processes share the cores; ``"wall"`` is elapsed time."""
    import torch

    now = CLOCKS[clock]
    module.eval()
    x = torch.randn(*shape)
    with torch.inference_mode():
        t = now()
        module(x)
        per_call = now() - t
        for _ in range(warmup):
            t = now()
            module(x)
            per_call = min(per_call, now() - t)
        inner = max(1, int(min_repeat_ms * 1e6 / max(per_call, 100)))
        times = []
        for _ in range(repeats):
            t = now()
            for _ in range(inner):
                module(x)
            times.append((now() - t) / inner / 1e6)
    return times


def time_network(arch, repeats: int, warmup: int = 2, min_repeat_ms: float = 2.0,
                 clock: str = "thread") -> list[float]:
    """``time_module`` on the whole PyTorch network of ``arch`` (batch 1)."""
    from hwnas.model import build_model

    shape = (1, arch.input.channels, arch.input.height, arch.input.width)
    return time_module(build_model(arch), shape, repeats, warmup, min_repeat_ms, clock)


def measure_cpu(samples: list[Sample], rows: pd.DataFrame, repeats: int, warmup: int,
                min_repeat_ms: float, clock: str = "thread") -> np.ndarray:
    out = np.empty((len(rows), repeats))
    nets = rows["net"].to_numpy()
    for j, i in enumerate(nets):
        module, shape = unit_module(samples[i])
        out[j] = time_module(module, shape, repeats, warmup, min_repeat_ms, clock)
    return out


NETWORK_KIND = "network"  # rows timing a whole network (calibration), not a unit


def measure_networks(archs, cfg: MicrobenchConfig, first_id: int, progress=None) -> pd.DataFrame:
    """Whole PyTorch networks timed like the units: one row per network and repeat."""
    rows = []
    for n, a in enumerate(archs):
        times = time_network(a, cfg.repeats, cfg.warmup, cfg.min_repeat_ms, cfg.clock)
        rows += [{"sample": first_id + n, "round": 3, "source": "calibration", "arch": encode(a),
                  "role": -1, "kind": NETWORK_KIND, "kernel_index": 0, "repeat": r,
                  "latency_ms": t} for r, t in enumerate(times)]
        if progress:
            progress(0)
    return pd.DataFrame(rows)


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


# ---- running rounds ----------------------------------------------------------


def unit_rows(samples: list[Sample], spec: HardwareSpec | None, grouping: str) -> pd.DataFrame:
    """The feature rows of each sample's own unit (``net`` = sample index)."""
    df = decompose([s.arch for s in samples], spec, grouping)
    df["position"] = df.groupby("net").cumcount()
    target = np.array([s.unit for s in samples])
    return df[df["unit"].to_numpy() == target[df["net"].to_numpy()]].reset_index(drop=True)


def measure_units(samples: list[Sample], cfg: MicrobenchConfig, spec: HardwareSpec | None,
            first_id: int, round_no: int) -> pd.DataFrame:
    """Measure samples; long table with one row per (sample, kernel, repeat)."""
    grouping = GROUPING[cfg.backend]
    rows = unit_rows(samples, spec if grouping == "kernel" else None, grouping)
    rows["kind"] = rows["kind"].astype(str)
    if cfg.backend == "sim":
        lat = measure_sim(samples, rows, spec, cfg.repeats, cfg.noise, cfg.seed + first_id)
    else:
        lat = measure_cpu(samples, rows, cfg.repeats, cfg.warmup, cfg.min_repeat_ms, cfg.clock)
    nets = rows["net"].to_numpy()
    rows = rows.drop(columns=["net"])
    rows.insert(0, "sample", nets + first_id)
    rows.insert(1, "round", round_no)
    rows.insert(2, "source", [samples[i].source for i in nets])
    rows.insert(3, "arch", [encode(samples[i].arch) for i in nets])
    rows["kernel_index"] = rows.groupby("sample").cumcount()
    long = rows.loc[rows.index.repeat(cfg.repeats)].reset_index(drop=True)
    long["repeat"] = np.tile(np.arange(cfg.repeats), len(rows))
    long["latency_ms"] = lat.reshape(-1)
    return long


def _measure_within(samples: list[Sample], cfg, spec, first_id: int, round_no: int,
                    deadline: float, progress: Callable[[int], None] | None,
                    chunk: int) -> list[pd.DataFrame]:
    parts = []
    for lo in range(0, len(samples), chunk):
        if time.monotonic() > deadline:
            break
        batch = samples[lo:lo + chunk]
        parts.append(measure_units(batch, cfg, spec, first_id + lo, round_no))
        if progress:
            progress(len(batch))
    return parts


def adaptive_targets(table: pd.DataFrame, features: list[str], top: float, seed: int,
                     n_estimators: int = 150) -> np.ndarray:
    """Sample ids of round-1 units whose out-of-fold prediction error is highest."""
    from hwnas.estimator.model import LightGBMConfig, fit_models, predict_rows, training_frame

    frame = training_frame(table)
    ids = frame["sample"].unique()
    rng = np.random.default_rng(seed)
    fold = dict(zip(ids, rng.integers(2, size=len(ids))))
    f = frame["sample"].map(fold).to_numpy()
    pred = np.full(len(frame), np.nan)
    # One thread: OpenMP threads spinning on a shared, busy machine slow the fit badly.
    cfg = LightGBMConfig(n_estimators=n_estimators, seed=seed, num_threads=1)
    for k in (0, 1):
        models = fit_models(frame[f != k], features, cfg)
        test = frame[f == k]
        pred[f == k] = predict_rows(models, test, features)
    frame = frame.assign(pred=pred)
    unit = frame.groupby("sample")[["latency_ms", "pred"]].sum()
    err = (unit["pred"] / unit["latency_ms"] - 1).abs().fillna(np.inf)
    n = max(1, int(len(unit) * top))
    return err.sort_values(ascending=False).index[:n].to_numpy()


def run_microbench(cfg: MicrobenchConfig, spec: HardwareSpec | None,
                   progress: Callable[[int], None] | None = None,
                   log: Callable[[str], None] = lambda s: None) -> pd.DataFrame:
    """Both rounds within the sample and time budgets; returns the raw table."""
    if cfg.backend == "sim" and spec is None:
        raise MicrobenchError("the sim backend needs a hardware spec")
    if cfg.backend == "cpu":
        set_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    step = spec.parallelism if spec is not None else 32
    spaces = spaces_for(spec, space_configs(cfg.spaces))
    start = time.monotonic()
    n1 = max(1, round(cfg.samples * (1 - cfg.adaptive_share)))
    n_net = round(n1 * cfg.network_share)
    first = network_samples(n_net, spaces, rng, cfg.neighbours)
    first += [random_sample(rng, step, cfg.max_block_macs) for _ in range(n1 - n_net)]
    order = rng.permutation(len(first))  # a time-cut round keeps the same mix
    first = [first[i] for i in order]
    chunk = 500 if cfg.backend == "sim" else 20
    deadline1 = start + cfg.time_budget_s * (1 - cfg.adaptive_share)
    parts = _measure_within(first, cfg, spec, 0, 1, deadline1, progress, chunk)
    if not parts:
        raise MicrobenchError("time budget spent before any sample was measured")
    table = pd.concat(parts, ignore_index=True)
    done = table["sample"].nunique()
    log(f"round 1: {done} units, {len(table)} rows in {time.monotonic() - start:.1f} s")
    if cfg.calibration_networks and cfg.backend == "cpu":  # inside the time budget
        nets = [spaces[i % len(spaces)].sample(rng) for i in range(cfg.calibration_networks)]
        first_id = len(first) + cfg.samples  # ids past any round-2 sample
        table = pd.concat([table, measure_networks(nets, cfg, first_id, progress)],
                          ignore_index=True)
        log(f"calibration: {len(nets)} whole networks")
    n2 = cfg.samples - done
    if n2 > 0 and cfg.adaptive_share > 0 and done >= 20:
        features = feature_names(spec if GROUPING[cfg.backend] == "kernel" else None)
        worst = adaptive_targets(table[table["kind"] != NETWORK_KIND], features,
                                 cfg.adaptive_top, cfg.seed)
        by_id = {i: s for i, s in zip(range(len(first)), first)}
        second = [neighbour(by_id[int(worst[i % len(worst)])], rng, "adaptive", cfg.max_block_macs)
                  for i in range(n2)]
        deadline2 = start + cfg.time_budget_s
        parts2 = _measure_within(second, cfg, spec, len(first), 2, deadline2, progress, chunk)
        if parts2:
            table = pd.concat([table, *parts2], ignore_index=True)
        log(f"round 2 (adaptive around {len(worst)} worst units): "
            f"{sum(p['sample'].nunique() for p in parts2)} units")
    table["role"] = table["role"].map({0: "stem", 1: "block", 2: "head", -1: "network"})
    table["backend"] = cfg.backend
    return table


REQUIRED_COLUMNS = {"sample": "number", "kind": "text", "latency_ms": "number",
                    "kernel_index": "number"}


def read_table(path) -> pd.DataFrame:
    """Read a microbenchmark parquet table; a clear error naming it if it cannot be used."""
    from hwnas.files import read_table as read_checked

    return read_checked(path, REQUIRED_COLUMNS, "microbenchmark table not found (run "
                        "`hwnas microbench` or `dvc repro microbench`)", MicrobenchError)
