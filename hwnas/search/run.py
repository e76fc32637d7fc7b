"""A search run: what it reads (params, spec, estimator, the supernet's space, data),
the evolutionary search with its journal, and the result the ``search`` stage writes."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hwnas import layout
from hwnas.params import section


@dataclass
class SearchResult:
    candidates: pd.DataFrame
    baseline: dict      # the baseline's scores
    pareto: dict        # what pareto.json holds: the front, the baseline, the chosen networks
    summary: dict       # metrics.json


def fingerprint(p: dict, *inputs: Path) -> str:
    """Params plus input file digests: a journal only resumes the same search (the choice
    among its candidates, ``accuracy_tie``, does not change the search)."""
    keep = {k: v for k, v in p.items() if k != "accuracy_tie"}
    h = hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode())
    for path in inputs:
        h.update(path.read_bytes() if path.is_file() else b"")
    return h.hexdigest()[:16]


@dataclass
class SearchContext:
    """Everything a search reads: params, spec, estimator, supernet space, data."""

    params: dict
    spec: object
    estimator_dir: Path
    estimator: object
    space: object
    baseline: object
    calib: list
    val: tuple

    def scorer(self, mode: str | None = None, workers: int | None = None):
        """A batch accuracy function: the supernet over worker processes, or a proxy."""
        from hwnas.search.objectives import ParallelSupernetAccuracy, proxy_accuracy

        p = self.params
        mode = mode or p["accuracy"]
        if mode == "supernet":
            return ParallelSupernetAccuracy(layout.SUPERNET, self.calib, self.val,
                                            workers or p["workers"])
        proxy = proxy_accuracy(mode, self.val[0][:64], self.val[1][:64], p["seed"])
        return lambda archs: [proxy(a) for a in archs]


def load_search_context(params: dict) -> SearchContext:
    import torch

    from hardware.spec import load_spec
    from hwnas.context import pipeline_baseline
    from hwnas.data import load_dataset
    from hwnas.estimator import Estimator
    from hwnas.supernet import load_supernet

    p = section(params, "search")
    data = params["train_supernet"]["data"]
    spec = load_spec(p["hardware"])
    est_dir = layout.estimator_dir(spec.name)
    estimator = Estimator.load(est_dir, spec)
    space = load_supernet(layout.SUPERNET).space
    splits = load_dataset(data["dataset"], data["resolution"], p["seed"], data["val_fraction"],
                          data["test_fraction"])
    g = torch.Generator().manual_seed(p["seed"])
    calib_idx = torch.randperm(len(splits.train.y), generator=g)[:p["calib_images"]]
    return SearchContext(p, spec, est_dir, estimator, space, pipeline_baseline(space, params),
                         [splits.train.x[calib_idx]],
                         (splits.val.x[:p["val_images"]], splits.val.y[:p["val_images"]]))


def check_space(space) -> None:
    """A space that cannot build a valid network stops the search before it starts."""
    from hwnas.arch import ArchError
    from hwnas.search.objectives import SearchInputError

    try:
        space.sample(np.random.default_rng(0))
    except ArchError as err:
        raise SearchInputError(f"the search space {space.name} cannot build a valid "
                               f"network: {err}") from None


def run_search(ctx: SearchContext, objective_fn) -> SearchResult:
    """Search ``ctx.space`` with the batch objective ``objective_fn``, resuming from the journal;
    logs the run and every candidate to MLflow."""
    from rich.progress import Progress

    from hwnas import tracking
    from hwnas.checkpoint import claim_run
    from hwnas.lineage import lineage_tags
    from hwnas.search.evolution import Constraints, read_journal, search
    from hwnas.search.choice import summarize
    from hwnas.search.objectives import check_feasible

    p, spec, space, baseline = ctx.params, ctx.spec, ctx.space, ctx.baseline
    base = objective_fn([baseline])[0]
    budget, lat_budget = p.get("memory_budget"), p.get("latency_budget")
    limits = [v for v in (p.get("max_latency_ms"),
                          lat_budget * base["latency_ms"] if lat_budget else None) if v]
    constraints = Constraints(min(limits) if limits else None,
                              budget * base["memory_bytes"] if budget else None)
    check_feasible(space, ctx.estimator.estimate, constraints)

    journal = layout.SEARCH_JOURNAL / f"{fingerprint(p, layout.SUPERNET, ctx.estimator_dir / 'manifest.json')}.jsonl"
    with tracking.run("search", params={**p, "space": space.name},
                      tags=lineage_tags("search", spec.spec_hash())) as active, \
            Progress() as bar:
        claim_run(layout.SEARCH_JOURNAL / "mlflow_run", active.info.run_id)
        task = bar.add_task("search", total=p["candidates"])
        resumed = len(read_journal(journal))  # finished by an earlier (killed or equal) run
        t0 = time.perf_counter()
        df = search(space, objective_fn, candidates=p["candidates"], population=p["population"],
                    seed=p["seed"], constraints=constraints, journal=journal, seeds=[baseline],
                    on_batch=lambda n, _rows: bar.update(task, completed=n))
        seconds = time.perf_counter() - t0
        # a proxy score is not an accuracy on val_images: no binomial tie for it
        tie_se = (p.get("accuracy_tie") or 0.0) if p["accuracy"] == "supernet" else 0.0
        summary = summarize(df, base, budget, lat_budget, tie_se, p["val_images"])
        fastest, smallest = summary.pop("_fastest"), summary.pop("_smallest")
        summary.update(search_seconds=round(seconds, 1), resumed_candidates=resumed,
                       accuracy_mode=p["accuracy"])
        tracking.log_metrics(summary)
        tracking.log_candidates(df, active.info.run_id)

    front = df[df["pareto"]].sort_values("latency_ms")
    cols = ["arch", "accuracy", "latency_ms", "memory_bytes"]
    pareto = {"hardware": spec.name, "accuracy_mode": p["accuracy"],
              "baseline": {"arch": baseline.encode(), **{k: base[k] for k in cols[1:]}},
              "chosen": {"latency": fastest, "memory": smallest},
              "pareto": front[cols].to_dict("records")}
    return SearchResult(df, base, pareto, summary)


def plot(df: pd.DataFrame, base: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(df["latency_ms"], df["accuracy"], s=8, c="#bbbbbb", label="candidates")
    front = df[df["pareto"]].sort_values("latency_ms")
    ax.scatter(front["latency_ms"], front["accuracy"], s=18, c="#d62728", label="Pareto front")
    ax.scatter([base["latency_ms"]], [base["accuracy"]], marker="*", s=200, c="#1f77b4",
               label="MobileNetV2-like baseline")
    ax.set_xlabel("estimated latency (ms)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("search: accuracy vs estimated latency")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
