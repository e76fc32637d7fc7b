"""DVC stage ``evaluate``: the chosen models against the baseline, judged by the simulator.

Reads ``results/extract/subnets.json`` (test accuracy of the extracted, fine-tuned
models and the baseline fine-tuned the same way), ``results/baseline/metrics.json``
(the baseline from scratch), ``results/search/pareto.json`` and
``candidates.parquet``, and the latency estimator. Simulates every model on the target
spec (latency, energy, memory) and reports the estimator's error on each; derives the
article's table (fused-IBN search x depth-multiplier search) from the candidates at
simulated latency. Writes ``results/evaluate/metrics.json``, ``models.json``,
``table.json``, ``pareto.png`` and ``report.md``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from hwnas import layout
from hwnas.params import load_params, run_stage, section

BASELINES = ("baseline-scratch", "baseline-finetuned")


def say(msg: str) -> None:
    print(f"evaluate: {msg}", flush=True)


def _read_json(path: Path, stage: str) -> dict:
    if not path.is_file():
        raise SystemExit(f"evaluate: {path}: not found; run the {stage} stage first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SystemExit(f"evaluate: {path}: not valid JSON: {err}") from None


def table_definition(tolerance: float) -> str:
    return ("Table definition: each cell restricts the one search's feasible candidates to "
            "the sub-space that search setting allows (no fused-IBN block when fused-IBN "
            "search is off; the baseline's per-stage depths, i.e. depth multiplier 1, when "
            "depth-multiplier search is off), adds the baseline, keeps those whose search "
            f"accuracy (supernet, val split) is at least the baseline's"
            f"{f' minus {tolerance:g} points' if tolerance else ''}, and reports the lowest "
            "simulated latency among them against the baseline's. The cells come from one "
            "search of the full space, not four searches, so restricted cells hold fewer "
            "candidates and understate a dedicated search; accuracy here is the search's "
            "estimate, not the fine-tuned test accuracy.")


def main() -> None:
    import pandas as pd

    from hardware.spec import load_spec
    from hwnas import tracking
    from hwnas.arch import parse_arch
    from hwnas.estimator import Estimator
    from hwnas.evaluation import EvaluateError
    from hwnas.evaluation.ablation import ablation_table
    from hwnas.evaluation.metrics import build_metrics, simulate_latencies, simulate_models
    from hwnas.evaluation.plots import plot
    from hwnas.evaluation.report import report
    from hwnas.extract import ExtractError, read_pareto
    from hwnas.lineage import lineage_tags
    from hwnas.space import SearchSpace

    params = load_params()
    p = section(params, "evaluate")
    t0 = time.perf_counter()
    try:
        pareto = read_pareto(layout.PARETO)
    except ExtractError as err:
        raise SystemExit(f"evaluate: {err}") from None
    cand_path = layout.CANDIDATES
    if not cand_path.is_file():
        raise SystemExit(f"evaluate: {cand_path}: not found; run the search stage first")
    candidates = pd.read_parquet(cand_path)
    extracted = _read_json(layout.EXTRACTED, "extract")
    scratch = _read_json(layout.BASELINE / "metrics.json", "baseline")
    spec = load_spec(p["hardware"])
    if extracted.get("hardware") not in (None, spec.name):
        raise SystemExit(f"evaluate: {layout.EXTRACTED}: extracted for {extracted['hardware']}, but "
                         f"base.hardware is {spec.name}; rerun extract")
    space = SearchSpace.from_json(extracted["space"])

    # every model by name: test accuracy from extract/baseline, figures from the simulator
    records = {n: dict(r) for n, r in extracted["models"].items()}
    records["baseline-scratch"] = {**scratch, "search_accuracy": None}
    base_search_arch = parse_arch(pareto["baseline"]["arch"]).with_name("").encode()
    if records["baseline-scratch"]["arch"] != base_search_arch:
        raise SystemExit(f"evaluate: {layout.BASELINE / 'metrics.json'} trained {records['baseline-scratch']['arch']}, "
                         f"but {layout.PARETO} has the baseline {base_search_arch}; "
                         f"rerun the stale stage")
    archs = {n: parse_arch(r["arch"]) for n, r in records.items()}
    estimator = Estimator.load(layout.estimator_dir(spec.name), spec)
    say(f"simulating {len(archs)} models and {candidates['arch'].nunique()} candidates "
        f"on {spec.name}")
    sims = simulate_models(archs, spec, estimator.estimate)
    models = {n: {**records[n], **sims[n]} for n in records}
    for name in ("latency", "memory"):
        if name not in models:
            say(f"note: no '{name}' model was extracted (extract.chosen)")
    try:
        metrics = build_metrics(models, [b for b in BASELINES if b in models],
                                latency_name="latency" if "latency" in models else
                                next(n for n in models if n not in BASELINES),
                                memory_name="memory" if "memory" in models else None)
    except EvaluateError as err:
        raise SystemExit(f"evaluate: {err}") from None

    lat = simulate_latencies(list(candidates["arch"]) + [pareto["baseline"]["arch"]], spec)
    candidates = candidates.assign(sim_latency_ms=candidates["arch"].map(lat))
    base_search = {"arch": base_search_arch, "accuracy": pareto["baseline"]["accuracy"],
                   "sim_latency_ms": lat[pareto["baseline"]["arch"]]}
    tol = float(p["equal_accuracy_tolerance"])
    table = ablation_table(candidates, base_search, space, tol)
    metrics["table"] = {f"fused_{'yes' if r['fused_ibn_search'] else 'no'}"
                        f"_depth_{'yes' if r['depth_multiplier_search'] else 'no'}":
                        r["latency_reduction"] for r in table}
    cand_err = (candidates["latency_ms"] / candidates["sim_latency_ms"] - 1).abs()
    metrics.update(candidates_estimator_error_median=float(cand_err.median()),
                   candidates_estimator_error_p90=float(cand_err.quantile(0.9)),
                   hardware=spec.name, accuracy_mode=pareto.get("accuracy_mode"))

    layout.EVALUATE.mkdir(parents=True, exist_ok=True)
    plot(candidates, base_search, models, BASELINES, layout.EVALUATE / "pareto.png")
    info = {"hardware": spec.name, "dataset": extracted["data"]["dataset"],
            "test_images": extracted["data"]["test"],
            "baseline_budget": (f"From scratch: {scratch.get('budget', '?')}. Fine-tuned: "
                                f"extracted from the supernet and fine-tuned "
                                f"{extracted['finetune']['epochs']} epoch(s) at lr "
                                f"{extracted['finetune']['lr']:g}, like the chosen models."),
            "table_definition": table_definition(tol),
            "notes": [
                f"Search accuracy mode: {pareto.get('accuracy_mode')}; the search ranks by "
                f"supernet (inherited) accuracy on the val split, which is not the final test "
                f"accuracy after fine-tuning.",
                f"Estimator on all {len(candidates)} candidates: median latency error "
                f"{100 * metrics['candidates_estimator_error_median']:.1f}%, 90th percentile "
                f"{100 * metrics['candidates_estimator_error_p90']:.1f}%.",
                "Reproduce: `dvc repro evaluate` (or `python -m stages.extract`, "
                "`python -m stages.baseline`, `python -m stages.evaluate`)."]}
    (layout.EVALUATE / "report.md").write_text(report(metrics, models, table, info))
    (layout.EVALUATE / "models.json").write_text(json.dumps(models, indent=2) + "\n")
    (layout.EVALUATE / "table.json").write_text(json.dumps(table, indent=2) + "\n")
    (layout.EVALUATE / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    with tracking.run("evaluate", params={**p, "accuracy_mode": pareto.get("accuracy_mode")},
                      tags=lineage_tags("evaluate", spec.spec_hash())):
        flat = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
        flat.update({f"memory_model.{k}": v for k, v in metrics.get("memory_model", {}).items()})
        flat.update({f"table.{k}": v for k, v in metrics["table"].items()})
        tracking.log_metrics(flat)
        _log_artifacts(layout.EVALUATE)
    t = metrics["targets"]
    say(f"latency -{100 * metrics['latency_reduction']:.1f}% at {metrics['accuracy_delta']:+.2f} "
        f"points (target {'met' if t['latency_met'] else 'not met'})"
        + (f"; memory model -{100 * metrics['memory_model']['memory_reduction']:.1f}% memory at "
           f"{metrics['memory_model']['accuracy_delta']:+.2f} points (target "
           f"{'met' if t['memory_met'] else 'not met'})" if "memory_model" in metrics else "")
        + f"; {time.perf_counter() - t0:.0f} s -> {layout.EVALUATE / 'report.md'}")


def _log_artifacts(out: Path) -> None:
    try:
        import mlflow

        for name in ("report.md", "pareto.png", "metrics.json"):
            mlflow.log_artifact(str(out / name))
    except Exception as err:  # artifacts are a convenience; lineage tags are already logged
        say(f"note: could not log artifacts to MLflow: {err}")


if __name__ == "__main__":
    run_stage("evaluate", main)
