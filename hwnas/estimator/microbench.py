"""Microbenchmarks: measure sampled units on a backend and tabulate every raw repeat.

Backends:
- ``sim``: the analytic simulator with measurement noise on (one seeded draw per repeat);
  one row per fused kernel of the unit (the estimator's model key is the kernel kind).
- ``onnxruntime``: this machine's CPU through ONNX Runtime: the real PyTorch module of the
  unit (stem ``ConvBNAct``, ``IBN``/``FusedIBN``/``ConvBlock``, the task's head module)
  exported to ONNX and timed by ``hwnas.estimator.onnxrt``'s protocol; one row per unit
  (block kinds), plus whole networks that calibrate the sum of units.

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
from hwnas.estimator.decompose import GROUPING, decompose, feature_names
from hwnas.estimator.onnxrt import CLOCKS, Protocol
from hwnas.estimator.sampling import (MAX_BLOCK_MACS, Sample, map_size, network_samples,
                                      neighbour, random_sample, space_configs, spaces_for,
                                      unit_of, whole_network_samples)

BACKENDS = ("sim", "onnxruntime")
UNIT_TIMINGS = ("profiled", "isolated")


def stage_target(argv: list[str] | None, description: str | None, params: dict, name: str):
    """What an estimator stage works on: ``(backend, section, spec, target)``. The backend is
    ``--backend`` on the command line (``microbench_host@onnxruntime``), else the one that
    ``base.hardware``'s spec is measured by, else the simulator."""
    import argparse

    from hardware.spec import load_spec
    from hwnas import layout
    from hwnas.params import backend_section

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--backend", choices=BACKENDS, default=None)
    spec = load_spec(params["base"]["hardware"])
    backend = resolve_backend(spec, ap.parse_args(argv).backend)
    return (backend, backend_section(params, name, backend), spec,
            layout.target_name(backend, spec.name))


def resolve_backend(spec: HardwareSpec, backend: str | None, where: str = "--backend") -> str:
    """``backend`` (named by ``where``), or by default the one ``spec`` is measured by, else
    the simulator. A measured spec takes no other: its tables and estimator are named after it."""
    if backend not in (None, *BACKENDS):
        raise MicrobenchError(f"{where} {backend}: not a backend (known: {', '.join(BACKENDS)})")
    if spec.measured_by and backend not in (None, spec.measured_by):
        raise MicrobenchError(f"{where} {backend}: {spec.name} is measured by "
                              f"{spec.measured_by}, not simulated")
    return backend or spec.measured_by or "sim"


class MicrobenchError(UserError):
    """A microbenchmark table or configuration that cannot be used."""


@dataclass
class MicrobenchConfig:
    backend: str = "sim"
    samples: int = 10_000          # at most this many units
    time_budget_s: float = 180.0   # stop sampling when this is spent
    repeats: int = 5
    noise: float = 0.03            # sim: relative measurement noise per repeat
    warmup: int = 2                # measured: untimed calls first
    min_repeat_ms: float = 2.0     # measured: one repeat loops the model for at least this long
    clock: str = "thread"          # measured: thread CPU time (robust to other load) or wall
    units: str = "profiled"        # measured: a unit's nodes in a profiled run of its small
                                   # network (as the runtime executes it), or "isolated"
    network_share: float = 0.6     # round 1: share of units cut from space networks (rest random)
    neighbours: int = 2            # nearby shapes per network unit
    adaptive_share: float = 0.25   # share of the budget for the adaptive round
    adaptive_top: float = 0.2      # round-1 samples with the highest error to resample around
    calibration_networks: int = 0  # measured: whole networks timed to calibrate the unit sum
    max_block_macs: float = MAX_BLOCK_MACS  # random shapes: largest unit (MACs) worth measuring
    seed: int = 0
    spaces: list = field(default_factory=lambda: [{"resolution": 32, "in_channels": 1}])

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise MicrobenchError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.units not in UNIT_TIMINGS:
            raise MicrobenchError(f"units must be one of {', '.join(UNIT_TIMINGS)}, got {self.units!r}")
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


NETWORK_KIND = "network"  # rows timing a whole network (calibration), not a unit


def network_module(arch):
    """The whole PyTorch network of ``arch`` and its input shape (batch 1)."""
    from hwnas.model import build_model

    return build_model(arch), (1, arch.input.channels, arch.input.height, arch.input.width)


def measure_networks(archs, timer, first_id: int, chunk: int = 20) -> pd.DataFrame:
    """Whole networks timed like the units: one row per network and repeat."""
    times = []
    for lo in range(0, len(archs), chunk):
        part = archs[lo:lo + chunk]
        times += list(timer.time_modules([network_module(a) for a in part], seed=first_id + lo))
    return network_table(archs, times, first_id)


def network_table(archs, lat: list[np.ndarray], first_id: int) -> pd.DataFrame:
    """Whole-network timings (one array of repeats per network) as calibration rows."""
    return pd.DataFrame([{"sample": first_id + n, "round": 3, "source": "calibration",
                          "arch": encode(a), "role": -1, "kind": NETWORK_KIND,
                          "kernel_index": 0, "repeat": r, "latency_ms": float(t)}
                         for n, (a, ts) in enumerate(zip(archs, lat)) for r, t in enumerate(ts)])


