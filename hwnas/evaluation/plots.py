"""``pareto.png``: the search candidates and the evaluated models."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from hwnas.search.evolution import non_dominated


def plot(candidates: pd.DataFrame, baseline_search: dict, models: dict[str, dict],
         baseline_names: Sequence[str], path, latency_col: str = "sim_latency_ms") -> None:
    """Left: every search candidate at its simulated latency and search accuracy, the
    front, the baseline. Right: the evaluated models at simulated latency and test
    accuracy (from scratch, the mean over seeds, where a model was so trained; else after
    fine-tuning), the baseline variants marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    lat, acc = candidates[latency_col].to_numpy(), candidates["accuracy"].to_numpy()
    ax1.scatter(lat, acc, s=7, c="#bbbbbb", label="search candidates")
    mask = non_dominated(np.column_stack([lat, -acc]))
    front = candidates[mask].sort_values(latency_col)
    ax1.plot(front[latency_col], front["accuracy"], "-o", ms=3, c="#d62728",
             label="front (simulated latency)")
    ax1.scatter([baseline_search[latency_col]], [baseline_search["accuracy"]], marker="*",
                s=220, c="#1f77b4", zorder=5, label="baseline")
    ax1.set_xlabel("simulated latency (ms)")
    ax1.set_ylabel("search accuracy (%, supernet, val)")
    ax1.set_title("search candidates")
    ax1.grid(alpha=0.3)
    ax1.legend(loc="lower right", fontsize=8)

    for name, m in models.items():
        is_base = name in baseline_names
        a = m.get("scratch_accuracy", m["accuracy"])
        ax2.scatter([m["latency_ms"]], [a], marker="*" if is_base else "o",
                    s=220 if is_base else 50, c="#1f77b4" if is_base else "#d62728", zorder=5)
        ax2.annotate(name, (m["latency_ms"], a), textcoords="offset points",
                     xytext=(6, 4), fontsize=8)
    ax2.set_xlabel("simulated latency (ms)")
    ax2.set_ylabel("test accuracy (%; from scratch: mean over seeds)")
    ax2.set_title("evaluated models (baseline: stars)")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
