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
  evaluations to come within 5% of each run's final best latency and of the best any run
  reached.
- **Where FLOPs mislead**: the rank correlations over the pipeline search's candidates and
  the per-stage IBN / fused-IBN costs (``hwnas.experiments``).
- **Zero-shot**: each proxy's Kendall tau against random networks trained from scratch on
  the val split, and the chain zero-shot -> one-shot -> multishot against the one-shot
  search alone at the chain's compute, both choices judged alike.
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
    """``space`` without depth search (the baseline's depths: multiplier 1, or each stage's
    base depth where the space has no multiplier) and/or without fused-IBN blocks."""
    if not depth and space.depth_multipliers and 1.0 not in space.depth_multipliers:
        raise FindingsError(f"the space {space.name} has no depth multiplier 1 to hold the "
                            f"baseline's depths")
    stages = space.stages if fused else tuple(
        replace(s, types=tuple(t for t in s.types if t != "fused_ibn") or ("ibn",))
        for s in space.stages)
    if not depth and not space.depth_multipliers:
        stages = tuple(replace(s, depths=(d,)) for s, d in zip(stages, space.base_depths()))
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
        from hwnas.evaluation.metrics import judge_models
        from hwnas.params import section
        from hwnas.proof import scratch_fingerprint
        from hwnas.scratch import budget_epochs

        p = section(self.params, "baseline")
        seeds = [p["seed"] + i for i in range(p["seeds"])]
        if self.baseline.get("seeds") != seeds:
            raise FindingsError(f"the baseline's metrics.json has seeds "
                                f"{self.baseline.get('seeds')}, the findings need {seeds} "
                                f"(baseline.seeds): rerun the baseline stage")
        # the baseline's own runs stand for the training code: new code reruns the baseline,
        # whose scores then differ, and these runs are retrained against it
        self.fp = fingerprint({"seeds": seeds, "epochs": budget_epochs(self.params)[0],
                               "train": scratch_fingerprint(section(self.params,
                                                                    "train_supernet")),
                               "baseline": [self.baseline["arch"], self.baseline["score_runs"]]})
        self.base_sim = judge_models({"b": parse_arch(self.baseline["arch"])}, self.spec)["b"]

    def runs(self, arch: ArchSpec) -> list[float]:
        from hwnas.files import append_journal, read_journal
        from hwnas.scratch import scratch_runs

        if arch.key == parse_arch(self.baseline["arch"]).key:  # rules that left it unchanged
            return self.baseline["score_runs"]
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
        from hwnas.evaluation.metrics import equality, paired_se, judge_models

        runs, base_runs = self.runs(arch), self.baseline["score_runs"]
        sim, base = judge_models({"x": arch}, self.spec)["x"], self.base_sim
        return {"arch": arch.key, "score": statistics.fmean(runs), "score_runs": runs,
                "score_delta": statistics.fmean(runs) - statistics.fmean(base_runs),
                "score_delta_se": paired_se(runs, base_runs),
                **equality(runs, base_runs, self.margin),
                **{f"{name}_reduction": 1 - sim[k] / base[k] for name, k in
                   (("latency", "latency_ms"), ("memory", "memory_bytes"), ("energy", "energy_mj"))},
                "latency_ms": sim["latency_ms"], "memory_bytes": sim["memory_bytes"]}