def protocol(cfg) -> Protocol:
    """The ONNX Runtime timing protocol of a microbench or evaluation config (or mapping)."""
    get = cfg.__getitem__ if isinstance(cfg, dict) else cfg.__getattribute__
    return Protocol(get("repeats"), get("warmup"), get("min_repeat_ms"), get("clock"))


# ---- running rounds ----------------------------------------------------------


def unit_rows(samples: list[Sample], spec: HardwareSpec | None, grouping: str) -> pd.DataFrame:
    """The feature rows of each sample's own unit (``net`` = sample index)."""
    df = decompose([s.arch for s in samples], spec, grouping)
    df["position"] = df.groupby("net").cumcount()
    target = np.array([s.unit for s in samples])
    return df[df["unit"].to_numpy() == target[df["net"].to_numpy()]].reset_index(drop=True)


def measure_units(samples: list[Sample], cfg: MicrobenchConfig, spec: HardwareSpec | None,
                  first_id: int, round_no: int, timer=None) -> pd.DataFrame:
    """Measure samples; long table with one row per (sample, kernel, repeat)."""
    grouping = GROUPING[cfg.backend]
    rows = unit_rows(samples, spec if grouping == "kernel" else None, grouping)
    if cfg.backend == "sim":
        lat = measure_sim(samples, rows, spec, cfg.repeats, cfg.noise, cfg.seed + first_id)
    elif cfg.units == "isolated":  # one row per unit: its sample's timings
        lat = timer.time_modules([unit_module(s) for s in samples], seed=cfg.seed + first_id)
        lat = lat[rows["net"].to_numpy()]
    else:
        lat = profiled_units(samples, timer, cfg.seed + first_id)[rows["net"].to_numpy()]
        timed = np.isfinite(lat).all(axis=1)  # a unit the runtime optimized away has no node
        rows, lat = rows[timed].reset_index(drop=True), lat[timed]
    return long_table(rows, samples, list(lat), first_id, round_no)


def profiled_units(samples: list[Sample], timer, seed: int) -> np.ndarray:
    """Each sample's small network run under the profiler; its unit's time is the sum of
    the nodes the unit owns (``(n, repeats)``, NaN where it owns none)."""
    from hwnas.estimator.onnxrt import node_unit

    archs = list({id(s.arch): s.arch for s in samples}.values())  # a whole network once
    profiles = timer.profile_modules([network_module(a) for a in archs], seed=seed)
    by_arch = {id(a): p for a, p in zip(archs, profiles)}
    out = np.full((len(samples), timer.protocol.repeats), np.nan)
    for i, s in enumerate(samples):
        nodes = by_arch[id(s.arch)]
        own = [v for k, v in nodes.items() if node_unit(k, len(s.arch.blocks)) == s.unit]
        if own:
            out[i] = np.sum(own, axis=0)
    return out


def long_table(rows: pd.DataFrame, samples: list[Sample], lat: list[np.ndarray],
               first_id: int, round_no: int) -> pd.DataFrame:
    """``unit_rows`` with their timings (one array of repeats per row): one table row per
    (sample, kernel, repeat), samples numbered from ``first_id``."""
    nets = rows["net"].to_numpy()
    rows = rows.drop(columns=["net"])
    rows["kind"] = rows["kind"].astype(str)
    rows.insert(0, "sample", nets + first_id)
    rows.insert(1, "round", round_no)
    rows.insert(2, "source", [samples[i].source for i in nets])
    rows.insert(3, "arch", [encode(samples[i].arch) for i in nets])
    rows["kernel_index"] = rows.groupby("sample").cumcount()
    counts = [len(x) for x in lat]
    long = rows.loc[rows.index.repeat(counts)].reset_index(drop=True)
    long["repeat"] = np.concatenate([np.arange(c) for c in counts])
    long["latency_ms"] = np.concatenate(lat)
    return long


def _measure_within(samples: list[Sample], cfg, spec, first_id: int, round_no: int,
                    deadline: float, progress: Callable[[int], None] | None,
                    chunk: int, timer) -> list[pd.DataFrame]:
    parts = []
    for lo in range(0, len(samples), chunk):
        if time.monotonic() > deadline:
            break
        batch = samples[lo:lo + chunk]
        parts.append(measure_units(batch, cfg, spec, first_id + lo, round_no, timer))
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
    from contextlib import nullcontext

    from hwnas.estimator.onnxrt import Timer

    if cfg.backend == "sim" and spec is None:
        raise MicrobenchError("the sim backend needs a hardware spec")
    with Timer(protocol(cfg)) if cfg.backend != "sim" else nullcontext() as timer:
        table = _rounds(cfg, spec, timer, progress, log)
    table["role"] = table["role"].map({0: "stem", 1: "block", 2: "head", -1: "network"})
    table["backend"] = cfg.backend
    return table


