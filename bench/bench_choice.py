"""Which network should the search hand over? Each choice rule's latency model (within the
search's latency budget) and the baseline, trained from scratch with the baseline's budget
over paired seeds: does the pick hold equal score, or was it the supernet's noise?

Run (repo root, after ``hwnas run``):  .venv/bin/python bench/bench_choice.py [--seeds 3]
[--search-seeds 1 2]  (the pipeline's search, or new searches with those seeds: out of sample)

Rules: ``search.score_tie`` = 0 (the highest supernet score), 1 and 2 standard errors
(ties go to the most MACs; 2 is the default). Runs go through ``stages.baseline.scratch_runs``
(two worker processes of one thread, seeds ``seed`` .. ``seed + n - 1``), as the pipeline's
own from-scratch score does, so the baseline's figures equal the pipeline's for equal seeds
(and are read from ``results/baseline/metrics.json`` when its seeds are the ones asked for).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root
from hwnas import layout  # noqa: E402
from hwnas.arch import parse_arch  # noqa: E402
from hwnas.evaluation.metrics import paired_se  # noqa: E402
from hwnas.extract import read_pareto  # noqa: E402
from hwnas.lowering import static_cost  # noqa: E402
from hwnas.context import train_context  # noqa: E402
from hwnas.params import load_params, section  # noqa: E402
from hwnas.scratch import scratch_runs  # noqa: E402
from hwnas.search.choice import summarize  # noqa: E402


def searched(params: dict, seeds: list[int]):
    """(label, candidates, baseline row) of the pipeline's search, or of new searches with
    ``seeds`` (the stage's settings, no journal)."""
    if not seeds:
        yield ("pipeline search", pd.read_parquet(layout.CANDIDATES),
               read_pareto(layout.PARETO)["baseline"])
        return
    from hwnas.search.evolution import Constraints, search
    from hwnas.search.objectives import make_objective_fn
    from hwnas.search.run import load_search_context as load_context

    ctx = load_context(params)
    scorer = ctx.scorer()
    try:
        objective_fn = make_objective_fn(scorer, ctx.estimator.estimate)
        base = objective_fn([ctx.baseline])[0]
        p = ctx.params
        for seed in seeds:
            df = search(ctx.space, objective_fn, candidates=p["candidates"],
                        population=p["population"], seed=seed, seeds=[ctx.baseline],
                        constraints=Constraints(p["latency_budget"] * base["latency_ms"]))
            yield f"search seed {seed}", df, {**base, "arch": ctx.baseline.encode()}
    finally:
        scorer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ties", type=float, nargs="+", default=[0.0, 1.0, 2.0])
    ap.add_argument("--search-seeds", type=int, nargs="*", default=[])
    args = ap.parse_args()
    params = load_params()
    params["baseline"] = {**params["baseline"], "seeds": args.seeds}
    search = params["search"]
    runs: dict[str, list[float]] = {}  # architecture -> from-scratch test scores
    ctx = train_context(section(params, "train_supernet"))

    def trained(arch: str) -> list[float]:
        key = parse_arch(arch).key  # the baseline row carries a name
        if key not in runs:
            runs[key] = scratch_runs(params, ctx, parse_arch(key))[1]["score_runs"]
        return runs[key]

    done = layout.BASELINE / "metrics.json"
    if done.is_file():  # the pipeline's baseline, when it trained the seeds asked for
        rec = json.loads(done.read_text())
        if rec.get("seeds") == [params["base"]["seed"] + i for i in range(args.seeds)]:
            runs[rec["arch"]] = rec["score_runs"]
    for label, df, base in searched(params, args.search_seeds):
        baseline = trained(base["arch"])
        print(f"baseline: {baseline} (mean {statistics.fmean(baseline):.2f})", flush=True)
        for t in args.ties:
            s = summarize(df, base, search.get("memory_budget"), search["latency_budget"], t,
                          search["val_images"])
            rule, arch = f"{label}, tie {t:g} SE", s["_fastest"]
            if arch is None:
                print(f"{rule}: no network within the latency budget")
                continue
            accs = trained(arch)
            delta = statistics.fmean(accs) - statistics.fmean(baseline)
            print(f"{rule}: supernet {s['chosen_score']:.1f}%, est. latency "
                  f"-{100 * s['chosen_latency_reduction']:.1f}%, "
                  f"{static_cost(parse_arch(arch)).macs / 1e6:.2f} MMACs; from scratch {accs} "
                  f"(mean {statistics.fmean(accs):.2f}): {delta:+.2f} points vs the baseline "
                  f"(paired SE {paired_se(accs, baseline) or float('nan'):.2f}) [{arch}]",
                  flush=True)


if __name__ == "__main__":
    main()