def ablation_searches(sctx, objective_fn, candidates: int, population: int,
                      journal: Path) -> dict[str, dict]:
    """The four searches (``VARIANTS``), equal budget and seed, each on its own space and
    journaled in the folder ``journal`` (a killed stage resumes them): per variant its
    candidates and the latency model, the fastest Pareto network at the baseline's supernet
    score or better."""
    from hwnas.checkpoint import fingerprint
    from hwnas.search.choice import summarize
    from hwnas.search.evolution import search

    base = objective_fn([sctx.baseline])[0]
    out = {}
    for name, depth, fused in VARIANTS:
        space = variant_space(sctx.space, depth, fused)
        key = fingerprint(space.to_json())  # a changed variant space starts its search anew
        df = search(space, objective_fn, candidates=candidates, population=population,
                    seed=sctx.params["seed"], journal=journal / f"{name}-{key}.jsonl",
                    seeds=[sctx.baseline])
        s = summarize(df, base, None)
        out[name] = {"space": space.name, "depth_multiplier": depth, "fused_ibn": fused,
                     "candidates": int(len(df)), "chosen": s["_fastest"],
                     "search_score": s["score_of_fastest"],
                     "search_latency_reduction": s["front_latency_reduction_at_baseline_score"]}
    return out


def rules_sources(rules_from: list[str], task: str) -> dict[str, Path]:
    """The other tasks' ``pareto.json`` that ``findings.rules_from`` names, each present."""
    from hwnas import layout

    paths = {t: layout.task_path("PARETO", t) for t in rules_from if t != task}
    for t, path in paths.items():
        if not path.is_file():
            raise FindingsError(f"findings.rules_from: {path} does not exist: run `hwnas run "
                                f"--task {t}` first, or leave {t} out")
    return paths


def expert_archs(baseline: ArchSpec, estimate, parallelism: int,
                 rules_from: dict[str, Path]) -> dict[str, dict]:
    """The baseline after ``hwnas expert``'s default rules, and after the rules learned from
    each other task's ``pareto.json`` (those the estimator says pay); with the rules kept."""
    from hwnas.expert import apply_rules, default_rules, learn_rules, rule_to_json
    from hwnas.extract import read_pareto

    def cost(archs):
        records = estimate(list(archs))
        for arch, r in zip(archs, records):
            if r["latency_ms"] is None:
                raise FindingsError(f"the estimator cannot cost {arch.key}: "
                                    f"{r['out_of_range'][0]}")
        return [(r["latency_ms"], r["memory_bytes"]) for r in records]

    sets = {"expert_only": default_rules(parallelism)}
    for task, path in rules_from.items():
        try:
            front = [parse_arch(e["arch"]) for e in read_pareto(path, ("pareto",))["pareto"]]
        except UserError as err:
            raise FindingsError(str(err)) from None
        except (KeyError, TypeError, ValueError) as err:
            raise FindingsError(f"{path}: pareto: {err}") from None
        sets[f"rules_from_{task}"] = learn_rules(front, parallelism)
    out = {}
    for name, rules in sets.items():
        results = apply_rules(baseline, rules, cost, only_gains=True)
        arch = results[-1].arch if results else baseline
        out[name] = {"arch": arch, "changed": arch.key != baseline.key,
                     "rules": [r.rule for r in results if r.kept],
                     "rules_tried": [rule_to_json(r) for r in rules]}
    return out


ZERO_SHOT = ("naswot", "synflow", "grad_norm")  # the parameter count is their baseline
MAX_DRAWS = 200  # random networks drawn per one the chain's pool needs, at most


def proxy_ranking(sctx, ctx, networks: int, seeds: int, journal: Path, log=print) -> dict:
    """Kendall tau of each zero-shot proxy and of the parameter count against the
    from-scratch val score (mean of ``seeds`` runs, kept in ``journal``) of ``networks``
    random networks of the space, beside one seed's tau against another's (the ceiling).
    The chain's proxy is the best zero-shot one here: chosen on the val split, not test."""
    import math

    from scipy.stats import kendalltau

    from hwnas.experiments import proxy_taus, unique_samples
    from hwnas.proof import scratch_results

    archs = unique_samples(sctx.space, networks, sctx.params["seed"])
    log(f"zero-shot: {len(archs)} random networks from scratch on the val split "
        f"({seeds} seeds each)")
    runs = scratch_results(archs, ctx, journal, eval_split="val", seeds=seeds,
                           on_done=lambda r: log(f"zero-shot: trained {r['arch']}: val "
                                                 f"{r['scratch_score']:.2f}"))
    taus, rows = proxy_taus(archs, [runs[a.key]["scratch_score"] for a in archs],
                            sctx.val[0][:64], sctx.val[1][:64], sctx.params["seed"])
    per_seed = [[runs[a.key]["scratch_scores"][i] for a in archs] for i in range(seeds)]
    taus = {k: None if math.isnan(v) else v for k, v in taus.items()}  # a constant column
    return {"networks": len(archs), "seeds": seeds, "kendall_tau": taus,
            "seed_to_seed_tau": float(kendalltau(per_seed[0], per_seed[1]).statistic)
            if seeds > 1 else None,
            "proxy": max(ZERO_SHOT, key=lambda n: -2.0 if taus[n] is None else taus[n]),
            "rows": rows}