def _sample(cfg: MicrobenchConfig, spec: HardwareSpec | None, n: int, rng) -> list[Sample]:
    """``n`` units: cut from space networks (with neighbours) and random shapes, shuffled."""
    step = spec.parallelism if spec is not None else 32
    n_net = round(n * cfg.network_share)
    spaces = spaces_for(spec, space_configs(cfg.spaces))
    whole = cfg.backend != "sim" and cfg.units == "profiled"  # networks kept whole
    units = (whole_network_samples(n_net, spaces, rng) if whole
             else network_samples(n_net, spaces, rng, cfg.neighbours))
    random = [random_sample(rng, step, cfg.max_block_macs) for _ in range(n - n_net)]
    if whole:
        return _interleave(units, random, rng)
    units += random
    return [units[i] for i in rng.permutation(len(units))]  # a time-cut round keeps the mix


def _interleave(nets: list[Sample], random: list[Sample], rng) -> list[Sample]:
    """Random units spread among whole networks' (consecutive) units, so a time-cut round
    keeps the mix and a network's units stay together."""
    where = np.sort(rng.integers(0, len(nets) + 1, size=len(random)))
    out, j = [], 0
    for i, s in enumerate(nets):
        while j < len(random) and where[j] <= i:
            out.append(random[j])
            j += 1
        out.append(s)
    return out + random[j:]


def first_round(cfg: MicrobenchConfig, spec: HardwareSpec | None, n: int):
    """A plan for another device: ``n`` units as round 1 samples them, each in its own
    small network (a device team times exported units, it may not profile), and the whole
    networks that calibrate their sum."""
    from dataclasses import replace

    rng = np.random.default_rng(cfg.seed)
    units = _sample(replace(cfg, units="isolated"), spec, n, rng)
    spaces = spaces_for(spec, space_configs(cfg.spaces))
    return units, [spaces[i % len(spaces)].sample(rng) for i in range(cfg.calibration_networks)]


def _rounds(cfg: MicrobenchConfig, spec: HardwareSpec | None, timer,
            progress: Callable[[int], None] | None, log: Callable[[str], None]) -> pd.DataFrame:
    rng = np.random.default_rng(cfg.seed)
    spaces = spaces_for(spec, space_configs(cfg.spaces))
    start = time.monotonic()
    n1 = max(1, round(cfg.samples * (1 - cfg.adaptive_share)))
    first = _sample(cfg, spec, n1, rng)
    chunk = 500 if cfg.backend == "sim" else 60  # measured: interleaved within a chunk
    deadline1 = start + cfg.time_budget_s * (1 - cfg.adaptive_share)
    parts = _measure_within(first, cfg, spec, 0, 1, deadline1, progress, chunk, timer)
    if not parts:
        raise MicrobenchError("time budget spent before any sample was measured")
    table = pd.concat(parts, ignore_index=True)
    done = table["sample"].nunique()
    log(f"round 1: {done} units, {len(table)} rows in {time.monotonic() - start:.1f} s")
    if cfg.calibration_networks and timer is not None:  # inside the time budget
        nets = [spaces[i % len(spaces)].sample(rng) for i in range(cfg.calibration_networks)]
        first_id = len(first) + cfg.samples  # ids past any round-2 sample
        table = pd.concat([table, measure_networks(nets, timer, first_id)], ignore_index=True)
        log(f"calibration: {len(nets)} whole networks")
    n2 = cfg.samples - done
    if n2 > 0 and cfg.adaptive_share > 0 and done >= 20:
        features = feature_names(spec if GROUPING[cfg.backend] == "kernel" else None)
        worst = adaptive_targets(table[table["kind"] != NETWORK_KIND], features,
                                 cfg.adaptive_top, cfg.seed)
        by_id = {i: s for i, s in zip(range(len(first)), first)}
        if cfg.backend != "sim" and cfg.units == "profiled":  # whole networks' units: cut out
            by_id = {i: unit_of(s.arch, s.unit, s.source) for i, s in by_id.items()}
        second = [neighbour(by_id[int(worst[i % len(worst)])], rng, "adaptive", cfg.max_block_macs)
                  for i in range(n2)]
        deadline2 = start + cfg.time_budget_s
        parts2 = _measure_within(second, cfg, spec, len(first), 2, deadline2, progress, chunk,
                                 timer)
        if parts2:
            table = pd.concat([table, *parts2], ignore_index=True)
        log(f"round 2 (adaptive around {len(worst)} worst units): "
            f"{sum(p['sample'].nunique() for p in parts2)} units")
    return table


REQUIRED_COLUMNS = {"sample": "number", "kind": "text", "latency_ms": "number",
                    "kernel_index": "number"}


def read_table(path) -> pd.DataFrame:
    """Read a microbenchmark parquet table; a clear error naming it if it cannot be used."""
    from hwnas.files import read_table as read_checked

    return read_checked(path, REQUIRED_COLUMNS, "microbenchmark table not found (run "
                        "`hwnas microbench` or `dvc repro microbench`)", MicrobenchError)
