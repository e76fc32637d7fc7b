"""One evaluation: every model of the pipeline (the extracted ones and the baselines)
judged on the target (simulated, or on a measured one timed), the metrics against the
baseline, the article's table from the search's candidates (at simulated latency, or the
estimated one on a measured target), and what the report says beside them."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from hwnas import layout
from hwnas.evaluation import EvaluateError

BASELINES = ("baseline-scratch", "baseline-finetuned")


@dataclass
class Inputs:
    pareto: dict               # the search's pareto.json
    candidates: pd.DataFrame   # every search candidate
    extracted: dict            # extract's subnets.json
    scratch: dict              # the baseline from scratch (its metrics.json)


def _schemas() -> dict:
    """What the evaluation reads of each JSON input (other keys are passed through)."""
    from typing import Annotated, Optional

    from pydantic import AfterValidator, ConfigDict

    from hwnas.params import _Section

    class Loose(_Section):  # strict types, finite numbers; unknown keys kept
        model_config = ConfigDict(extra="allow", strict=True)

    def space(v: dict) -> dict:
        from hwnas.space import SearchSpace

        try:
            SearchSpace.from_json(v)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"not a search space ({type(err).__name__}: {err})") from None
        return v

    class Model(Loose):  # a trained network's record
        arch: str
        score: float
        score_runs: Optional[list[float]] = None

    class Scored(Loose):  # the search's baseline
        arch: str
        score: float

    class Pareto(Loose):
        baseline: Scored
        score_mode: Optional[str] = None

    class Data(Loose):
        dataset: str
        test: int

    class FineTune(Loose):
        epochs: int
        lr: float

    class Extracted(Loose):
        hardware: Optional[str] = None
        space: Annotated[dict, AfterValidator(space)]
        models: dict[str, Model]
        data: Data
        finetune: FineTune

    return {"pareto": Pareto, "extracted": Extracted, "scratch": Model}


def _checked(data, schema, path: Path):
    from pydantic import ValidationError

    from hwnas.params import validation_message

    if not isinstance(data, dict):
        raise EvaluateError(f"{path}: expected a JSON object, got {type(data).__name__}")
    try:
        schema.model_validate(data)
    except ValidationError as err:
        raise EvaluateError(validation_message(err, path)) from None
    return data


def _read_json(path: Path, stage: str, schema) -> dict:
    if not path.is_file():
        raise EvaluateError(f"{path}: not found; run the {stage} stage first")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise EvaluateError(f"{path}: not valid JSON: {err}") from None
    return _checked(data, schema, path)


CANDIDATE_COLUMNS = {"arch": "text", "score": "number", "latency_ms": "number"}


def read_inputs() -> Inputs:
    from hwnas.extract import read_pareto
    from hwnas.files import read_table

    schemas = _schemas()
    pareto = _checked(read_pareto(layout.PARETO), schemas["pareto"], layout.PARETO)
    candidates = read_table(layout.CANDIDATES, CANDIDATE_COLUMNS,
                            "not found; run the search stage first", EvaluateError)
    return Inputs(pareto, candidates,
                  _read_json(layout.EXTRACTED, "extract", schemas["extracted"]),
                  _read_json(layout.BASELINE / "metrics.json", "baseline", schemas["scratch"]))


@dataclass
class Evaluation:
    metrics: dict
    models: dict[str, dict]
    table: list[dict]
    info: dict                 # what the report states beside the figures
    candidates: pd.DataFrame   # with ``latency_col``
    base_search: dict          # the baseline as the search scored it
    latency_col: str           # the candidates' latency: simulated, or on a measured target
                               # the estimator's (the search's own)


def fill_search_score(records: dict[str, dict], archs: dict, candidates: pd.DataFrame,
                         pareto: dict) -> None:
    """``search_score`` (the supernet's, on the val split) of every record that lacks it,
    by architecture: from the search's candidates or its baseline. (Extract records it only
    for the networks pareto.json scores; a chosen network need not be on the front.)"""
    from hwnas.arch import parse_arch

    scored = {parse_arch(a).key: float(acc) for a, acc in
              zip(candidates["arch"], candidates["score"])}
    scored.setdefault(parse_arch(pareto["baseline"]["arch"]).key, pareto["baseline"]["score"])
    for name, rec in records.items():
        if rec.get("search_score") is None and archs[name].key in scored:
            rec["search_score"] = scored[archs[name].key]


def evaluate(inputs: Inputs, spec, estimator, tolerance: float, log=print,
             targets: dict | None = None, margin: float = 0.5,
             measure: dict | None = None) -> Evaluation:
    """Judge every model on ``spec``: simulate it, or on a measured target (``measured_by``)
    time it as ``measure`` says; with the estimator's error on each; scores equal within
    ``margin`` points (``hwnas.evaluation.metrics.equality``)."""
    task = layout.current_task()
    from hwnas.arch import parse_arch
    from hwnas.evaluation.ablation import ablation_table
    from hwnas.evaluation.metrics import (build_metrics, judge_models, measure_models,
                                          resolution_effect, simulate_latencies)
    from hwnas.evaluation.report import _pct, table_definition
    from hwnas.space import SearchSpace

    pareto, candidates, extracted, scratch = (inputs.pareto, inputs.candidates,
                                              inputs.extracted, inputs.scratch)
    if extracted.get("hardware") not in (None, spec.name):
        raise EvaluateError(f"{layout.EXTRACTED}: extracted for {extracted['hardware']}, but "
                            f"base.hardware is {spec.name}; rerun extract")
    space = SearchSpace.from_json(extracted["space"])
    # every model by name: test score from extract/baseline, figures from the simulator
    records = {n: dict(r) for n, r in extracted["models"].items()}
    records["baseline-scratch"] = dict(scratch)
    base_search_arch = parse_arch(pareto["baseline"]["arch"]).key
    if records["baseline-scratch"]["arch"] != base_search_arch:
        raise EvaluateError(f"{layout.BASELINE / 'metrics.json'} trained "
                            f"{records['baseline-scratch']['arch']}, but {layout.PARETO} has "
                            f"the baseline {base_search_arch}; rerun the stale stage")
    archs = {n: parse_arch(r["arch"]) for n, r in records.items()}
    fill_search_score(records, archs, candidates, pareto)
    measured = None
    if spec.measured_by:
        if measure is None:
            raise EvaluateError(f"{spec.name} is measured by {spec.measured_by}: evaluate "
                                f"needs evaluate.measure to time the models")
        if estimator.manifest["backend"] != spec.measured_by:
            from hwnas.estimator.model import retrain

            raise EvaluateError(f"{estimator.path}: trained on {estimator.manifest['backend']}, "
                                f"but {spec.name} is measured by {spec.measured_by}; "
                                f"{retrain(estimator.path)}")
        log(f"timing {len(archs)} models on {spec.name}: {measure['rounds']} rounds, each in "
            f"its own pinned process")
        measured = measure_models(archs, measure)
    else:
        log(f"simulating {len(archs)} models and {candidates['arch'].nunique()} candidates "
            f"on {spec.name}")
    judged = judge_models(archs, spec, estimator.estimate, measured)
    models = {n: {**records[n], **judged[n]} for n in records}
    for name in ("latency", "memory"):
        if name not in models:
            log(f"note: no '{name}' model was extracted (extract.chosen)")
    from hwnas.extract import FAMILY_NAMES

    metrics = build_metrics(models, [b for b in BASELINES if b in models],
                            latency_name="latency" if "latency" in models else
                            next(n for n in models if n not in BASELINES),
                            memory_name="memory" if "memory" in models else None,
                            margin=margin, **({"targets": targets} if targets else {}),
                            family_names=[n for n in FAMILY_NAMES if n in models])
    if metrics.get("family"):
        resolution_effect(metrics, models)

    base_search = {"arch": base_search_arch, "score": pareto["baseline"]["score"]}
    if measured:  # thousands of candidates are not timed: they keep the search's estimates
        col = "latency_ms"
        base_search[col] = models["baseline-scratch"]["est_latency_ms"]
    else:
        col = "sim_latency_ms"
        lat = simulate_latencies(list(candidates["arch"]) + [pareto["baseline"]["arch"]], spec)
        candidates = candidates.assign(sim_latency_ms=candidates["arch"].map(lat))
        base_search[col] = lat[pareto["baseline"]["arch"]]
        cand_err = (candidates["latency_ms"] / candidates["sim_latency_ms"] - 1).abs()
        metrics.update(candidates_estimator_error_median=float(cand_err.median()),
                       candidates_estimator_error_p90=float(cand_err.quantile(0.9)))
    table = ablation_table(candidates, base_search, space, tolerance, latency_col=col)
    metrics["table"] = {f"fused_{'yes' if r['fused_ibn_search'] else 'no'}"
                        f"_depth_{'yes' if r['depth_multiplier_search'] else 'no'}":
                        r["latency_reduction"] for r in table}
    metrics.update(hardware=spec.name, score_mode=pareto.get("score_mode"),
                   latency_judge="measured" if measured else "simulated")
    if measured:
        errors = [m["estimator_error"] for m in models.values() if m["estimator_error"] is not None]
        metrics.update(measured_by=spec.measured_by, measure=dict(measure),
                       models_estimator_error_max=max(errors, default=None),
                       models_latency_spread_max=max(m["latency_spread"]
                                                     for m in models.values()))
    info = {"hardware": spec.name, "dataset": extracted["data"]["dataset"],
            "latency_judge": metrics["latency_judge"], "measure": measure if measured else None,
            "bytes_per_element": spec.bytes_per_element,
            "test_images": extracted["data"]["test"],
            "baseline_budget": (f"From scratch: {scratch.get('budget', '?')}. Fine-tuned: "
                                f"extracted from the supernet and fine-tuned "
                                f"{extracted['finetune']['epochs']} epoch(s) at lr "
                                f"{extracted['finetune']['lr']:g}, like the chosen models."),
            "table_definition": table_definition(tolerance, "estimated" if measured else "simulated"),
            "notes": [
                f"Search score mode: {pareto.get('score_mode')}; the search ranks by "
                f"supernet (inherited) score on the val split, which is not the final test "
                f"score after fine-tuning.",
                (f"Estimator on all {len(candidates)} candidates: median latency error "
                 f"{100 * metrics['candidates_estimator_error_median']:.1f}%, 90th percentile "
                 f"{100 * metrics['candidates_estimator_error_p90']:.1f}%." if not measured else
                 f"Estimator on the {len(models)} timed models: largest latency error "
                 f"{_pct(metrics['models_estimator_error_max'])}. The candidates, the "
                 f"front and the table below are at the search's estimated latency."),
                f"Reproduce: `dvc repro evaluate@{task}` (or `python -m stages.extract --task "
                f"{task}`, then `stages.baseline`, then `stages.evaluate`, each with "
                f"`--task {task}`)."]}
    return Evaluation(metrics, models, table, info, candidates, base_search, col)
