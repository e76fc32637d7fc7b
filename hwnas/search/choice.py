"""Which candidates a finished search hands on: the latency model (the best network
within the latency budget at baseline score), the memory model (the best within
the memory budget) and a family's members (``family``: the best of each band of latency
cuts), with supernet scores within noise of each other counted as tied.
Where the supernet cannot tell the latency model's tied candidates apart, a few of them
may be confirmed by training (``confirmation_set``; the article's multishot step)."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd

from hwnas.extract import FAMILY_NAMES


def tie_points(score: float, images: int, standard_errors: float) -> float:
    """How far below ``score`` (%) a candidate still counts as tied with it:
    ``standard_errors`` binomial standard errors of a score measured on ``images``."""
    if images <= 0 or standard_errors <= 0:  # no measurement to be noisy about: no tie
        return 0.0
    a = min(max(score / 100.0, 0.0), 1.0)
    return standard_errors * 100.0 * math.sqrt(a * (1.0 - a) / images)


def pick(rows: pd.DataFrame, tie: float = 0.0) -> pd.Series | None:
    """The most accurate row, or with ``tie`` > 0 the row with the most MACs among those
    within ``tie`` points of the best (then the more accurate). The supernet's score
    cannot tell such networks apart, while the accelerator runs them within the same
    budget and, trained from scratch, score rises with MACs (``eval_supernet``)."""
    if not len(rows):
        return None
    if tie <= 0 or "macs" not in rows:
        return rows.loc[rows["score"].idxmax()]
    return _tied(rows, tie).iloc[0]


def _tied(rows: pd.DataFrame, tie: float) -> pd.DataFrame:
    """The rows within ``tie`` points of the best score, in ``pick``'s order (most MACs,
    then the more accurate), each architecture once."""
    tied = rows[rows["score"] >= rows["score"].max() - tie].drop_duplicates("arch")
    return tied.sort_values(["macs", "score"], ascending=False)


def confirmation_set(rows: pd.DataFrame, tie: float, k: int) -> pd.DataFrame:
    """``k`` of the tied rows at even steps of their ranking by MACs (``pick``'s order, so
    its own choice first and the fewest MACs last): the supernet ranks them alike, so which
    size trains best is the open question."""
    tied = _tied(rows, tie)
    at = np.unique(np.round(np.linspace(0, len(tied) - 1, min(k, len(tied)))).astype(int))
    return tied.iloc[at]


def family(df: pd.DataFrame, base: dict, cuts: list[float], val_images: int = 0,
           tie_se: float = 0.0) -> dict[str, str | None]:
    """A model family (the article's segmentation models A-E): the cuts, sorted, split the
    latency reductions against the baseline into bands (``[c_i, c_i+1)``, the last open);
    each member is the best network (``pick``, ties as the latency model's) of its band,
    whatever its score: the family shows what each cut costs, and its members differ.
    None where no candidate falls in a band."""
    df = df[df["feasible"]] if "feasible" in df else df  # within the search's constraints
    reduction = 1 - df["latency_ms"] / base["latency_ms"]
    edges = [*sorted(cuts), np.inf]
    out = {}
    for name, lo, hi in zip(FAMILY_NAMES, edges, edges[1:]):
        rows = df[(reduction >= lo) & (reduction < hi)]
        tie = tie_points(rows["score"].max(), val_images, tie_se) if len(rows) else 0.0
        best = pick(rows, tie)
        out[name] = None if best is None else best["arch"]
    return out


def summarize(df: pd.DataFrame, base: dict, budget: float | None,
              latency_budget: float | None = None, tie_se: float = 0.0,
              val_images: int = 0, confirm: int = 0,
              train_on_val: Callable[[list[str]], dict[str, dict]] | None = None) -> dict:
    """The search's headline figures: latency saved at baseline score, and the
    best network within half (or ``budget`` of) the baseline's memory. The chosen
    latency model is the best network (``pick``) within ``latency_budget`` of the
    baseline's latency when one is set, else the fastest at baseline score; ties
    span ``tie_se`` standard errors of a score on ``val_images`` (0: none). With a latency
    budget, ``confirm`` > 1 and ``train_on_val`` (architecture strings -> each one's record
    with its ``scratch_score`` on the val split), the latency model is instead the best
    trained of ``confirmation_set(confirm)`` (listed under ``confirmations``; none where
    fewer than two networks tie)."""
    front = df[df["pareto"]]
    at_score = front[front["score"] >= base["score"]]
    fastest = at_score.loc[at_score["latency_ms"].idxmin()] if len(at_score) else None
    chosen, tie = fastest, 0.0
    if latency_budget:
        within = df[(df["latency_ms"] <= latency_budget * base["latency_ms"])
                    & (df["score"] >= base["score"])]
        tie = tie_points(within["score"].max(), val_images, tie_se) if len(within) else 0.0
        chosen = pick(within, tie)
    confirmations = []
    if latency_budget and chosen is not None and train_on_val is not None and confirm > 1:
        trial = confirmation_set(within, tie, confirm)
        if len(trial) > 1:
            runs = train_on_val(list(trial["arch"]))
            trial = trial.assign(val_score=[runs[a]["scratch_score"] for a in trial["arch"]],
                                 val_scores=[runs[a]["scratch_scores"] for a in trial["arch"]])
            chosen = trial.loc[trial["val_score"].idxmax()]  # a tie keeps pick's choice
            confirmations = trial[["arch", "score", "val_score", "val_scores", "latency_ms",
                                   "macs"]].to_dict("records")
    share = budget or 0.5
    fits = df[(df["memory_bytes"] <= share * base["memory_bytes"])
              & (df["score"] >= base["score"] - 1.0)]
    small_tie = tie_points(fits["score"].max(), val_images, tie_se) if len(fits) else 0.0
    small = pick(fits, small_tie)
    return {
        "candidates": int(len(df)), "unique_architectures": int(df["arch"].nunique()),
        "pareto_size": int(len(front)), "feasible": int(df["feasible"].sum()),
        "baseline_score": base["score"], "baseline_latency_ms": base["latency_ms"],
        "baseline_memory_bytes": base["memory_bytes"],
        "best_latency_ms_at_baseline_score": None if fastest is None else float(fastest["latency_ms"]),
        # the front's fastest network at (supernet) baseline score, estimated latency: the
        # front's reach, not the chosen network (chosen_latency_reduction) nor evaluate's headline
        "front_latency_reduction_at_baseline_score":
            None if fastest is None else 1 - float(fastest["latency_ms"]) / base["latency_ms"],
        "score_of_fastest": None if fastest is None else float(fastest["score"]),
        "latency_budget_share": latency_budget,
        "chosen_latency_reduction":
            None if chosen is None else 1 - float(chosen["latency_ms"]) / base["latency_ms"],
        "chosen_score": None if chosen is None else float(chosen["score"]),
        "chosen_tie_points": round(tie, 3),
        "confirmed_networks": len(confirmations),
        "confirmations": confirmations,
        "memory_budget_share": share,
        "memory_budget_fit": small is not None,
        "memory_reduction_within_budget":
            None if small is None else 1 - float(small["memory_bytes"]) / base["memory_bytes"],
        "score_within_budget": None if small is None else float(small["score"]),
        "memory_tie_points": round(small_tie, 3),
        "out_of_range_candidates":
            int((df["out_of_range"] > 0).sum()) if "out_of_range" in df else 0,
        "_fastest": None if chosen is None else chosen["arch"],
        "_smallest": None if small is None else small["arch"],
    }
