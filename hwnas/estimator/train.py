"""Train an estimator from a microbenchmark table, and score it on held-out networks.

The pure functions the ``microbench``/``train_estimator`` stages and the CLI share.
"""
from __future__ import annotations

import os
import platform
import re
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from hardware.spec import HardwareSpec
from hwnas.estimator.decompose import feature_names
from hwnas.estimator.microbench import GROUPING, MicrobenchConfig
from hwnas.estimator.model import (Estimator, LightGBMConfig, fit_calibration, fit_models, save,
                                   training_frame)


def config_from(cls, params: dict):
    """Build a config dataclass from a params section, ignoring keys it doesn't have."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in params.items() if k in names})


def host_info() -> dict:
    import onnxruntime

    return {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "onnxruntime": onnxruntime.__version__,
            "threads": 1, "load_avg_1min": os.getloadavg()[0]}


def train(table: pd.DataFrame, spec: HardwareSpec | None, backend: str, cfg: LightGBMConfig,
          out_dir: Path, data_hash: str) -> dict:
    """Fit one model per kind on the table's median latencies and save them; returns the manifest."""
    grouping = GROUPING[backend]
    model_spec = spec if grouping == "kernel" else None
    features = feature_names(model_spec)
    frame = training_frame(table)
    models = fit_models(frame, features, cfg)
    calibration = fit_calibration(frame, models, features, grouping, model_spec)
    units = frame[frame["kind"] != "network"]
    return save(models, out_dir, backend=backend, grouping=grouping, features=features,
                frame=units, spec=model_spec, data_hash=data_hash, cfg=cfg,
                bytes_per_element=spec.bytes_per_element if model_spec is not None else 4,
                host=host_info() if backend == "onnxruntime" else {}, calibration=calibration)


@dataclass
class EvalConfig:
    eval_networks: int = 240
    eval_seed: int = 1000
    references: bool = True
    repeats: int = 5          # measured: timing repeats per network (ONNX Runtime protocol)
    warmup: int = 2
    min_repeat_ms: float = 5.0
    clock: str = "thread"     # measured: the clock the microbenchmarks used
    spaces: list = field(default_factory=lambda: [{"resolution": 32, "in_channels": 1}])


