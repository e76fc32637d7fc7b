"""Experiments that measure the tool's claims: do zero-shot proxies rank networks
better than their parameter count, and does curating the space to the hardware
make the search converge faster and more reliably?"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

from hwnas.arch import ArchSpec
from hwnas.search.evolution import ObjectiveFn, search
from hwnas.space import SearchSpace


def unique_samples(space: SearchSpace, n: int, seed: int) -> list[ArchSpec]:
    rng = np.random.default_rng(seed)
    seen: dict[str, ArchSpec] = {}
    for _ in range(100 * n):
        arch = space.sample(rng)
        seen.setdefault(arch.encode(), arch)
        if len(seen) == n:
            break
    return list(seen.values())


def proxy_taus(archs: Sequence[ArchSpec], scores: Sequence[float], x, y,
               seed: int = 0) -> tuple[dict[str, float], list[dict]]:
    """Kendall tau of each zero-shot proxy (and of the parameter count) against the
    trained scores, with the per-network scores."""
    import torch

    from hwnas.model import build_model
    from hwnas.search.zeroshot import score_all

    rows = []
    for arch, acc in zip(archs, scores):
        torch.manual_seed(seed)
        scores = score_all(build_model(arch), x, y)
        rows.append({"arch": arch.encode(), "score": acc, **scores})
    df = pd.DataFrame(rows)
    taus = {name: float(kendalltau(df[name], df["score"]).statistic)
            for name in df.columns if name not in ("arch", "score")}
    return taus, rows


def best_latency_curve(df: pd.DataFrame, min_score: float) -> np.ndarray:
    """After each evaluation, the lowest latency among candidates at least as
    accurate as ``min_score`` (NaN until the first one)."""
    ok = np.where(df["score"].to_numpy() >= min_score, df["latency_ms"].to_numpy(), np.inf)
    best = np.minimum.accumulate(ok)
    return np.where(np.isfinite(best), best, np.nan)


def curation_runs(spaces: dict[str, SearchSpace], objective_fn: ObjectiveFn, *,
                  seeds: Sequence[int], candidates: int, population: int, min_score: float,
                  progress: Callable[[str, int], None] | None = None) -> pd.DataFrame:
    """The same search on each space for each seed; one row per (space, seed,
    evaluation) with the best latency at ``min_score`` so far."""
    rows = []
    for name, space in spaces.items():
        for seed in seeds:
            df = search(space, objective_fn, candidates=candidates, population=population,
                        seed=seed)
            curve = best_latency_curve(df, min_score)
            rows += [{"space": name, "seed": seed, "evaluations": i + 1, "best_latency_ms": v}
                     for i, v in enumerate(curve)]
            if progress:
                progress(name, seed)
    return pd.DataFrame(rows)


def curation_table(curves: pd.DataFrame, tolerance: float = 0.05) -> pd.DataFrame:
    """Per space: final best latency (median, worst over seeds), and how many
    evaluations each seed needed to come within ``tolerance`` of the best latency
    any run found (NaN if it never did)."""
    target = curves["best_latency_ms"].min() * (1 + tolerance)
    out = []
    for name, part in curves.groupby("space", sort=False):
        finals, needed = [], []
        for _, run in part.groupby("seed"):
            finals.append(run["best_latency_ms"].iloc[-1])
            hit = run[run["best_latency_ms"] <= target]
            needed.append(hit["evaluations"].iloc[0] if len(hit) else np.nan)
        needed = np.array(needed, float)
        out.append({"space": name, "seeds": len(finals),
                    "median_best_latency_ms": float(np.nanmedian(finals)),
                    "worst_best_latency_ms": float(np.nanmax(finals)),
                    "runs_within_tolerance": int(np.isfinite(needed).sum()),
                    "median_evaluations_to_tolerance":
                        float(np.nanmedian(needed)) if np.isfinite(needed).any() else None})
    return pd.DataFrame(out)


def plot_curation(curves: pd.DataFrame, path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (name, part), color in zip(curves.groupby("space", sort=False), ("#d62728", "#7f7f7f")):
        wide = part.pivot(index="evaluations", columns="seed", values="best_latency_ms")
        ax.plot(wide.index, wide.median(axis=1), color=color, label=f"{name} (median)")
        ax.fill_between(wide.index, wide.min(axis=1), wide.max(axis=1), color=color, alpha=0.2,
                        label=f"{name} (range over seeds)")
    ax.set_xlabel("evaluations")
    ax.set_ylabel("best latency at baseline score (ms)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
