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

from hwnas.params import ParamsError, load_params, run_stage, section

SEARCH = Path("results/search")
EXTRACT = Path("results/extract/subnets.json")
BASELINE = Path("results/baseline/metrics.json")
OUT = Path("results/evaluate")
ESTIMATOR_DIR = "models/estimator/{hardware}"
BASELINES = ("baseline-scratch", "baseline-finetuned")


def parse_params(params: dict) -> dict:
    p = section(params, "evaluate")
    v = p.get("equal_accuracy_tolerance")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise ParamsError(f"params.yaml: evaluate.equal_accuracy_tolerance must be a "
                          f"non-negative number (points), got {v!r}")
    return p


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
    from hwnas.supernet import space_from_json

    params = load_params()
    p = parse_params(params)
    t0 = time.perf_counter()
    try:
        pareto = read_pareto(SEARCH / "pareto.json")
    except ExtractError as err:
        raise SystemExit(f"evaluate: {err}") from None
    cand_path = SEARCH / "candidates.parquet"
    if not cand_path.is_file():
        raise SystemExit(f"evaluate: {cand_path}: not found; run the search stage first")
    candidates = pd.read_parquet(cand_path)
    extracted = _read_json(EXTRACT, "extract")
    scratch = _read_json(BASELINE, "baseline")
    spec = load_spec(p["hardware"])
    if extracted.get("hardware") not in (None, spec.name):
        raise SystemExit(f"evaluate: {EXTRACT}: extracted for {extracted['hardware']}, but "
                         f"base.hardware is {spec.name}; rerun extract")
    space = space_from_json(extracted["space"])

    # every model by name: test accuracy from extract/baseline, figures from the simulator
    records = {n: dict(r) for n, r in extracted["models"].items()}
    records["baseline-scratch"] = {**scratch, "search_accuracy": None}
    base_search_arch = parse_arch(pareto["baseline"]["arch"]).with_name("").encode()
    if records["baseline-scratch"]["arch"] != base_search_arch:
        raise SystemExit(f"evaluate: {BASELINE} trained {records['baseline-scratch']['arch']}, "
                         f"but {SEARCH / 'pareto.json'} has the baseline {base_search_arch}; "
                         f"rerun the stale stage")
    archs = {n: parse_arch(r["arch"]) for n, r in records.items()}
    est_dir = Path(p.get("estimator") or ESTIMATOR_DIR.format(hardware=spec.name))
    estimator = Estimator.load(est_dir, spec)
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

    OUT.mkdir(parents=True, exist_ok=True)
    plot(candidates, base_search, models, BASELINES, OUT / "pareto.png")
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
    (OUT / "report.md").write_text(report(metrics, models, table, info))
    (OUT / "models.json").write_text(json.dumps(models, indent=2) + "\n")
    (OUT / "table.json").write_text(json.dumps(table, indent=2) + "\n")
    (OUT / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    with tracking.run("evaluate", params={**p, "accuracy_mode": pareto.get("accuracy_mode")},
                      tags=lineage_tags("evaluate", spec.spec_hash())):
        flat = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
        flat.update({f"memory_model.{k}": v for k, v in metrics.get("memory_model", {}).items()})
        flat.update({f"table.{k}": v for k, v in metrics["table"].items()})
        tracking.log_metrics(flat)
        _log_artifacts(OUT)
    t = metrics["targets"]
    say(f"latency -{100 * metrics['latency_reduction']:.1f}% at {metrics['accuracy_delta']:+.2f} "
        f"points (target {'met' if t['latency_met'] else 'not met'})"
        + (f"; memory model -{100 * metrics['memory_model']['memory_reduction']:.1f}% memory at "
           f"{metrics['memory_model']['accuracy_delta']:+.2f} points (target "
           f"{'met' if t['memory_met'] else 'not met'})" if "memory_model" in metrics else "")
        + f"; {time.perf_counter() - t0:.0f} s -> {OUT / 'report.md'}")


def _log_artifacts(out: Path) -> None:
    try:
        import mlflow

        for name in ("report.md", "pareto.png", "metrics.json"):
            mlflow.log_artifact(str(out / name))
    except Exception as err:  # artifacts are a convenience; lineage tags are already logged
        say(f"note: could not log artifacts to MLflow: {err}")


if __name__ == "__main__":
    run_stage("evaluate", main)
