"""DVC stage ``search``: multi-objective evolution over the supernet's space
(``hwnas.search.run``). Accuracy from the supernet (BN-recalibrated, val split) or a
zero-shot proxy; latency and memory from the trained estimator. Writes
``results/search/``: ``candidates.parquet``, ``pareto.json`` (the front, the baseline
and the chosen networks), ``metrics.json`` and ``pareto.png``. Finished candidates are
journaled to ``results/search/journal/`` (``persist: true``), so a killed search
resumes without losing or repeating any; so are the from-scratch runs that confirm the
latency model (``search.confirm``), in ``results/search/confirm.jsonl``.
"""
from __future__ import annotations

from hwnas import layout
from hwnas.params import load_params, run_stage


def main() -> None:
    from hwnas.files import staged
    from hwnas.search.objectives import make_objective_fn
    from hwnas.proof import confirm_trainer
    from hwnas.search.run import check_space, describe, load_search_context, plot, run_search

    params = load_params()
    ctx = load_search_context(params)
    check_space(ctx.space)
    scorer = ctx.scorer()
    if hasattr(scorer, "fanout"):
        print(f"search: scoring candidates on {scorer.fanout.where}")
    try:
        # the scoring workers leave before confirmations train (2 cores)
        result = run_search(ctx, make_objective_fn(scorer, ctx.estimator.estimate),
                            confirm_trainer(params, before=getattr(scorer, "close", None)))
    finally:
        if hasattr(scorer, "close"):
            scorer.close()

    layout.CONFIRMATIONS.touch()  # an output even where nothing was confirmed
    with staged() as files:  # every output, or none: the previous ones stay whole
        result.candidates.to_parquet(files.path(layout.CANDIDATES), index=False)
        files.json(layout.PARETO, result.pareto)
        files.json(layout.SEARCH / "metrics.json", result.summary)
        plot(result, files.path(layout.SEARCH / "pareto.png"))
    s = result.summary
    print(f"search: {s['candidates']} candidates ({s['resumed_candidates']} from the journal, "
          f"{result.logged_runs} new MLflow candidate runs) in {s['search_seconds']:.0f} s")
    print(f"search: {describe(s)}")
    if ctx.params["confirm"] > 1 and not s["confirmed_networks"]:
        print("search: search.confirm: nothing confirmed (it needs search.latency_budget and at "
              "least two networks tied under it)")


if __name__ == "__main__":
    run_stage("search", main)
