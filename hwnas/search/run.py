"""A search run: what it reads (params, spec, estimator, the supernet's space, data),
the evolutionary search with its journal, and the result the ``search`` stage writes."""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from importlib import import_module
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
    logged_runs: int = 0  # candidate runs this search added to MLflow


# ``search`` keys that choose among the finished candidates, not how they are found
CHOICE_KEYS = ("score_tie", "confirm", "confirm_seeds", "family")


def fingerprint(p: dict, *inputs: Path) -> str:
    """Params, input file digests, the scoring code and the torch version: a journal only
    resumes the same search (the choice among its candidates, ``CHOICE_KEYS``, does not
    change the search; a fixed scorer or another torch does)."""
    import hwnas.arch
    import hwnas.estimator.decompose
    import hwnas.estimator.model
    import hwnas.lowering
    import hwnas.search.evolution
    import hwnas.search.genome
    import hwnas.search.objectives
    import hwnas.search.zeroshot
    import hwnas.space
    import hwnas.supernet
    from hwnas import tasks
    from hwnas.checkpoint import code_fingerprint

    keep = {k: v for k, v in p.items() if k not in CHOICE_KEYS}
    scorers = [import_module(t.torch_module) for t in tasks.TASKS.values()]  # each task's score
    h = hashlib.sha256(code_fingerprint(keep, hwnas.arch, hwnas.lowering, hwnas.space,
                                        hwnas.supernet, hwnas.estimator.decompose,
                                        hwnas.estimator.model, hwnas.search.evolution,
                                        hwnas.search.genome, hwnas.search.objectives,
                                        hwnas.search.zeroshot, *scorers).encode())
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
        """A batch score function: the supernet over worker processes, or a proxy."""
        from hwnas.search.objectives import ParallelSupernetScore, proxy_score

        p = self.params
        mode = mode or p["score"]
        if mode == "supernet":
            return ParallelSupernetScore(layout.SUPERNET, self.calib, self.val,
                                            workers or p["workers"])
        proxy = proxy_score(mode, self.val[0][:64], self.val[1][:64], p["seed"])
        return lambda archs: [proxy(a) for a in archs]


def load_search_context(params: dict, spec=None, estimator_dir: Path | None = None
                        ) -> SearchContext:
    """The search of ``params`` on ``base.hardware`` with its estimator, or on ``spec`` with
    the estimator in ``estimator_dir`` (a co-design point)."""
    import torch

    from hardware.spec import load_spec
    from hwnas import tasks
    from hwnas.context import pipeline_baseline
    from hwnas.estimator import Estimator
    from hwnas.supernet import load_supernet

    p = section(params, "search")
    data = params["train_supernet"]["data"]
    spec = spec or load_spec(p["hardware"])
    est_dir = estimator_dir or layout.estimator_dir(spec.name)
    estimator = Estimator.load(est_dir, spec)
    space = load_supernet(layout.SUPERNET).space
    splits = tasks.torch_task(space.head.task).load(data, p["seed"])
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


def search_constraints(p: dict, base: dict):
    """The search's hard limits (``search.max_latency_ms``, ``latency_budget`` and
    ``memory_budget``, the budgets as shares of the baseline's costs ``base``)."""
    from hwnas.search.evolution import Constraints

    budget, lat_budget = p.get("memory_budget"), p.get("latency_budget")
    limits = [v for v in (p.get("max_latency_ms"),
                          lat_budget * base["latency_ms"] if lat_budget else None) if v]
    return Constraints(min(limits) if limits else None,
                       budget * base["memory_bytes"] if budget else None)


def tie_standard_errors(p: dict) -> float:
    """``search.score_tie``: a proxy score is not a score on val_images, no binomial tie
    for it."""
    return (p.get("score_tie") or 0.0) if p["score"] == "supernet" else 0.0


