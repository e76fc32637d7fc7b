"""Scoring an estimator on held-out networks it never saw: nn-Meter's error metrics.

Ground truth is the simulator without noise (``sim``) or the whole network measured in
ONNX Runtime, twice, in separate processes (``onnxruntime``), which also gives the
machine's own test-retest agreement: no estimator can beat it. This module imports the
simulator; the estimator itself (``hwnas.estimator.model``) never does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hwnas.arch import ArchSpec
from hwnas.estimator.sampling import space_configs, spaces_for
from hwnas.registry import REFERENCES, reference


def heldout_networks(spec, spaces: list[dict], n: int, seed: int,
                     with_references: bool = True) -> tuple[list[ArchSpec], list[str]]:
    """``n`` networks drawn evenly from the curated and uncurated spaces of each config
    (a seed the microbenchmarks never use), plus the reference registry."""
    rng = np.random.default_rng(seed)
    all_spaces = spaces_for(spec, space_configs(spaces))
    archs, sources = [], []
    for i in range(n):
        space = all_spaces[i % len(all_spaces)]
        archs.append(space.sample(rng))
        sources.append(space.name + f"@{space.input.height}")
    if with_references:
        for name in REFERENCES:
            archs.append(reference(name))
            sources.append("reference")
    return archs, sources


def truth_sim(archs: list[ArchSpec], spec) -> tuple[np.ndarray, pd.DataFrame]:
    """Noise-free simulated latency per network, and per kernel (kind, latency_ms, net)."""
    from hardware.simulator import simulate_graph
    from hwnas.lowering import to_graph

    lat, rows = np.empty(len(archs)), []
    for i, a in enumerate(archs):
        r = simulate_graph(to_graph(a), spec)
        lat[i] = r.latency_ms
        rows += [(i, k.kind, k.latency_ms) for k in r.kernels]
    return lat, pd.DataFrame(rows, columns=["net", "kind", "latency_ms"])


def truth_measured(archs: list[ArchSpec], protocol, rounds: int = 2, chunk: int = 20,
                   progress=None) -> np.ndarray:
    """Each whole network timed in ONNX Runtime ``rounds`` times: every round in its own
    pinned process, in its own order, one round after the other. ``(rounds, n)`` medians (ms)."""
    import tempfile

    from hwnas.estimator.microbench import network_module
    from hwnas.estimator.onnxrt import Timer, export, summary

    out = np.empty((rounds, len(archs)))
    with tempfile.TemporaryDirectory(prefix="hwnas-ort-") as tmp:
        paths = []
        for i, a in enumerate(archs):
            paths.append(export(*network_module(a), Path(tmp) / f"{i}.onnx"))
            if progress:
                progress(1)
        for r in range(rounds):
            order = np.random.default_rng(r).permutation(len(archs))
            with Timer(protocol) as timer:
                for lo in range(0, len(archs), chunk):
                    idx = order[lo:lo + chunk]
                    times = timer.time_files([paths[i] for i in idx], seed=r * 7919 + lo)
                    out[r, idx] = summary(times)
                    if progress:
                        progress(len(idx))
    return out


def table_networks(table: pd.DataFrame) -> pd.Series:
    """The whole networks a measured microbench table timed (its calibration networks):
    median milliseconds by architecture string."""
    nets = table[table["kind"] == "network"]
    return nets.groupby("arch", sort=False)["latency_ms"].median()


def rounds_mean(rounds: np.ndarray) -> np.ndarray:
    """The figure of ``(rounds, n)`` timings: their geometric mean per network."""
    return np.exp(np.log(rounds).mean(axis=0))


def retest_agreement(first: np.ndarray, second: np.ndarray) -> dict:
    """How well the machine agrees with itself: the second round against the first."""
    rel = np.abs(second / first - 1)
    return {"within_5pct": float(np.mean(rel <= 0.05)), "within_10pct": float(np.mean(rel <= 0.10)),
            "median_abs_diff": float(np.median(rel)), "max_abs_diff": float(np.max(rel))}


def error_metrics(pred: np.ndarray, true: np.ndarray) -> dict:
    """RMSPE, share within +-5% / +-10%, Spearman rank correlation."""
    from scipy.stats import spearmanr

    pred, true = np.asarray(pred, float), np.asarray(true, float)
    ok = np.isfinite(pred) & np.isfinite(true) & (true > 0)
    rel = pred[ok] / true[ok] - 1
    rho = spearmanr(pred[ok], true[ok]).statistic if ok.sum() > 2 else float("nan")
    return {"n": int(ok.sum()), "rmspe": float(np.sqrt(np.mean(rel ** 2))),
            "within_5pct": float(np.mean(np.abs(rel) <= 0.05)),
            "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
            "max_abs_error": float(np.max(np.abs(rel))) if len(rel) else float("nan"),
            "spearman": float(rho)}


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def plot(pred: np.ndarray, true: np.ndarray, sources: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    src = np.array([s.split("@")[0].split("-")[0] for s in sources])
    for name in dict.fromkeys(src):
        m = src == name
        ax.scatter(true[m], pred[m], s=10, alpha=0.7, label=name)
    lo, hi = np.nanmin([true.min(), pred.min()]) * 0.9, np.nanmax([true.max(), pred.max()]) * 1.1
    xs = np.geomspace(lo, hi, 50)
    ax.plot(xs, xs, "k-", lw=0.8)
    ax.fill_between(xs, xs * 0.9, xs * 1.1, color="gray", alpha=0.15, label="±10%")
    ax.fill_between(xs, xs * 0.95, xs * 1.05, color="gray", alpha=0.25, label="±5%")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("true latency (ms)")
    ax.set_ylabel("estimated latency (ms)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