def zeroshot_chain(sctx, objective, proxy_batch, pool: int, keep: int, confirm: int,
                   train_on_val, parallel_runs: int) -> dict:
    """The chain the article leaves as future work: zero-shot -> one-shot -> multishot.
    ``pool`` random networks within the search's limits (drawn until found: under a tight
    latency budget few random networks fit) are scored by the proxy (``proxy_batch``), the
    best ``keep`` by the supernet (``objective``), and the latency
    model is chosen as the search chooses it, with ``confirm`` of its tied candidates
    trained from scratch on the val split (``train_on_val``). With the wall seconds of each
    step; the confirmations' from their runs' own seconds over ``parallel_runs`` (a resumed
    stage does not retrain them)."""
    import time

    import numpy as np

    from hwnas.search.choice import summarize
    from hwnas.search.evolution import candidates_table
    from hwnas.search.run import search_constraints, tie_standard_errors

    p = sctx.params
    base = objective([sctx.baseline])[0]
    limits = search_constraints(p, base)
    t0 = time.perf_counter()
    rng, seen, fits = np.random.default_rng(p["seed"] + 1), set(), []  # not the ranking's
    while len(fits) < pool and len(seen) < MAX_DRAWS * pool:
        batch = {}
        for _ in range(10 * pool):
            arch = sctx.space.sample(rng)
            if arch.encode() not in seen:
                seen.add(arch.encode())
                batch[arch.encode()] = arch
        fits += [a for a, c in zip(batch.values(), sctx.estimator.estimate(list(batch.values())))
                 if c["latency_ms"] is not None and all(
                     v <= 0 for v in limits.violations(c["latency_ms"], c["memory_bytes"]).values())]
    fits = fits[:pool]
    if len(fits) < 2:
        raise FindingsError(f"findings.zeroshot: {len(fits)} of {len(seen)} random networks "
                            f"within the search's limits: the chain needs two at least")
    proxy = np.asarray(proxy_batch(fits), dtype=float)
    kept = [fits[i] for i in np.argsort(-np.nan_to_num(proxy, nan=-np.inf), kind="stable")[:keep]]
    t1 = time.perf_counter()
    rows = objective(kept)
    t2 = time.perf_counter()
    df = candidates_table([{**r, "arch": a.encode()} for a, r in zip(kept, rows)], limits)
    confirmed = {}

    def train(archs: list[str]) -> dict[str, dict]:
        confirmed.update(train_on_val(archs))
        return confirmed

    s = summarize(df, base, None, p.get("latency_budget"), tie_standard_errors(p),
                  p["val_images"], confirm, train)
    seconds = {"proxy": t1 - t0, "supernet": t2 - t1,
               "confirm": sum(r["scratch_seconds"] for r in confirmed.values()) / parallel_runs}
    return {"drawn": len(seen), "pool": len(fits), "kept": len(kept),
            "confirm": confirm, "chosen": s["_fastest"],
            "search_latency_reduction": s["chosen_latency_reduction"],
            "search_score": s["chosen_score"], "confirmations": s["confirmations"],
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "total_seconds": round(sum(seconds.values()), 1),
            "seconds_per_supernet_evaluation": (t2 - t1) / max(len(kept), 1)}