def run_search(ctx: SearchContext, objective_fn, train_on_val=None) -> SearchResult:
    """Search ``ctx.space`` with the batch objective ``objective_fn``, resuming from the journal;
    logs the run and every candidate to MLflow. ``train_on_val`` confirms the latency model's
    tied candidates by training (``hwnas.search.choice.summarize``; ``confirmations``)."""
    from rich.progress import Progress

    from hwnas import tracking
    from hwnas.checkpoint import claim_run
    from hwnas.files import read_journal
    from hwnas.search.evolution import search
    from hwnas.search.choice import family, summarize
    from hwnas.search.objectives import check_feasible

    p, spec, space, baseline = ctx.params, ctx.spec, ctx.space, ctx.baseline
    base = objective_fn([baseline])[0]
    budget, lat_budget = p.get("memory_budget"), p.get("latency_budget")
    constraints = search_constraints(p, base)
    check_feasible(space, ctx.estimator.estimate, constraints)

    fp = fingerprint(p, layout.SUPERNET, ctx.estimator_dir / "manifest.json")
    journal = layout.SEARCH_JOURNAL / f"{fp}.jsonl"
    with tracking.run("search", params={**p, "space": space.name},
                      tags={**tracking.stage_tags("search", spec.spec_hash()),
                            tracking.FINGERPRINT_TAG: fp}) as active, \
            Progress() as bar:
        claim_run(layout.SEARCH_JOURNAL / "mlflow_run", active.info.run_id)
        task = bar.add_task("search", total=p["candidates"])
        resumed = len(read_journal(journal))  # finished by an earlier (killed or equal) run
        t0 = time.perf_counter()
        df = search(space, objective_fn, candidates=p["candidates"], population=p["population"],
                    seed=p["seed"], constraints=constraints, journal=journal, seeds=[baseline],
                    on_batch=lambda n, _rows: bar.update(task, completed=n))
        seconds = time.perf_counter() - t0
        tie_se = tie_standard_errors(p)
        summary = summarize(df, base, budget, lat_budget, tie_se, p["val_images"],
                            p["confirm"], train_on_val)
        fastest, smallest = summary.pop("_fastest"), summary.pop("_smallest")
        summary.update(search_seconds=round(seconds, 1), resumed_candidates=resumed,
                       score_mode=p["score"])
        chosen = {"latency": fastest, "memory": smallest,
                  **family(df, base, p["family"], p["val_images"], tie_se)}
        if p["family"]:
            summary["family"] = {n: None if a is None else 1 - float(
                df.loc[df["arch"] == a, "latency_ms"].iloc[0]) / base["latency_ms"]
                for n, a in chosen.items() if n not in ("latency", "memory")}
        tracking.log_metrics(summary)  # before the candidates: a kill while they log keeps it
        logged = tracking.log_candidates(df, active.info.run_id, fp, chosen)
        tracking.log_metrics({"candidate_runs_logged": logged})

    front = df[df["pareto"]].sort_values("latency_ms")
    cols = ["arch", "score", "latency_ms", "memory_bytes"]
    first = df.drop_duplicates("arch")[cols]
    pareto = {"hardware": spec.name, "score_mode": p["score"],
              "baseline": {"arch": baseline.encode(), **{k: base[k] for k in cols[1:]}},
              "chosen": chosen,
              # the chosen networks' search scores: a chosen network need not be on the front
              "chosen_scores": {n: first[first["arch"] == a].to_dict("records")[0]
                                for n, a in chosen.items() if a is not None},
              "constraints": {"max_latency_ms": constraints.max_latency_ms,
                              "max_memory_bytes": constraints.max_memory_bytes},
              "pareto": front[cols].to_dict("records")}
    return SearchResult(df, base, pareto, summary, logged)


def describe(summary: dict) -> str:
    """The search's latency figures in words, as percentages: search estimates (estimator
    latency, supernet score on the val split), not the evaluated headline."""
    front = summary.get("front_latency_reduction_at_baseline_score")
    chosen = summary.get("chosen_latency_reduction")
    budget = summary.get("latency_budget_share")
    within = f", within the {100 * budget:g}% latency budget" if budget else ""
    base = f"{summary['baseline_score']:.1f}%"
    return (f"Pareto front ({summary['pareto_size']} networks): "
            + (f"{-100 * front:+.1f}% estimated latency vs the baseline at its supernet "
               f"score ({base}) or better" if front is not None
               else f"no network reaches the baseline's supernet score ({base})")
            + "; chosen latency model: "
            + (f"{-100 * chosen:+.1f}% at {summary['chosen_score']:.1f}% supernet "
               f"score{within}" if chosen is not None
               else f"none at the baseline's score{within}")
            + (f", the best on the val split of {summary['confirmed_networks']} tied networks "
               f"trained from scratch" if summary.get("confirmed_networks") else "")
            + f". Search estimates; the evaluated headline is in "
              f"{layout.EVALUATE / 'report.md'}")