def score_estimator(est: Estimator, spec: HardwareSpec, backend: str, cfg: EvalConfig,
                    plot_path: Path | None = None,
                    progress: Callable[[int], None] | None = None,
                    earlier: pd.Series | None = None, earlier_time: float | None = None) -> dict:
    """nn-Meter's metrics on networks the microbenchmarks never used, per kind and whole.
    On a measured backend, ``earlier`` (``scoring.table_networks`` of the table, timed by
    ``earlier_time``, seconds since the epoch) is timed again: the machine's repeatability
    across that time."""
    from hwnas.estimator import scoring
    from hwnas.lowering import static_cost

    archs, sources = scoring.heldout_networks(spec, cfg.spaces, cfg.eval_networks, cfg.eval_seed,
                                              cfg.references)
    records = est.estimate(archs)
    pred = np.array([np.nan if r["latency_ms"] is None else r["latency_ms"] for r in records])
    flops = np.array([r["flops"] for r in records], float)
    metrics: dict = {"hardware": est.manifest["hardware"], "backend": backend,
                     "networks": len(archs),
                     "sources": {s: sources.count(s) for s in dict.fromkeys(sources)},
                     "out_of_range_networks": int(sum(bool(r["out_of_range"]) for r in records))}
    if backend == "sim":
        true, kernel_truth = scoring.truth_sim(archs, spec)
        kf = est.kernel_frame(archs)
        kinds = {}
        for kind in sorted(kf["kind"].astype(str).unique()):
            m = (kf["kind"].astype(str) == kind).to_numpy()
            kinds[kind] = scoring.error_metrics(kf["pred_ms"].to_numpy()[m],
                                                kernel_truth["latency_ms"].to_numpy()[m])
        metrics["per_kind"] = kinds
        truth_name = "simulator, noise off"
    else:
        from hwnas.estimator.microbench import protocol

        load = os.getloadavg()[0]
        rounds = scoring.truth_measured(archs, protocol(cfg), progress=progress)
        true = scoring.rounds_mean(rounds)
        retest = scoring.retest_agreement(rounds[0], rounds[1])
        metrics["test_retest"] = {**retest, "load_avg_1min": [load, os.getloadavg()[0]]}
        metrics["test_retest_within_5pct"] = retest["within_5pct"]
        metrics["test_retest_within_10pct"] = retest["within_10pct"]
        if earlier is not None and len(earlier):
            from hwnas.arch import parse_arch

            minutes = (time.time() - earlier_time) / 60 if earlier_time else None
            again = scoring.truth_measured([parse_arch(a) for a in earlier.index], protocol(cfg),
                                           rounds=1)[0]
            later = scoring.retest_agreement(earlier.to_numpy(), again)
            metrics["retest_later"] = {**later, "networks": len(earlier),
                                       "minutes_apart": minutes and round(minutes, 1)}
            metrics["retest_later_within_10pct"] = later["within_10pct"]
        truth_name = (f"ONNX Runtime on this CPU, 1 thread, pinned, {cfg.clock} clock, "
                      "geometric mean of 2 rounds")
    metrics["truth"] = truth_name
    metrics["network"] = scoring.error_metrics(pred, true)
    metrics["network"]["flops_spearman"] = scoring.spearman(flops, true)
    if backend != "sim":
        metrics["limited_by"] = limit(metrics["network"]["within_10pct"],
                                      metrics["test_retest_within_10pct"],
                                      metrics.get("retest_later"))
    # Memory comes from the graph: check the vectorized path against hwnas.lowering.
    bpe = est.bytes_per_element
    mem_err = []
    for a, r in zip(archs, records):
        c = static_cost(a, bpe)
        mem_err.append(abs(r["memory_bytes"] / c.memory_bytes - 1))
    metrics["memory"] = {"within_2pct": float(np.mean(np.array(mem_err) <= 0.02)),
                         "max_abs_error": float(max(mem_err))}
    by_source = {}
    for s in dict.fromkeys(sources):
        m = np.array([x == s for x in sources])
        by_source[s] = scoring.error_metrics(pred[m], true[m])
    metrics["by_source"] = by_source
    if plot_path is not None:
        n = metrics["network"]
        scoring.plot(pred, true, sources, plot_path,
                     f"{est.manifest['hardware']}: {len(archs)} held-out networks\n{truth_name}\n"
                     f"±5%: {n['within_5pct']:.1%}  ±10%: {n['within_10pct']:.1%}  "
                     f"Spearman {n['spearman']:.4f} (FLOPs {n['flops_spearman']:.3f})"
                     + (f"\nthe machine's test-retest: ±10% {metrics['test_retest_within_10pct']:.1%}"
                        if backend != "sim" else "")
                     + (f"; minutes later: ±10% {metrics['retest_later_within_10pct']:.1%}"
                        if "retest_later" in metrics else ""))
    metrics["_predictions"] = pd.DataFrame({"name": [r["name"] for r in records],
                                            "source": sources, "true_ms": true,
                                            "pred_ms": pred, "flops": flops})
    return metrics


def limit(estimator_within_10: float, retest_within_10: float,
          later: dict | None = None) -> str:
    """Which limits the figures: the estimator, or the machine's own repeatability
    (an estimator within 0.9 of the test-retest share is as good as this machine allows).
    The repeatability is the lower of the back-to-back rounds' and, with ``later``
    (``retest_later``), the agreement across the minutes since the microbenchmarks: the
    estimator learned from timings that old."""
    agree, how = retest_within_10, "test-retest agreement"
    if later and later["within_10pct"] < agree:
        agree = later["within_10pct"]
        how = f"agreement with itself {later['minutes_apart']} min after the microbenchmarks"
    if estimator_within_10 >= 0.9 * agree:
        return (f"the machine: the estimator is within 10% for {estimator_within_10:.1%} of the "
                f"networks, the machine's {how} is {agree:.1%}")
    return (f"the estimator: within 10% for {estimator_within_10:.1%} of the networks, below "
            f"0.9 x the machine's {how} ({agree:.1%})")


def public_metrics(metrics: dict) -> dict:
    """``metrics`` without its private entries (``_predictions``): what metrics.json holds."""
    return {k: v for k, v in metrics.items() if not k.startswith("_")}


def flat_metrics(metrics: dict, prefix: str = "") -> dict:
    """Nested numeric metrics as MLflow keys (``network.within_5pct``)."""
    out = {}
    for k, v in metrics.items():
        if k.startswith("_"):
            continue
        key = re.sub(r"[^A-Za-z0-9_./ :-]", "_", f"{prefix}{k}")
        if isinstance(v, dict):
            out.update(flat_metrics(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
            out[key] = v
    return out


__all__ = ["MicrobenchConfig", "LightGBMConfig", "EvalConfig", "config_from", "train",
           "public_metrics", "flat_metrics"]