def oneshot_at_equal_compute(sctx, objective, chain: dict, population: int,
                             journal: Path) -> dict:
    """The one-shot search alone with the chain's compute: as many supernet evaluations as
    the chain's seconds buy at its own cost per evaluation (a whole number of
    generations), chosen as the pipeline's search chooses."""
    from hwnas.search.choice import summarize
    from hwnas.search.evolution import search
    from hwnas.search.run import search_constraints, tie_standard_errors

    p = sctx.params
    base = objective([sctx.baseline])[0]
    generations = round(chain["total_seconds"] / chain["seconds_per_supernet_evaluation"]
                        / population)
    candidates = population * max(1, generations)
    df = search(sctx.space, objective, candidates=candidates, population=population,
                seed=p["seed"], constraints=search_constraints(p, base),
                journal=journal / f"oneshot-{candidates}.jsonl", seeds=[sctx.baseline])
    s = summarize(df, base, None, p.get("latency_budget"), tie_standard_errors(p),
                  p["val_images"])
    return {"candidates": candidates, "chosen": s["_fastest"],
            "search_latency_reduction": s["chosen_latency_reduction"],
            "search_score": s["chosen_score"]}


def summary(ablation: dict[str, dict], expert: dict[str, dict], curation, flops: dict,
            evaluated: dict, zeroshot: dict) -> dict:
    """``metrics.json``: flat figures first (``ablation.v0.latency_reduction`` ...), then the
    rows they come from."""
    flat = {}
    arms = {f"zeroshot.{arm}": zeroshot[arm] for arm in ("chain", "oneshot")}
    for name, row in {**ablation, **expert, **arms}.items():
        for key in ("latency_reduction", "memory_reduction", "energy_reduction",
                    "score_delta", "score_delta_se", "shown_equal"):
            prefix = f"ablation.{name}" if name in ablation else name
            flat[f"{prefix}.{key}"] = row.get(key)
    ranking = zeroshot["ranking"]
    flat.update({f"zeroshot.{k}_tau": v for k, v in ranking["kendall_tau"].items()})
    flat.update({"zeroshot.seed_to_seed_tau": ranking["seed_to_seed_tau"],
                 "zeroshot.proxy": ranking["proxy"],
                 "zeroshot.chain.seconds": zeroshot["chain"]["total_seconds"],
                 "zeroshot.oneshot.candidates": zeroshot["oneshot"]["candidates"]})
    table = curation.set_index("space")
    for col, key in (("median_evaluations_to_own_final", "evaluations"),
                     ("median_evaluations_to_tolerance", "evaluations_to_common")):
        cur, unc = (_num(table[col].get(s)) for s in ("curated", "uncurated"))
        flat.update({f"curation.{key}_curated": cur, f"curation.{key}_uncurated": unc,
                     f"curation.{key}_ratio": unc / cur if cur and unc else None})
    cur, unc = (_num(table["median_best_latency_ms"].get(s)) for s in ("curated", "uncurated"))
    flat["curation.best_latency_ratio"] = unc / cur if cur and unc else None
    flat.update({k: flops[k] for k in ("flops_latency_spearman", "params_latency_spearman",
                                       "misordered_pair_share")})
    flat["evaluate.shown_equal"] = evaluated.get("shown_equal")
    flat["evaluate.score_delta_ci95"] = evaluated.get("score_delta_ci95")
    return {**flat, "ablation": ablation, "expert": expert, "zeroshot": zeroshot,
            "curation": curation.astype(object).where(curation.notna(), None).to_dict("records"),
            "flops": flops,
            "article": ARTICLE}


