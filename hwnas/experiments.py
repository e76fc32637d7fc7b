"""Experiments that measure the tool's claims: do zero-shot proxies rank networks
better than their parameter count, and does curating the space to the hardware
make the search converge faster and more reliably?"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

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


def curation_spaces(space: SearchSpace, space_params: dict) -> dict[str, SearchSpace]:
    """The curated ``space`` (the supernet's) beside the uncurated space built from the same
    ``train_supernet.space`` params: channel steps of 8, a depth per stage."""
    from hwnas.space import SpaceConfig, uncurated_space

    cfg = SpaceConfig(resolution=space.input.height, in_channels=space.input.channels,
                      classes=space.head.classes, task=space.head.task,
                      **{k: tuple(tuple(x) if isinstance(x, list) else x for x in v)
                         if isinstance(v, list) else v for k, v in space_params.items()})
    return {"curated": space, "uncurated": uncurated_space(cfg)}


def curation_runs(spaces: dict[str, SearchSpace], objective_fn: ObjectiveFn, *,
                  seeds: Sequence[int], candidates: int, population: int, min_score: float,
                  progress: Callable[[str, int], None] | None = None,
                  journal: Path | None = None) -> pd.DataFrame:
    """The same search on each space for each seed; one row per (space, seed,
    evaluation) with the best latency at ``min_score`` so far. With a ``journal`` folder
    (one per budget and inputs) each search resumes from its file there."""
    rows = []
    for name, space in spaces.items():
        for seed in seeds:
            df = search(space, objective_fn, candidates=candidates, population=population,
                        seed=seed, journal=None if journal is None
                        else journal / f"curation-{name}-{seed}.jsonl")
            curve = best_latency_curve(df, min_score)
            rows += [{"space": name, "seed": seed, "evaluations": i + 1, "best_latency_ms": v}
                     for i, v in enumerate(curve)]
            if progress:
                progress(name, seed)
    return pd.DataFrame(rows)


def curation_table(curves: pd.DataFrame, tolerance: float = 0.05) -> pd.DataFrame:
    """Per space: final best latency (median, worst over seeds); how many evaluations each
    seed needed to come within ``tolerance`` of the best latency any run found (NaN if it
    never did), and within ``tolerance`` of its own final value (its convergence)."""
    target = curves["best_latency_ms"].min() * (1 + tolerance)
    out = []
    for name, part in curves.groupby("space", sort=False):
        finals, needed, own = [], [], []
        for _, run in part.groupby("seed"):
            best = run["best_latency_ms"]
            finals.append(best.iloc[-1])
            hit = run[best <= target]
            needed.append(hit["evaluations"].iloc[0] if len(hit) else np.nan)
            settled = run[best <= best.iloc[-1] * (1 + tolerance)]
            own.append(settled["evaluations"].iloc[0] if len(settled) else np.nan)
        needed, own = np.array(needed, float), np.array(own, float)
        out.append({"space": name, "seeds": len(finals),
                    "median_best_latency_ms": float(np.nanmedian(finals)),
                    "worst_best_latency_ms": float(np.nanmax(finals)),
                    "runs_within_tolerance": int(np.isfinite(needed).sum()),
                    "median_evaluations_to_tolerance":
                        float(np.nanmedian(needed)) if np.isfinite(needed).any() else None,
                    "median_evaluations_to_own_final":
                        float(np.nanmedian(own)) if np.isfinite(own).any() else None})
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


# ---- where FLOPs mislead ---------------------------------------------------------------


def flops_ranking(archs: Sequence[ArchSpec], spec, top: int = 5) -> tuple[dict, pd.DataFrame]:
    """How well FLOPs and parameter counts rank ``archs`` by simulated latency on ``spec``:
    Spearman of each, the share of pairs FLOPs orders the wrong way, and the ``top`` such
    pairs by margin (the network with fewer FLOPs that is slower by the largest factor)."""
    from scipy.stats import spearmanr

    from hwnas.simulation import simulate_arch

    rows = [simulate_arch(a, spec, per_kernel=False) for a in archs]
    lat = np.array([r["latency_ms"] for r in rows])
    flops = np.array([r["flops"] for r in rows], float)
    params = np.array([r["params"] for r in rows], float)
    fewer = flops[:, None] < flops[None, :]          # i has fewer FLOPs than j
    slower = lat[:, None] / lat[None, :]              # i's latency over j's
    wrong = fewer & (slower > 1)
    order = np.argsort(-np.where(wrong, slower, 0), axis=None)[:top]
    pairs = pd.DataFrame([{"fewer_flops": rows[i]["arch"], "more_flops": rows[j]["arch"],
                           "flops_ratio": flops[j] / flops[i], "latency_ratio": slower[i, j]}
                          for i, j in zip(*np.unravel_index(order, wrong.shape)) if wrong[i, j]])
    stats = {"networks": len(archs),
             "flops_latency_spearman": float(spearmanr(flops, lat).statistic),
             "params_latency_spearman": float(spearmanr(params, lat).statistic),
             "misordered_pair_share": float(wrong.sum() / max(1, fewer.sum()))}
    return stats, pairs


def fused_share_by_stage(archs: Sequence[ArchSpec], space: SearchSpace) -> list[float | None]:
    """Share of fused-IBN blocks in each stage of ``space`` over ``archs`` (e.g. a Pareto
    front); None for a stage no network has blocks in."""
    fused = [0] * len(space.stages)
    total = [0] * len(space.stages)
    for arch in archs:
        split = space.split(arch, choices=False)
        if split is None:
            continue
        i = 0
        for s, n in enumerate(split[1]):
            fused[s] += sum(b.type == "fused_ibn" for b in arch.blocks[i:i + n])
            total[s] += n
            i += n
    return [f / t if t else None for f, t in zip(fused, total)]


def block_latency_by_stage(arch: ArchSpec, space: SearchSpace, spec) -> pd.DataFrame:
    """Each stage's first block of ``arch`` alone on ``spec`` (simulated), as IBN and as
    fused-IBN with the same kernel, expansion and width, at that stage's input shape."""
    from dataclasses import replace

    from hardware.simulator import simulate_graph
    from hwnas.lowering import block_graph, feature_map_sizes

    split = space.split(arch, choices=False)
    if split is None:
        raise ValueError(f"{arch.name or 'the network'} does not split into the space's stages")
    sizes, inputs = feature_map_sizes(arch), arch.channels()
    rows, first = [], 0
    for s, n in enumerate(split[1]):
        block, (h, w), c = arch.blocks[first], sizes[first], inputs[first]
        lat = {kind: simulate_graph(block_graph(replace(block, type=kind), c, h, w),
                                    spec).latency_ms
               for kind in ("ibn", "fused_ibn")}
        rows.append({"stage": s + 1, "input": f"{c}x{h}x{w}", "out": block.out,
                     "kernel": block.kernel, "expand": block.expand, "stride": block.stride,
                     "ibn_ms": lat["ibn"], "fused_ibn_ms": lat["fused_ibn"],
                     "fused_over_ibn": lat["fused_ibn"] / lat["ibn"]})
        first += n
    return pd.DataFrame(rows)


def flops_findings(candidates: pd.DataFrame, baseline: ArchSpec, space: SearchSpace, spec,
                   top: int = 5) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Over a search's ``candidates`` (``arch``, ``pareto``): ``flops_ranking``'s figures and
    pairs, and the baseline's stages (``block_latency_by_stage``) with the Pareto front's
    fused-IBN share per stage."""
    from hwnas.arch import decode

    archs = [decode(a) for a in candidates["arch"].drop_duplicates()]
    front = [decode(a) for a in candidates.loc[candidates["pareto"], "arch"].drop_duplicates()]
    stats, pairs = flops_ranking(archs, spec, top)
    stages = block_latency_by_stage(baseline, space, spec)
    stages["front_fused_share"] = fused_share_by_stage(front, space)
    return {**stats, "front_networks": len(front)}, pairs, stages
