"""The article's findings, reproduced on one task (stage ``findings@<task>``, ``hwnas findings``).

- **Ablation as four searches** of equal budget, each on its own space: V0 the baseline's
  space with neither lever (IBN only, the baseline's per-stage depths; widths, kernels and
  expansions searched), V1 + the depth multiplier, V2 + fused-IBN, V3 both. Each search's
  latency model is the fastest Pareto network at the baseline's supernet score or better.
- **Expert rules alone**: ``hwnas expert``'s default rules applied to the baseline (only
  those the estimator says pay), and the rules learned from another task's search
  (``findings.rules_from``), with no search.
- Every such network is **judged alike** (``Judge``): trained from scratch over the
  baseline's paired seeds with its budget, its score difference stated with a 95% interval
  against the non-inferiority margin, and latency, memory and energy from the simulator.
- **Curation**: the curated and the uncurated space, the same search over several seeds;
  evaluations to come within 5% of the best latency any run reached.
- **Where FLOPs mislead**: the rank correlations over the pipeline search's candidates and
  the per-stage IBN / fused-IBN costs (``hwnas.experiments``).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from pathlib import Path

from hwnas.arch import ArchSpec, parse_arch
from hwnas.errors import UserError
from hwnas.space import SearchSpace

# name, depth multiplier searched, fused-IBN searched
VARIANTS = (("v0", False, False), ("v1", True, False), ("v2", False, True), ("v3", True, True))
# the article's latency reductions at equal accuracy (ablation and expert rules alone)
ARTICLE = {"v0": 0.0, "v1": 0.14, "v2": 0.35, "v3": 0.53, "expert_only": 0.50}


class FindingsError(UserError):
    """An input the findings cannot use; the message names the file."""


def variant_space(space: SearchSpace, depth: bool, fused: bool) -> SearchSpace:
    """``space`` without the depth multiplier (the baseline's depths: multiplier 1) and/or
    without fused-IBN blocks."""
    if not depth and space.depth_multipliers and 1.0 not in space.depth_multipliers:
        raise FindingsError(f"the space {space.name} has no depth multiplier 1 to hold the "
                            f"baseline's depths")
    stages = space.stages if fused else tuple(
        replace(s, types=tuple(t for t in s.types if t != "fused_ibn") or ("ibn",))
        for s in space.stages)
    dms = space.depth_multipliers if depth or not space.depth_multipliers else (1.0,)
    name = f"{space.name}{'' if depth else '-no_depth'}{'' if fused else '-no_fused'}"
    return replace(space, name=name, stages=stages, depth_multipliers=dms)


@dataclass
class Judge:
    """A network against the baseline: trained from scratch over the baseline's paired seeds
    (``hwnas.scratch.scratch_runs``, kept in ``journal`` so a killed stage resumes), scores
    compared with ``equality``, costs from the simulator on ``spec``."""

    params: dict
    ctx: object  # the task's TrainContext
    spec: object
    baseline: dict  # the baseline stage's metrics.json
    margin: float
    journal: Path
    log: object = print

    def __post_init__(self):
        from hwnas.checkpoint import fingerprint
        from hwnas.evaluation.metrics import simulate_models
        from hwnas.params import section
        from hwnas.proof import scratch_fingerprint
        from hwnas.scratch import budget_epochs

        p = section(self.params, "baseline")
        seeds = [p["seed"] + i for i in range(p["seeds"])]
        if self.baseline.get("seeds") != seeds:
            raise FindingsError(f"the baseline's metrics.json has seeds "
                                f"{self.baseline.get('seeds')}, the findings need {seeds} "
                                f"(baseline.seeds): rerun the baseline stage")
        self.fp = fingerprint({"seeds": seeds, "epochs": budget_epochs(self.params)[0],
                               "train": scratch_fingerprint(section(self.params,
                                                                    "train_supernet"))})
        self.base_sim = simulate_models({"b": parse_arch(self.baseline["arch"])}, self.spec)["b"]

    def runs(self, arch: ArchSpec) -> list[float]:
        from hwnas.files import append_journal, read_journal
        from hwnas.scratch import scratch_runs

        for r in read_journal(self.journal):
            if r["arch"] == arch.key and r["fingerprint"] == self.fp:
                return r["score_runs"]
        self.log(f"training {arch.key} from scratch ({len(self.baseline['seeds'])} seeds)")
        _, rec = scratch_runs(self.params, self.ctx, arch)
        append_journal(self.journal, [{"arch": arch.key, "fingerprint": self.fp,
                                       "score_runs": rec["score_runs"],
                                       "train_seconds": rec["train_seconds"]}])
        return rec["score_runs"]

    def __call__(self, arch: ArchSpec) -> dict:
        from hwnas.evaluation.metrics import equality, paired_se, simulate_models

        runs, base_runs = self.runs(arch), self.baseline["score_runs"]
        sim, base = simulate_models({"x": arch}, self.spec)["x"], self.base_sim
        return {"arch": arch.key, "score": statistics.fmean(runs), "score_runs": runs,
                "score_delta": statistics.fmean(runs) - statistics.fmean(base_runs),
                "score_delta_se": paired_se(runs, base_runs),
                **equality(runs, base_runs, self.margin),
                **{f"{k}_reduction": 1 - sim[k] / base[k]
                   for k in ("latency_ms", "memory_bytes", "energy_mj")},
                "latency_ms": sim["latency_ms"], "memory_bytes": sim["memory_bytes"]}


def ablation_searches(sctx, objective_fn, candidates: int, population: int, journal: Path,
                      on_batch=None) -> dict[str, dict]:
    """The four searches (``VARIANTS``), equal budget and seed, each on its own space and
    journaled (a killed stage resumes them): per variant its candidates and the latency
    model, the fastest Pareto network at the baseline's supernet score or better."""
    from hwnas import layout
    from hwnas.search.choice import summarize
    from hwnas.search.evolution import search
    from hwnas.search.run import fingerprint

    base = objective_fn([sctx.baseline])[0]
    out = {}
    for name, depth, fused in VARIANTS:
        space = variant_space(sctx.space, depth, fused)
        keep = {**sctx.params, "candidates": candidates, "population": population,
                "space": space.name}
        fp = fingerprint(keep, layout.SUPERNET, sctx.estimator_dir / "manifest.json")
        df = search(space, objective_fn, candidates=candidates, population=population,
                    seed=sctx.params["seed"], journal=journal / f"{name}-{fp}.jsonl",
                    seeds=[sctx.baseline],
                    on_batch=None if on_batch is None else lambda n, _r, v=name: on_batch(v, n))
        s = summarize(df, base, None)
        out[name] = {"space": space.name, "depth_multiplier": depth, "fused_ibn": fused,
                     "candidates": int(len(df)), "chosen": s["_fastest"],
                     "search_score": s["score_of_fastest"],
                     "search_latency_reduction": s["front_latency_reduction_at_baseline_score"]}
    return out


def expert_archs(baseline: ArchSpec, estimate, parallelism: int,
                 rules_from: dict[str, Path]) -> dict[str, dict]:
    """The baseline after ``hwnas expert``'s default rules, and after the rules learned from
    each other task's ``pareto.json`` (those the estimator says pay); with the rules kept."""
    from hwnas.expert import apply_rules, default_rules, learn_rules, rule_to_json
    from hwnas.extract import read_pareto

    def cost(archs):
        return [(r["latency_ms"], r["memory_bytes"]) for r in estimate(list(archs))]

    sets = {"expert_only": default_rules(parallelism)}
    for task, path in rules_from.items():
        try:
            front = [parse_arch(e["arch"]) for e in read_pareto(path, ("pareto",))["pareto"]]
        except (UserError, KeyError, TypeError, ValueError) as err:
            raise FindingsError(f"{path}: {err}") from None
        sets[f"rules_from_{task}"] = learn_rules(front, parallelism)
    out = {}
    for name, rules in sets.items():
        results = apply_rules(baseline, rules, cost, only_gains=True)
        out[name] = {"arch": results[-1].arch if results else baseline,
                     "rules": [r.rule for r in results if r.kept],
                     "rules_tried": [rule_to_json(r) for r in rules]}
    return out


def summary(ablation: dict[str, dict], expert: dict[str, dict], curation, flops: dict,
            evaluated: dict) -> dict:
    """``metrics.json``: flat figures first (``ablation.v0.latency_reduction`` ...), then the
    rows they come from."""
    flat = {}
    for name, row in {**ablation, **expert}.items():
        for key in ("latency_reduction", "memory_reduction", "energy_reduction",
                    "score_delta", "score_delta_se", "shown_equal"):
            prefix = f"ablation.{name}" if name in ablation else name
            flat[f"{prefix}.{key}"] = row.get(key)
    table = curation.set_index("space")
    steps = table["median_evaluations_to_tolerance"]
    flat["curation.evaluations_curated"] = _num(steps.get("curated"))
    flat["curation.evaluations_uncurated"] = _num(steps.get("uncurated"))
    flat["curation.evaluations_ratio"] = (
        flat["curation.evaluations_uncurated"] / flat["curation.evaluations_curated"]
        if flat["curation.evaluations_uncurated"] and flat["curation.evaluations_curated"]
        else None)
    flat.update({k: flops[k] for k in ("flops_latency_spearman", "params_latency_spearman",
                                       "misordered_pair_share")})
    flat["evaluate.shown_equal"] = evaluated.get("shown_equal")
    flat["evaluate.score_delta_ci95"] = evaluated.get("score_delta_ci95")
    return {**flat, "ablation": ablation, "expert": expert,
            "curation": curation.to_dict("records"), "flops": flops,
            "article": ARTICLE}


def _num(x) -> float | None:
    import math

    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)
