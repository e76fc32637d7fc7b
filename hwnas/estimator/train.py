"""Train an estimator from a microbenchmark table, and score it on held-out networks.

The pure functions the ``microbench``/``train_estimator`` stages and the CLI share.
"""
from __future__ import annotations

import os
import platform
import re
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


def host_info(threads: int | None = None) -> dict:
    import torch

    return {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__,
            "threads": threads if threads is not None else torch.get_num_threads()}


def train(table: pd.DataFrame, spec: HardwareSpec | None, backend: str, cfg: LightGBMConfig,
          out_dir: Path, data_hash: str, threads: int | None = None) -> dict:
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
                host=host_info(threads) if backend == "cpu" else {}, calibration=calibration)


@dataclass
class EvalConfig:
    eval_networks: int = 240
    eval_seed: int = 1000
    references: bool = True
    repeats: int = 5          # cpu: timing repeats per network
    warmup: int = 2
    min_repeat_ms: float = 5.0
    threads: int = 1
    clock: str = "thread"     # cpu: the clock the microbenchmarks used
    spaces: list = field(default_factory=lambda: [{"resolution": 32, "in_channels": 1}])


def score_estimator(est: Estimator, spec: HardwareSpec, backend: str, cfg: EvalConfig,
             plot_path: Path | None = None,
             progress: Callable[[int], None] | None = None) -> dict:
    """nn-Meter's metrics on networks the microbenchmarks never used, per kind and whole."""
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
        from hwnas.estimator.microbench import set_threads

        set_threads(cfg.threads)
        true = scoring.truth_cpu(archs, cfg.repeats, cfg.warmup, cfg.min_repeat_ms, progress,
                                 cfg.clock)
        truth_name = f"measured on this CPU, {cfg.threads} thread(s), {cfg.clock} clock"
    metrics["truth"] = truth_name
    metrics["network"] = scoring.error_metrics(pred, true)
    metrics["network"]["flops_spearman"] = scoring.spearman(flops, true)
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
                     f"{est.manifest['hardware']} ({truth_name}): {len(archs)} held-out networks\n"
                     f"±5%: {n['within_5pct']:.1%}  ±10%: {n['within_10pct']:.1%}  "
                     f"Spearman {n['spearman']:.4f} (FLOPs {n['flops_spearman']:.3f})")
    metrics["_predictions"] = pd.DataFrame({"name": [r["name"] for r in records],
                                            "source": sources, "true_ms": true,
                                            "pred_ms": pred, "flops": flops})
    return metrics


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
