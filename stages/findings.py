"""DVC stage ``findings``: the article's findings reproduced on the task's pipeline
(``hwnas.findings``). Reads the supernet, the estimator, the search's candidates, the
baseline's from-scratch runs, the evaluation and the other tasks' Pareto fronts
(``findings.rules_from``); writes ``results/<task>/findings/``: ``metrics.json``,
``report.md``, ``ablation.png``, ``curation.png`` and ``curation.csv``. Searches are journaled
under ``journal/`` and from-scratch runs in ``runs.jsonl`` (``persist: true``), so a killed
stage resumes.
"""
from __future__ import annotations

import json
import time

from hwnas import layout
from hwnas.params import load_params, run_stage, section


def say(msg: str) -> None:
    print(f"findings: {msg}", flush=True)


def _read(path, stage: str) -> dict:
    from hwnas.findings import FindingsError

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise FindingsError(f"{path}: unreadable ({err.__class__.__name__}); run the {stage} "
                            f"stage first") from None


def main() -> None:
    from hwnas import tasks, tracking
    from hwnas.arch import parse_arch
    from hwnas.context import train_context
    from hwnas.experiments import (curation_runs, curation_spaces, curation_table,
                                   flops_findings, plot_curation)
    from hwnas.evaluation.metrics import equal_word
    from hwnas.files import read_table, staged, write_json
    from hwnas.findings import (FindingsError, Judge, ablation_searches, expert_archs,
                                oneshot_at_equal_compute, plot_ablation, proxy_ranking, report,
                                rules_sources, summary, zeroshot_chain)
    from hwnas.proof import confirm_trainer
    from hwnas.search.objectives import make_objective_fn
    from hwnas.search.run import fingerprint, load_search_context

    params = load_params()
    p, task = section(params, "findings"), layout.current_task()
    t0 = time.perf_counter()
    baseline = _read(layout.BASELINE / "metrics.json", f"baseline@{task}")
    evaluated = _read(layout.EVALUATE / "metrics.json", f"evaluate@{task}")
    df = read_table(layout.CANDIDATES, {"arch": "text", "pareto": "any"},
                    f"no search candidates (run the search@{task} stage)")
    others = rules_sources(p["rules_from"], task)  # checked before any work
    sctx = load_search_context(params)
    spec, out = sctx.spec, layout.FINDINGS
    if spec.measured_by:  # its searches would be judged by a sketch of the processor
        raise FindingsError(f"params.yaml: base.hardware: {spec.name} is measured by "
                            f"{spec.measured_by}; the findings are judged by the simulator: "
                            f"name a simulated spec")
    inputs = (layout.SUPERNET, sctx.estimator_dir / "manifest.json")
    scoring = {k: sctx.params[k] for k in ("seed", "hardware", "score", "calib_images",
                                           "val_images")}
    journals = {kind: out / "journal" / fingerprint({**scoring, **budget}, *inputs)
                for kind, budget in (("ablation", {k: p[k] for k in ("candidates", "population")}),
                                     ("curation", p["curation"]),
                                     ("zeroshot", {**p["zeroshot"], "population": p["population"],
                                                   **{k: sctx.params[k] for k in (
                                                       "latency_budget", "max_latency_ms",
                                                       "memory_budget", "score_tie",
                                                       "confirm_seeds")}}))}
    ctx = train_context(section(params, "train_supernet"))
    z = p["zeroshot"]
    with tracking.run("findings", params=p, tags=tracking.stage_tags("findings",
                                                                     spec.spec_hash())):
        ranking = proxy_ranking(sctx, ctx, z["networks"], z["seeds"], out / "zeroshot.jsonl",
                                log=say)
        scorer = sctx.scorer()
        try:  # the searches, then the training (the scoring workers leave first: 2 cores)
            objective = make_objective_fn(scorer, sctx.estimator.estimate)
            say(f"ablation: 4 searches of {p['candidates']} candidates")
            searches = ablation_searches(sctx, objective, p["candidates"], p["population"],
                                         journals["ablation"])
            c = p["curation"]
            say(f"curation: {c['seeds']} seeds x {c['candidates']} candidates per space")
            curves = curation_runs(curation_spaces(sctx.space,
                                                   params["train_supernet"]["space"]),
                                   objective, seeds=range(c["seeds"]),
                                   candidates=c["candidates"], population=c["population"],
                                   min_score=objective([sctx.baseline])[0]["score"],
                                   journal=journals["curation"])
            chain_path = journals["zeroshot"] / f"chain-{ranking['proxy']}.json"
            if chain_path.is_file():  # its compute sets the one-shot budget: measured once
                chain = json.loads(chain_path.read_text())
            else:
                say(f"zero-shot chain: {ranking['proxy']} on {z['pool']} random networks "
                    f"within the search's limits, the best {z['keep']} by the supernet, "
                    f"{z['confirm']} confirmed")
                chain = zeroshot_chain(
                    sctx, objective, sctx.scorer(ranking["proxy"]), z["pool"], z["keep"],
                    z["confirm"], confirm_trainer(params, say, getattr(scorer, "close", None),
                                                  out / "zeroshot-confirm.jsonl"),
                    parallel_runs=2 if ctx.device.type == "cpu" else 1)  # scratch_results'
                write_json(chain_path, chain)
        finally:
            if hasattr(scorer, "close"):
                scorer.close()
        scorer = sctx.scorer()
        try:
            oneshot = oneshot_at_equal_compute(sctx, make_objective_fn(
                scorer, sctx.estimator.estimate), chain, p["population"], journals["zeroshot"])
        finally:
            if hasattr(scorer, "close"):
                scorer.close()

        judge = Judge(params, ctx, spec, baseline,
                      float(section(params, "evaluate")["non_inferiority_margin"]),
                      out / "runs.jsonl", log=say)
        ablation = {name: {**s, **(judge(parse_arch(s["chosen"])) if s["chosen"] else {})}
                    for name, s in searches.items()}
        expert = {name: {**{k: e[k] for k in ("changed", "rules", "rules_tried")},
                         **judge(e["arch"])}
                  for name, e in expert_archs(sctx.baseline, sctx.estimator.estimate,
                                              spec.parallelism, others).items()}

        zeroshot = {"ranking": ranking,
                    **{arm: {**row, **(judge(parse_arch(row["chosen"])) if row["chosen"] else {})}
                       for arm, row in (("chain", chain), ("oneshot", oneshot))}}
        stats, pairs, stages = flops_findings(df, sctx.baseline, sctx.space, spec)
        flops = {**stats, "pairs": pairs.to_dict("records"),
                 "stages": stages.astype(object).where(stages.notna(), None).to_dict("records")}
        table = curation_table(curves)
        metrics = {"task": task, "hardware": spec.name,
                   **summary(ablation, expert, table, flops, evaluated, zeroshot),
                   "seconds": round(time.perf_counter() - t0, 1)}
        label = tasks.get(task).label
        with staged() as files:  # every output, or none: the previous ones stay whole
            files.json(out / "metrics.json", metrics)
            files.text(out / "report.md", report(metrics, label, spec.name, judge.margin,
                                                 len(baseline["seeds"])))
            plot_ablation(metrics, files.path(out / "ablation.png"))
            plot_curation(curves, files.path(out / "curation.png"),
                          f"curated vs uncurated on {spec.name} ({c['seeds']} seeds)")
            table.to_csv(files.path(out / "curation.csv"), index=False)
        tracking.log_metrics({k: v for k, v in metrics.items() if "." in k})
    for name, row in {**ablation, **expert, **{f"zero-shot {k}": zeroshot[k]
                                               for k in ("chain", "oneshot")}}.items():
        if "score_delta" not in row:
            say(f"{name}: no network at the baseline's supernet score")
            continue
        say(f"{name}: latency -{100 * row['latency_reduction']:.1f}%, score "
            f"{row['score_delta']:+.2f} points ({equal_word(row['shown_equal'])})")
    say(f"{metrics['seconds']:.0f} s -> {out / 'report.md'}")


if __name__ == "__main__":
    run_stage("findings", main)