def plot(result: SearchResult, path: Path) -> None:
    """``pareto.png``: every candidate (feasible or not) by supernet score against estimated
    latency (left) and memory (right), the 3-objective front, the baseline, the budgets and
    the chosen networks with the rule that chose each (a caption under the panels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    df = result.candidates[np.isfinite(result.candidates["latency_ms"])]
    base, s, pareto = result.baseline, result.summary, result.pareto
    limits = pareto.get("constraints", {})
    rows = {name: df[df["arch"] == arch].iloc[0] for name, arch in pareto["chosen"].items()
            if arch is not None and (df["arch"] == arch).any()}
    style = {"latency": ("D", "#2ca02c"), "memory": ("s", "#9467bd")}
    share = {"latency": s.get("latency_budget_share"), "memory": s.get("memory_budget_share")}
    ties = {"latency": s.get("chosen_tie_points") or 0.0, "memory": s.get("memory_tie_points") or 0.0}
    floor = {"latency": base["score"], "memory": base["score"] - 1.0}

    fig, axes = plt.subplots(1, 2, figsize=(13, 6.6), sharey=True)
    for ax, col, unit, scale, kind in ((axes[0], "latency_ms", "ms", 1.0, "latency"),
                                       (axes[1], "memory_bytes", "kB", 1e-3, "memory")):
        x = df[col] * scale
        ok = df["feasible"].to_numpy()
        ax.scatter(x[ok], df["score"][ok], s=8, c="#9e9e9e", label="feasible candidate")
        ax.scatter(x[~ok], df["score"][~ok], s=10, marker="x", c="#d0d0d0", linewidths=0.8,
                   label="infeasible (breaks a hard constraint)")
        front = df[df["pareto"]]
        ax.scatter(front[col] * scale, front["score"], s=20, c="#d62728", zorder=3,
                   label="Pareto front (score, latency, memory)")
        ax.scatter([base[col] * scale], [base["score"]], marker="*", s=220, c="#1f77b4",
                   zorder=5, label="MobileNetV2-like baseline")
        # where the chosen network of this panel had to be: under the budget, score floor
        limit = share[kind] * base[col] if share[kind] else None
        hard = limits.get(f"max_{col}")
        if hard:
            of = (f" = {100 * share[kind]:g}% of the baseline's"
                  if limit and abs(limit - hard) <= 1e-9 * hard else "")
            ax.axvline(hard * scale, c="k", ls="--", lw=1.2,
                       label=f"{kind} budget (hard constraint): {hard * scale:.4g} {unit}{of}")
        if limit and (not hard or abs(limit - hard) > 1e-9 * hard):
            ax.axvline(limit * scale, c="#555555", ls=":", lw=1.2,
                       label=f"{kind} choice: <= {100 * share[kind]:g}% of the baseline")
        ax.axhline(floor[kind], c="#1f77b4", ls=":", lw=1,
                   label="baseline score" + (" - 1 point" if kind == "memory" else ""))
        if kind in rows and ties[kind] > 0 and limit:
            pool = df[(df[col] <= limit) & (df["score"] >= floor[kind])]
            top = pool["score"].max()
            ax.fill_between([x.min(), limit * scale], top - ties[kind], top, color=style[kind][1],
                            alpha=0.12, lw=0, label=f"tied with the best under it "
                                                    f"({ties[kind]:.1f} points)")
        tried = df[df["arch"].isin([c["arch"] for c in s.get("confirmations", [])])]
        if len(tried):
            ax.scatter(tried[col] * scale, tried["score"], s=90, facecolors="none",
                       edgecolors=style["latency"][1], linewidths=1.5, zorder=5,
                       label="confirmed from scratch (val split)")
        for name, r in rows.items():
            marker, color = style.get(name, ("o", "k"))
            ax.scatter([r[col] * scale], [r["score"]], marker=marker, s=110, c=color,
                       edgecolors="k", zorder=6, label=f"chosen: {name}")
            same = [n for n, o in rows.items() if o["arch"] == r["arch"]]
            if name == same[0]:  # one label for a network chosen twice
                ax.annotate(", ".join(same), (r[col] * scale, r["score"]), xytext=(8, -12),
                            textcoords="offset points", fontsize=9, fontweight="bold",
                            color=color)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(f"estimated {kind} ({unit}, log scale)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=7.5)
    from hwnas import tasks

    axes[0].set_ylabel(f"search {tasks.get(layout.current_task()).label} (%, supernet, val split)")
    axes[0].set_title("score vs estimated latency")
    axes[1].set_title("score vs estimated memory")
    lat_rule = ("latency: among networks under the latency budget at the baseline's score "
                "or better" if share["latency"] else
                "latency: the fastest Pareto network at the baseline's score or better")
    mem_rule = (f"memory: among all candidates, feasible or not, within "
                f"{100 * share['memory']:g}% of the baseline's memory at its score - 1 point "
                "or better")
    tie = ("; of those within the shaded band (supernet noise) of the best, the most MACs wins "
           "(else the most accurate)" if any(ties.values()) else "; the most accurate")
    if s.get("confirmed_networks"):
        tie += (f"; for latency, {s['confirmed_networks']} of the tied networks, spread over "
                "their MACs, trained from scratch: the best on the val split wins")
    fig.suptitle("search: candidates, budgets and the chosen networks", fontsize=12)
    fig.text(0.01, 0.01, f"Chosen {lat_rule}; {mem_rule}{tie}. "
             "The front is over three objectives, so a front point may look beaten in one panel.",
             fontsize=8, wrap=True)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    fig.savefig(path, dpi=120)
    plt.close(fig)
