"""DVC stage ``search``: multi-objective evolution over the supernet's space.

Accuracy comes from the supernet (BN-recalibrated, val split) or a zero-shot proxy;
latency and memory from the trained estimator. Writes ``results/search/``:
``candidates.parquet`` (every candidate), ``pareto.json`` (the front, the baseline
and the chosen networks), ``metrics.json`` and ``pareto.png``. Finished candidates
are journaled to ``results/search/journal/`` (a ``persist: true`` output), so a
killed search resumes without losing or repeating any.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hwnas.params import ParamsError, load_params, section

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see stages/train_supernet.py

OUT = Path("results/search")
SUPERNET = Path("models/supernet.pt")
ACCURACY_MODES = ("supernet", "naswot", "synflow", "grad_norm")


def parse_params(params: dict) -> dict:
    p = section(params, "search")
    if p.get("accuracy") not in ACCURACY_MODES:
        raise ParamsError(f"params.yaml: search.accuracy must be one of {', '.join(ACCURACY_MODES)}")
    for key in ("candidates", "population", "calib_images", "val_images"):
        v = p.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ParamsError(f"params.yaml: search.{key} must be a positive integer, got {v!r}")
    tie = p.get("accuracy_tie")
    if tie is not None and (isinstance(tie, bool) or not isinstance(tie, (int, float)) or tie < 0):
        raise ParamsError(f"params.yaml: search.accuracy_tie must be a non-negative number or "
                          f"null, got {tie!r}")
    for key in ("max_latency_ms", "latency_budget", "memory_budget"):
        v = p.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
            raise ParamsError(f"params.yaml: search.{key} must be a positive number or null")
    return p


def fingerprint(p: dict, *inputs: Path) -> str:
    """Params plus input file digests: a journal only resumes the same search (the choice
    among its candidates, ``accuracy_tie``, does not change the search)."""
    keep = {k: v for k, v in p.items() if k != "accuracy_tie"}
    h = hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode())
    for path in inputs:
        h.update(path.read_bytes() if path.is_file() else b"")
    return h.hexdigest()[:16]


def tie_points(accuracy: float, images: int, standard_errors: float) -> float:
    """How far below ``accuracy`` (%) a candidate still counts as tied with it:
    ``standard_errors`` binomial standard errors of an accuracy measured on ``images``."""
    if images <= 0 or standard_errors <= 0:  # no measurement to be noisy about: no tie
        return 0.0
    a = min(max(accuracy / 100.0, 0.0), 1.0)
    return standard_errors * 100.0 * math.sqrt(a * (1.0 - a) / images)


def pick(rows: pd.DataFrame, tie: float = 0.0) -> pd.Series | None:
    """The most accurate row, or with ``tie`` > 0 the row with the most MACs among those
    within ``tie`` points of the best (then the more accurate). The supernet's accuracy
    cannot tell such networks apart, while the accelerator runs them within the same
    budget and, trained from scratch, accuracy rises with MACs (``eval_supernet``)."""
    if not len(rows):
        return None
    if tie <= 0 or "macs" not in rows:
        return rows.loc[rows["accuracy"].idxmax()]
    tied = rows[rows["accuracy"] >= rows["accuracy"].max() - tie]
    return tied.sort_values(["macs", "accuracy"], ascending=False).iloc[0]


def summarize(df: pd.DataFrame, base: dict, budget: float | None,
              latency_budget: float | None = None, tie_se: float = 0.0,
              val_images: int = 0) -> dict:
    """The figures the issue asks for: latency saved at baseline accuracy, and the
    best network within half (or ``budget`` of) the baseline's memory. The chosen
    latency model is the best network (``pick``) within ``latency_budget`` of the
    baseline's latency when one is set, else the fastest at baseline accuracy; ties
    span ``tie_se`` standard errors of an accuracy on ``val_images`` (0: none)."""
    front = df[df["pareto"]]
    at_acc = front[front["accuracy"] >= base["accuracy"]]
    fastest = at_acc.loc[at_acc["latency_ms"].idxmin()] if len(at_acc) else None
    chosen, tie = fastest, 0.0
    if latency_budget:
        within = df[(df["latency_ms"] <= latency_budget * base["latency_ms"])
                    & (df["accuracy"] >= base["accuracy"])]
        tie = tie_points(within["accuracy"].max(), val_images, tie_se) if len(within) else 0.0
        chosen = pick(within, tie)
    share = budget or 0.5
    fits = df[(df["memory_bytes"] <= share * base["memory_bytes"])
              & (df["accuracy"] >= base["accuracy"] - 1.0)]
    small = pick(fits, tie_points(fits["accuracy"].max(), val_images, tie_se) if len(fits) else 0.0)
    return {
        "candidates": int(len(df)), "unique_architectures": int(df["arch"].nunique()),
        "pareto_size": int(len(front)), "feasible": int(df["feasible"].sum()),
        "baseline_accuracy": base["accuracy"], "baseline_latency_ms": base["latency_ms"],
        "baseline_memory_bytes": base["memory_bytes"],
        "best_latency_ms_at_baseline_accuracy": None if fastest is None else float(fastest["latency_ms"]),
        "latency_reduction_at_baseline_accuracy":
            None if fastest is None else 1 - float(fastest["latency_ms"]) / base["latency_ms"],
        "accuracy_of_fastest": None if fastest is None else float(fastest["accuracy"]),
        "latency_budget_share": latency_budget,
        "chosen_latency_reduction":
            None if chosen is None else 1 - float(chosen["latency_ms"]) / base["latency_ms"],
        "chosen_accuracy": None if chosen is None else float(chosen["accuracy"]),
        "chosen_tie_points": round(tie, 3),
        "memory_budget_share": share,
        "memory_budget_fit": small is not None,
        "memory_reduction_within_budget":
            None if small is None else 1 - float(small["memory_bytes"]) / base["memory_bytes"],
        "accuracy_within_budget": None if small is None else float(small["accuracy"]),
        "out_of_range_candidates":
            int((df["out_of_range"] > 0).sum()) if "out_of_range" in df else 0,
        "_fastest": None if chosen is None else chosen["arch"],
        "_smallest": None if small is None else small["arch"],
    }


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


def log_candidates(df: pd.DataFrame, parent_run_id: str) -> None:
    """One MLflow child run per candidate, batched (about 13 ms a run here)."""
    from mlflow.entities import Metric, Param, RunTag

    from hwnas.tracking import EXPERIMENT, _mlflow

    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(EXPERIMENT).experiment_id
    now = int(time.time() * 1000)
    for r in df.itertuples(index=False):
        run = client.create_run(exp, run_name=f"candidate-{r.trial}",
                                tags={"mlflow.parentRunId": parent_run_id})
        client.log_batch(run.info.run_id,
                         metrics=[Metric(k, float(getattr(r, k)), now, 0)
                                  for k in ("accuracy", "latency_ms", "memory_bytes")],
                         params=[Param("arch", r.arch)],
                         tags=[RunTag("pareto", str(bool(r.pareto))),
                               RunTag("feasible", str(bool(r.feasible)))])
        client.set_terminated(run.info.run_id)


@dataclass
class Context:
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
            return ParallelSupernetAccuracy(SUPERNET, self.calib, self.val,
                                            workers or p.get("workers", 2))
        proxy = proxy_accuracy(mode, self.val[0][:64], self.val[1][:64], p["seed"])
        return lambda archs: [proxy(a) for a in archs]


def load_context(params: dict) -> Context:
    import torch

    from hardware.spec import load_spec
    from hwnas.data import load_dataset
    from hwnas.estimator import Estimator
    from hwnas.search.objectives import baseline_arch
    from hwnas.supernet import load_supernet

    p = parse_params(params)
    data = params["train_supernet"]["data"]
    spec = load_spec(p["hardware"])
    est_dir = Path(p.get("estimator") or f"models/estimator/{spec.name}")
    estimator = Estimator.load(est_dir, spec)
    space = load_supernet(SUPERNET).space
    base_widths = [c for c, _, _ in params["train_supernet"]["space"]["stages"]]
    splits = load_dataset(data["dataset"], data["resolution"], p["seed"], data["val_fraction"],
                          data["test_fraction"])
    g = torch.Generator().manual_seed(p["seed"])
    calib_idx = torch.randperm(len(splits.train.y), generator=g)[:p["calib_images"]]
    return Context(p, spec, est_dir, estimator, space, baseline_arch(space, base_widths),
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


def main() -> None:
    from hwnas.estimator import EstimatorError
    from hwnas.search.objectives import SearchInputError, make_objective_fn

    try:
        ctx = load_context(load_params())
        check_space(ctx.space)
    except (ParamsError, EstimatorError, SearchInputError, FileNotFoundError) as err:
        raise SystemExit(f"search: {err}") from None
    scorer = ctx.scorer()
    try:
        run_search(ctx, make_objective_fn(scorer, ctx.estimator.estimate))
    except SearchInputError as err:
        raise SystemExit(f"search: {err}") from None
    finally:
        if hasattr(scorer, "close"):
            scorer.close()


def run_search(ctx: Context, evaluate) -> None:
    from rich.progress import Progress

    from hwnas import tracking
    from hwnas.lineage import lineage_tags
    from hwnas.search.evolution import Constraints, read_journal, search
    from hwnas.search.objectives import check_feasible

    p, spec, space, baseline = ctx.params, ctx.spec, ctx.space, ctx.baseline
    base = evaluate([baseline])[0]
    budget, lat_budget = p.get("memory_budget"), p.get("latency_budget")
    limits = [v for v in (p.get("max_latency_ms"),
                          lat_budget * base["latency_ms"] if lat_budget else None) if v]
    constraints = Constraints(min(limits) if limits else None,
                              budget * base["memory_bytes"] if budget else None)
    check_feasible(space, ctx.estimator.estimate, constraints)

    OUT.mkdir(parents=True, exist_ok=True)
    journal = OUT / "journal" / f"{fingerprint(p, SUPERNET, ctx.estimator_dir / 'manifest.json')}.jsonl"
    with tracking.run("search", params={**p, "space": space.name},
                      tags=lineage_tags("search", spec.spec_hash())) as active, \
            Progress() as bar:
        task = bar.add_task("search", total=p["candidates"])
        resumed = len(read_journal(journal))  # finished by an earlier (killed or equal) run
        t0 = time.perf_counter()
        df = search(space, evaluate, candidates=p["candidates"], population=p["population"],
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
        log_candidates(df, active.info.run_id)

    df.to_parquet(OUT / "candidates.parquet", index=False)
    front = df[df["pareto"]].sort_values("latency_ms")
    cols = ["arch", "accuracy", "latency_ms", "memory_bytes"]
    (OUT / "pareto.json").write_text(json.dumps({
        "hardware": spec.name, "accuracy_mode": p["accuracy"],
        "baseline": {"arch": baseline.encode(), **{k: base[k] for k in cols[1:]}},
        "chosen": {"latency": fastest, "memory": smallest},
        "pareto": front[cols].to_dict("records")}, indent=2) + "\n")
    (OUT / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(df, base, OUT / "pareto.png")
    print(f"search: {summary['candidates']} candidates ({resumed} from the journal) in "
          f"{seconds:.0f} s; Pareto front "
          f"{summary['pareto_size']}; latency reduction at baseline accuracy "
          f"{summary['latency_reduction_at_baseline_accuracy']}")


if __name__ == "__main__":
    main()