def _num(x) -> float | None:
    import math

    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _delta(row: dict) -> str:
    """The score change with its standard error and interval, in points."""
    if row.get("score_delta") is None:
        return "-"
    se = row.get("score_delta_se")
    ci = row.get("score_delta_ci95")
    return (f"{row['score_delta']:+.2f}" + (f" ± {se:.2f}" if se is not None else "")
            + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else ""))


def _ms(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def _verdict(row: dict) -> str:
    from hwnas.evaluation.metrics import equal_word

    return equal_word(row["shown_equal"]) if "shown_equal" in row else (
        "no network at the baseline's score")


def report(m: dict, task_label: str, hardware: str, margin: float, seeds: int) -> str:
    """``report.md``: the findings in the article's shape, our figures beside its."""
    ab, ex = m["ablation"], m["expert"]
    lines = [
        f"# The article's findings on {hardware}", "",
        f"Every network below was trained from scratch over the baseline's {seeds} paired "
        f"seeds with its budget; score is {task_label} on the test split (mean of the seeds), "
        "the change is against the baseline's runs on the same seeds (± standard error, "
        f"[95% interval]), and \"equal\" means that interval lies above -{margin:g} points. "
        "Latency, memory and energy are the simulator's. Results are bit-identical only on "
        "the same machine with the same thread count.", "",
        "## Ablation: four searches of equal budget", "",
        "| | depth multiplier | fused-IBN | candidates | latency reduction | article | "
        "memory reduction | energy reduction | score change (points) | equal |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in ab.items():
        yn = lambda b: "yes" if b else "no"  # noqa: E731
        lines.append(f"| {name.upper()} | {yn(row['depth_multiplier'])} | {yn(row['fused_ibn'])} "
                     f"| {row['candidates']} | {_pct(row.get('latency_reduction'))} | "
                     f"{_pct(ARTICLE[name])} | {_pct(row.get('memory_reduction'))} | "
                     f"{_pct(row.get('energy_reduction'))} | {_delta(row)} | {_verdict(row)} |")
    lines += ["", "Each search's latency model is the fastest Pareto network at the baseline's "
                  "supernet score or better (the supernet's score on the val split), the same "
                  "rule for all four; V0 searches widths, kernels and expansions of IBN blocks "
                  "at the baseline's depths.", "",
              "## Expert rules alone, and rules carried across tasks", "",
              "| | rules kept | latency reduction | article | memory reduction | "
              "score change (points) | equal |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in ex.items():
        rules = (", ".join(next(iter(r)) for r in row["rules"]) if row["changed"]
                 else "none that pays: the baseline itself")
        lines.append(f"| {name.replace('_', ' ')} | {rules} | "
                     f"{_pct(row.get('latency_reduction'))} | "
                     f"{_pct(ARTICLE.get(name)) if name in ARTICLE else '-'} | "
                     f"{_pct(row.get('memory_reduction'))} | {_delta(row)} | {_verdict(row)} |")
    lines += ["", "Expert rules alone: `hwnas expert`'s rules on the baseline, each kept only "
                  "where the estimator says it raises neither latency nor memory; rules from another "
                  "task: those `learn_rules` reads off that task's Pareto front.", "",
              "![ablation](ablation.png)", "", "## Curation", ""]
    lines += ["| space | seeds | median best latency (ms) | worst (ms) | evaluations to "
              "95% of its final value | runs within 5% of the best of all | their evaluations |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in m["curation"]:
        ev, own = r["median_evaluations_to_tolerance"], r["median_evaluations_to_own_final"]
        lines.append(f"| {r['space']} | {r['seeds']} | {_ms(r['median_best_latency_ms'])} | "
                     f"{_ms(r['worst_best_latency_ms'])} | {'-' if own is None else f'{own:g}'} | "
                     f"{r['runs_within_tolerance']} | {'-' if ev is None else f'{ev:g}'} |")
    ratio, best = m["curation.evaluations_ratio"], m["curation.best_latency_ratio"]
    lines += ["", "Best latency: the lowest latency at the baseline's supernet score or better "
                  "after the search's evaluations, median over the seeds. Evaluations to 95% of "
                  "its final value: when a run's best latency came within 5% of where it ended "
                  "(median over the seeds). Ratios, uncurated / curated: evaluations "
              + ("not defined" if ratio is None else f"{ratio:.2f}")
              + ", final best latency " + ("not defined" if best is None else f"{best:.2f}")
              + ".", "", "![curation](curation.png)", "",
              "## Where FLOPs mislead", ""]
    f = m["flops"]
    lines += [f"Over the pipeline search's {f['networks']} candidates: Spearman of simulated "
              f"latency with FLOPs {f['flops_latency_spearman']:.3f}, with parameters "
              f"{f['params_latency_spearman']:.3f}; FLOPs orders "
              f"{100 * f['misordered_pair_share']:.1f}% of pairs the wrong way.", ""]
    lines += ["| stage | input | IBN (ms) | fused-IBN (ms) | fused / IBN | fused share on "
              "the front |", "| --- | --- | --- | --- | --- | --- |"]
    for r in f["stages"]:
        share = r["front_fused_share"]
        lines.append(f"| {r['stage']} | {r['input']} | {r['ibn_ms']:.4f} | "
                     f"{r['fused_ibn_ms']:.4f} | {r['fused_over_ibn']:.2f} | "
                     f"{'-' if share is None else f'{share:.2f}'} |")
    if f["pairs"]:
        p = f["pairs"][0]
        lines += ["", f"Worst pair: `{p['fewer_flops']}` has {p['flops_ratio']:.2f}x fewer "
                      f"FLOPs than `{p['more_flops']}` and runs {p['latency_ratio']:.2f}x "
                      "slower."]
    lines += zeroshot_report(m["zeroshot"], task_label)
    ci = m.get("evaluate.score_delta_ci95")
    lines += ["", "## Equal score in the pipeline's headline", "",
              "The evaluate stage's latency model: "
              + ("no interval (fewer than two paired runs)" if not ci else
                 f"{_verdict({'shown_equal': m['evaluate.shown_equal']})}, 95% "
                 f"interval [{ci[0]:+.2f}, {ci[1]:+.2f}] points")
              + " (`../evaluate/report.md`)."]
    return "\n".join(lines) + "\n"


def judgeable(ceiling: float | None, best: float | None, null_se: float) -> str:
    """What the taus allow one to say: nothing where one seed's ranking does not repeat."""
    if ceiling is None or ceiling < 2 * null_se:
        return (" One training seed ranks these networks like another only at tau "
                f"{'-' if ceiling is None else f'{ceiling:+.2f}'}: their trained scores lie "
                "within the training's own noise, so this task cannot judge a proxy, and the "
                "chain's pre-filter keeps networks no better than at random.")
    if best is None or best < 2 * null_se:
        return " No proxy ranks these networks: the chain's pre-filter is as good as random."
    return ""


def zeroshot_report(z: dict, task_label: str) -> list[str]:
    """The proxies' ranking and the chain against the one-shot search alone."""
    r, chain, one = z["ranking"], z["chain"], z["oneshot"]
    n = r["networks"]
    null_se = (2 * (2 * n + 5) / (9 * n * (n - 1))) ** 0.5  # tau's spread with no association
    tau = lambda v: "-" if v is None else f"{v:+.3f}"  # noqa: E731
    lines = ["", "## Zero-shot: ranking networks, and the chain as a pre-filter", "",
             f"{n} random networks of the space trained from scratch with the supernet's "
             f"budget, scored by {task_label} on the val split (mean of {r['seeds']} seeds); "
             "each proxy on 64 val images at initialization.", "",
             "| proxy | Kendall tau vs the trained score |", "| --- | ---: |"]
    lines += [f"| {name}{' (the chain uses it)' if name == r['proxy'] else ''} | "
              f"{tau(r['kendall_tau'][name])} |" for name in ZERO_SHOT]
    lines += [f"| parameter count (the baseline a proxy must beat) | "
              f"{tau(r['kendall_tau']['params'])} |",
              f"| one training seed against another (the ceiling) | "
              f"{tau(r['seed_to_seed_tau'])} |", "",
              f"With no association a tau over {n} networks spreads by about {null_se:.2f} "
              "(its standard error), so a smaller tau is no evidence of ranking."
              + judgeable(r["seed_to_seed_tau"], r["kendall_tau"][r["proxy"]], null_se), "",
              "| | supernet evaluations | networks trained on val | compute (s) | "
              "latency reduction | memory reduction | score change (points) | equal |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    sec = chain["seconds"]
    for name, row, evals, trained, compute in (
            (f"zero-shot ({r['proxy']}) -> one-shot -> multishot", chain, chain["kept"],
             len(chain["confirmations"]), f"{chain['total_seconds']:.0f}"),
            ("one-shot alone", one, one["candidates"], 0, f"~{chain['total_seconds']:.0f}")):
        lines.append(f"| {name} | {evals} | {trained} | {compute} | "
                     f"{_pct(row.get('latency_reduction'))} | {_pct(row.get('memory_reduction'))} "
                     f"| {_delta(row)} | {_verdict(row)} |")
    lines += ["", f"The chain: {chain['pool']} random networks within the search's limits "
                  f"(of {chain['drawn']} drawn) were scored by {r['proxy']} "
                  f"({sec['proxy']:.0f} s), the best {chain['kept']} by the supernet "
                  f"({sec['supernet']:.0f} s), and {len(chain['confirmations'])} of the latency "
                  f"model's tied candidates trained from scratch on the val split "
                  f"({sec['confirm']:.0f} s). The one-shot search alone had the same compute: "
                  f"{one['candidates']} supernet evaluations at the chain's own cost per "
                  "evaluation. Both chose as the pipeline's search chooses (the best within "
                  "`search.latency_budget` at the baseline's supernet score); both choices were "
                  "then judged like every network above."]
    return lines


def plot_ablation(m: dict, path) -> None:
    """Latency reduction per variant and expert set, ours beside the article's, and the score
    change with its 95% interval against the margin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = {**{k.upper(): v for k, v in m["ablation"].items()}, **m["expert"]}
    names = list(rows)
    ours = [rows[n].get("latency_reduction") or 0.0 for n in names]
    theirs = [ARTICLE.get(n.lower(), np.nan) for n in names]
    x = np.arange(len(names))
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    a.bar(x - 0.2, ours, 0.4, label="hwnas (simulated)", color="#2ca02c")
    a.bar(x + 0.2, theirs, 0.4, label="article", color="#9e9e9e")
    a.set_xticks(x, [n.replace("_", " ") for n in names], rotation=20)
    a.set_ylabel("latency reduction vs the baseline")
    a.set_ylim(0, 1.3 * max(0.05, *ours, *(v for v in theirs if v == v)))  # room for the legend
    a.legend(loc="upper center", ncol=2)
    a.grid(alpha=0.3, axis="y")
    for i, n in enumerate(names):
        r = rows[n]
        if r.get("score_delta_ci95"):
            lo, hi = r["score_delta_ci95"]
            b.errorbar([i], [r["score_delta"]], yerr=[[r["score_delta"] - lo], [hi - r["score_delta"]]],
                       fmt="o", capsize=4, color="#2ca02c" if r["shown_equal"] else "#d62728")
    margin = next((r["equal_margin"] for r in rows.values() if "equal_margin" in r), None)
    if margin is not None:
        b.axhline(-margin, ls="--", c="k", lw=1, label=f"-{margin:g} points (margin)")
    b.axhline(0, c="#555555", lw=0.8)
    b.set_xticks(x, [n.replace("_", " ") for n in names], rotation=20)
    b.set_ylabel("score change vs the baseline (points, 95% interval)")
    b.legend()
    b.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
