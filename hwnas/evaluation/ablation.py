"""The article's table: latency reduction at equal score per search setting, and
which choices of the space (fused-IBN blocks, depth multipliers) a network uses."""
from __future__ import annotations

import pandas as pd

from hwnas.arch import ArchError, ArchSpec, parse_arch
from hwnas.evaluation import EvaluateError
from hwnas.space import SearchSpace


def uses_fused(arch: ArchSpec) -> bool:
    return any(b.type == "fused_ibn" for b in arch.blocks)


def uses_depth_search(arch: ArchSpec, space: SearchSpace) -> bool:
    """True when the network's per-stage depths differ from the baseline's (depth
    multiplier 1): it needs the depth-multiplier search to be found."""
    base = space.base_depths()
    fit = space.split(arch, prefer=base)
    return fit is None or fit[1] != base


def tag_candidates(df: pd.DataFrame, space: SearchSpace) -> pd.DataFrame:
    """Adds ``fused`` and ``depth_search`` columns (a copy; the input is untouched)."""
    out = df.copy()
    flags = {}
    for text in out["arch"].unique():
        try:
            arch = parse_arch(text)
        except ArchError as err:
            raise EvaluateError(f"candidates: bad architecture {text!r}: {err}") from None
        flags[text] = (uses_fused(arch), uses_depth_search(arch, space))
    out["fused"] = out["arch"].map(lambda t: flags[t][0])
    out["depth_search"] = out["arch"].map(lambda t: flags[t][1])
    return out


def ablation_table(candidates: pd.DataFrame, baseline: dict, space: SearchSpace,
                   tolerance: float = 0.0, latency_col: str = "sim_latency_ms") -> list[dict]:
    """Latency reduction against the baseline at equal score, per search setting.

    Definition. A cell (fused-IBN search F, depth-multiplier search D) is the
    sub-space the search would have had without that choice: a candidate belongs to it
    when it has no ``fused_ibn`` block (unless F) and its per-stage depths are the
    baseline's, i.e. depth multiplier 1 (unless D). Among the cell's feasible
    candidates, plus the baseline itself (it is in every cell), those whose search
    score (the measure the search ranked by) is at least the baseline's minus
    ``tolerance`` points are "at equal score"; the cell reports the one with the
    lowest latency (``latency_col``: simulated) and ``1 - latency / baseline latency``.

    The cells restrict a single search over the full space rather than running four
    searches, so the restricted cells hold fewer candidates and understate what a
    dedicated search of that sub-space would find.
    """
    df = tag_candidates(candidates, space)
    if "feasible" in df:
        df = df[df["feasible"].astype(bool)]
    base_score, base_lat = float(baseline["score"]), float(baseline[latency_col])
    rows = []
    for fused, depth in ((False, False), (True, False), (False, True), (True, True)):
        pool = df[(fused | ~df["fused"]) & (depth | ~df["depth_search"])]
        ok = pool[pool["score"] >= base_score - tolerance]
        best = {"arch": baseline["arch"], "score": base_score, latency_col: base_lat,
                "is_baseline": True}
        if len(ok):
            r = ok.loc[ok[latency_col].idxmin()]
            if float(r[latency_col]) < base_lat:
                best = {"arch": r["arch"], "score": float(r["score"]),
                        latency_col: float(r[latency_col]), "is_baseline": False}
        rows.append({"fused_ibn_search": fused, "depth_multiplier_search": depth,
                     "candidates": int(len(pool)), "at_equal_score": int(len(ok)),
                     "arch": best["arch"], "score": best["score"],
                     "latency_ms": best[latency_col], "is_baseline": best["is_baseline"],
                     "latency_reduction": 1.0 - best[latency_col] / base_lat})
    return rows
