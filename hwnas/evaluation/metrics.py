"""Simulated figures of the evaluated networks, their standard errors and ``metrics.json``."""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence

from hwnas.arch import ArchSpec, parse_arch
from hwnas.evaluation import EvaluateError

# 50% lower latency within 0.3 points of the baseline's score, and a memory-budget
# network with 45% less memory within 1 point: the defaults of ``build_metrics`` (the
# pipeline's are params.yaml's ``evaluate.targets``, per task).
TARGETS = {"latency_reduction": 0.50, "latency_score_drop": 0.3,
           "memory_reduction": 0.45, "memory_score_drop": 1.0,
           "family_span": [0.27, 0.51], "family_score_drop": 1.0}

SIM_KEYS = ("latency_ms", "energy_mj", "memory_bytes", "params_bytes", "peak_activation_bytes",
            "macs", "cycles", "dram_bytes", "utilization")


# What only the simulator knows: no figure of a measured target
SIMULATED_ONLY = ("energy_mj", "cycles", "dram_bytes", "utilization")


def measure_models(archs: dict[str, ArchSpec], cfg: dict, progress=None) -> dict[str, dict]:
    """Name -> latency timed in ONNX Runtime: each architecture built with random weights,
    exported, and timed in ``cfg['rounds']`` rounds, each in its own pinned process, one after
    the other (``hwnas.estimator.scoring.truth_measured``).
    ``latency_ms`` is the rounds' geometric mean, ``latency_spread`` the largest relative
    distance of a round from it."""
    import numpy as np

    from hwnas.estimator.microbench import protocol
    from hwnas.estimator.scoring import rounds_mean, truth_measured

    unique = {a.key: a for a in archs.values()}  # one network under two names: one timing
    rounds = truth_measured(list(unique.values()), protocol(cfg), rounds=cfg["rounds"],
                            progress=progress)
    mean = rounds_mean(rounds)
    column = {key: i for i, key in enumerate(unique)}
    return {n: {"latency_ms": float(mean[i]),
                "latency_rounds_ms": [float(r) for r in rounds[:, i]],
                "latency_spread": float(np.max(np.abs(rounds[:, i] / mean[i] - 1)))}
            for n, i in ((n, column[a.key]) for n, a in archs.items())}


def judge_models(archs: dict[str, ArchSpec], spec, estimate: Callable | None = None,
                 measured: dict[str, dict] | None = None) -> dict[str, dict]:
    """Name -> simulated figures (``SIM_KEYS``) plus, with ``estimate`` (an
    ``Estimator.estimate``), its latency/memory and relative errors against the judge: the
    simulator, or where ``measured`` (``measure_models``) is given, the measurement, whose
    latency then replaces the simulator's (memory stays the graph's)."""
    from hwnas.simulation import simulate_arch

    names = list(archs)
    out = {}
    for name in names:
        sim = simulate_arch(archs[name], spec, per_kernel=False)
        out[name] = {"arch": archs[name].key,
                     **{k: sim[k] for k in SIM_KEYS}}
        if measured is not None:
            out[name].update({k: None for k in SIMULATED_ONLY}, **measured[name])
    if estimate is not None and names:
        for name, est in zip(names, estimate([archs[n] for n in names])):
            rec = out[name]
            lat = est.get("latency_ms")
            rec["est_latency_ms"] = lat
            rec["est_memory_bytes"] = est.get("memory_bytes")
            rec["estimator_error"] = (None if lat is None else
                                      abs(lat - rec["latency_ms"]) / rec["latency_ms"])
            rec["estimator_signed_error"] = (None if lat is None else
                                             lat / rec["latency_ms"] - 1.0)
            rec["estimator_memory_error"] = (abs(est["memory_bytes"] - rec["memory_bytes"])
                                             / rec["memory_bytes"])
            rec["estimator_out_of_range"] = len(est.get("out_of_range") or ())
    return out


def simulate_latencies(archs: Sequence[str], spec) -> dict[str, float]:
    """Simulated latency (ms) per unique architecture string."""
    from hwnas.simulation import simulate_arch

    out = {}
    for text in dict.fromkeys(archs):
        out[text] = simulate_arch(parse_arch(text), spec, per_kernel=False)["latency_ms"]
    return out


def score_se(acc_percent: float, n: int) -> float:
    """Binomial standard error of a test score, in points."""
    p = acc_percent / 100.0
    return 100.0 * math.sqrt(max(p * (1 - p), 1e-12) / max(1, n))


def paired_se(ours: Sequence[float], theirs: Sequence[float]) -> float | None:
    """Standard error of the mean difference of paired runs (run i of both on seed i);
    None unless both have the same number of runs, at least two."""
    if not len(ours) == len(theirs) >= 2:
        return None
    d = [a - b for a, b in zip(ours, theirs)]
    return statistics.stdev(d) / math.sqrt(len(d))


def paired_ci95(ours: Sequence[float], theirs: Sequence[float]) -> list[float] | None:
    """95% confidence interval of the mean paired difference (Student's t with n - 1
    degrees of freedom); None where ``paired_se`` has none."""
    from scipy.stats import t

    se = paired_se(ours, theirs)
    if se is None:
        return None
    mean = statistics.fmean(ours) - statistics.fmean(theirs)
    half = float(t.ppf(0.975, len(ours) - 1)) * se
    return [mean - half, mean + half]


def equality(ours: Sequence[float], theirs: Sequence[float], margin: float) -> dict:
    """Non-inferiority: "equal" is shown when the paired difference's 95% interval lies
    above ``-margin`` points. Without an interval (fewer than two paired runs) it is not."""
    ci = paired_ci95(ours, theirs)
    return {"score_delta_ci95": ci, "equal_margin": margin,
            "shown_equal": ci is not None and ci[0] > -margin}


def equal_word(shown: bool | None) -> str:
    return "shown equal" if shown else "not shown equal"


def verdict(m: dict) -> str:
    """The equality verdict of a model's metrics (``equality``'s keys) in words."""
    ci, margin = m.get("score_delta_ci95"), m.get("equal_margin")
    if ci is None:
        return "not shown equal (no interval: fewer than two from-scratch runs, or unpaired)"
    where = (f"95% interval [{ci[0]:+.2f}, {ci[1]:+.2f}] points over {len(m['score_runs'])} "
             f"paired seeds")
    return f"**{equal_word(m['shown_equal'])}** within the {margin:g}-point margin ({where})"


def build_metrics(models: dict[str, dict], baseline_names: Sequence[str],
                  latency_name: str = "latency", memory_name: str | None = "memory",
                  targets: dict = TARGETS, scratch_name: str = "baseline-scratch",
                  margin: float = 0.5, family_names: Sequence[str] = ()) -> dict:
    """``metrics.json``: the latency-chosen model against the baseline, the memory-budget
    model's figures and whether the targets are met. Where a chosen model was
    also trained from scratch (``scratch_score``) and the baseline was (``scratch_name``),
    its score is that, against the baseline's: architecture against architecture with
    the same budget and seeds (``score_basis: scratch``; the saved weights' own test
    score is ``model_score``). Otherwise the saved weights' score meets the stronger
    of the ``baseline_names`` variants by test score (a conservative comparison). Each
    chosen model's score is also judged equal or not by ``equality`` within ``margin``.
    ``family_names`` (a family's members, ``search.family``) are tabled under ``family``."""
    missing = [n for n in (latency_name, *baseline_names) if n not in models]
    if memory_name and memory_name not in models:
        missing.append(memory_name)
    if missing:
        raise EvaluateError(f"no evaluated model named '{missing[0]}' "
                            f"(have: {', '.join(models)})")
    targets = {**TARGETS, **targets}
    variants = {n: models[n]["score"] for n in baseline_names}
    chosen = models[latency_name]
    by_scratch = "scratch_score" in chosen and scratch_name in models
    base_name = scratch_name if by_scratch else max(variants, key=lambda n: variants[n])
    base = models[base_name]

    def reduction(key: str, m: dict) -> float | None:
        return None if m[key] is None else 1.0 - m[key] / base[key]

    def score_of(m: dict) -> float:
        return m["scratch_score"] if by_scratch and "scratch_score" in m else m["score"]

    def kept(m: dict) -> dict:
        """Which weights were saved (the better on the val split) and their scores."""
        out = {"model_score": m["score"]} if by_scratch or "weights" in m else {}
        if "weights" in m:
            out.update(weights=m["weights"], score_finetuned=m["finetuned_score"])
        if by_scratch and "scratch_score_runs" in m:
            out["score_runs"] = m["scratch_score_runs"]
        return out

    out = {
        "score": score_of(chosen), "baseline_score": base["score"],
        "score_basis": "scratch" if by_scratch else "saved weights",
        "baseline_score_source": base_name,
        **{f"baseline_score_{n.removeprefix('baseline-')}": a for n, a in variants.items()},
        "score_delta": score_of(chosen) - base["score"],
        "latency_ms": chosen["latency_ms"], "baseline_latency_ms": base["latency_ms"],
        "latency_reduction": reduction("latency_ms", chosen),
        "energy_mj": chosen["energy_mj"], "baseline_energy_mj": base["energy_mj"],
        "energy_reduction": reduction("energy_mj", chosen),
        "memory_bytes": chosen["memory_bytes"], "baseline_memory_bytes": base["memory_bytes"],
        "memory_reduction": reduction("memory_bytes", chosen),
        "estimator_error": chosen.get("estimator_error"),
        "estimator_memory_error": chosen.get("estimator_memory_error"),
        "baseline_estimator_error": base.get("estimator_error"),
        "arch": chosen["arch"], "baseline_arch": base["arch"], **kept(chosen),
    }
    if "score_runs" in base:
        out["baseline_score_runs"] = base["score_runs"]
    if "latency_rounds_ms" in chosen:  # measured: the reduction in each round is its spread
        out.update(latency_spread=chosen["latency_spread"],
                   baseline_latency_spread=base["latency_spread"],
                   latency_reduction_rounds=round_reductions(chosen, base))
    if by_scratch:  # the saved files against each other (one run each; val chose the weights)
        out["model_score_delta"] = out["model_score"] - base.get("model_score",
                                                                       base["score"])
    if "test_images" in chosen:
        out["score_se"] = score_se(out["score"], chosen["test_images"])
    base_runs = out.get("baseline_score_runs") or []
    se = paired_se(out.get("score_runs") or [], base_runs)
    if se is not None:
        out["score_delta_se"] = se
    out.update(equality(out.get("score_runs") or [], base_runs, margin))
    lat_ok = (out["latency_reduction"] >= targets["latency_reduction"]
              and out["score"] >= out["baseline_score"] - targets["latency_score_drop"])
    out["targets"] = {"latency_reduction_min": targets["latency_reduction"],
                      "latency_score_drop_max": targets["latency_score_drop"],
                      "latency_met": bool(lat_ok)}
    if memory_name:
        mem = models[memory_name]
        out["memory_model"] = {
            "arch": mem["arch"], "score": score_of(mem),
            "score_delta": score_of(mem) - base["score"],
            "memory_bytes": mem["memory_bytes"],
            "memory_reduction": reduction("memory_bytes", mem),
            "latency_ms": mem["latency_ms"], "latency_reduction": reduction("latency_ms", mem),
            "energy_mj": mem["energy_mj"], "estimator_error": mem.get("estimator_error"),
            **kept(mem)}
        if "latency_rounds_ms" in mem:
            out["memory_model"]["latency_reduction_rounds"] = round_reductions(mem, base)
        out["memory_model"].update(equality(out["memory_model"].get("score_runs") or [],
                                            base_runs, margin))
        mem_ok = (out["memory_model"]["memory_reduction"] >= targets["memory_reduction"]
                  and out["memory_model"]["score_delta"] >= -targets["memory_score_drop"])
        out["targets"].update(memory_reduction_min=targets["memory_reduction"],
                              memory_score_drop_max=targets["memory_score_drop"],
                              memory_met=bool(mem_ok))
    if family_names:
        out["baseline_input_resolution"], out["baseline_output_stride"] = _resolutions(base)
        out["family"] = []
        for name in family_names:
            m = models[name]
            runs = kept(m).get("score_runs") or []
            resolution, stride = _resolutions(m)
            out["family"].append({
                "name": name, "arch": m["arch"], "score": score_of(m),
                "score_delta": score_of(m) - base["score"],
                "score_delta_se": paired_se(runs, base_runs), "score_runs": runs,
                "latency_ms": m["latency_ms"], "latency_reduction": reduction("latency_ms", m),
                "memory_bytes": m["memory_bytes"],
                "memory_reduction": reduction("memory_bytes", m),
                "energy_reduction": reduction("energy_mj", m),
                "input_resolution": resolution, "output_stride": stride,
                **equality(runs, base_runs, margin)})
        cuts = [f["latency_reduction"] for f in out["family"]]
        low, high = targets["family_span"]
        out["targets"].update(
            family_span=[low, high], family_score_drop_max=targets["family_score_drop"],
            family_met=bool(min(cuts) <= low and max(cuts) >= high and all(
                f["score_delta"] >= -targets["family_score_drop"] for f in out["family"])))
    return out


def round_reductions(m: dict, base: dict) -> list[float]:
    """A measured model's latency reduction against the baseline in each timing round."""
    return [1.0 - a / b for a, b in zip(m["latency_rounds_ms"], base["latency_rounds_ms"])]


def resolution_effect(metrics: dict, models: dict[str, dict]) -> None:
    """What a family member's own input resolution and output stride bought: each member with
    a twin (``resolution_twin``: the same blocks and head width at the baseline's resolution
    and stride, trained alike) gains ``at_baseline_resolution``: the twin's latency, memory
    and score, the latency and memory the member's choice saves against it, and the score
    it gains (paired over seeds, with its standard error)."""
    from hwnas.extract import resolution_twin

    for f in metrics["family"]:
        twin = models.get(resolution_twin(f["name"]))
        if twin is None:
            continue
        runs = twin.get("scratch_score_runs") or []
        score = twin.get("scratch_score", twin["score"])
        f["at_baseline_resolution"] = {
            "arch": twin["arch"], "latency_ms": twin["latency_ms"],
            "memory_bytes": twin["memory_bytes"], "score": score, "score_runs": runs,
            "latency_saved": 1.0 - f["latency_ms"] / twin["latency_ms"],
            "memory_saved": 1.0 - f["memory_bytes"] / twin["memory_bytes"],
            "score_gain": f["score"] - score, "score_gain_se": paired_se(f["score_runs"], runs)}


def _resolutions(m: dict) -> tuple[int, int | None]:
    """A model's input resolution and its head's output stride (None: a head without one)."""
    return parse_arch(m["arch"]).resolution_and_stride()


def headline(metrics: dict) -> dict:
    """The few figures ``dvc metrics show`` and ``dvc metrics diff`` compare across runs
    (``metrics.json`` keeps every figure)."""
    out = {k: metrics[k] for k in ("latency_reduction", "score_delta", "score_delta_se",
                                   "energy_reduction") if metrics.get(k) is not None}
    out["latency_met"] = metrics["targets"]["latency_met"]
    out["shown_equal"] = metrics.get("shown_equal")
    if "family_met" in metrics["targets"]:
        out["family_met"] = metrics["targets"]["family_met"]
    if mem := metrics.get("memory_model"):
        out.update(memory_reduction=mem["memory_reduction"],
                   memory_score_delta=mem["score_delta"],
                   memory_met=metrics["targets"]["memory_met"],
                   memory_shown_equal=mem.get("shown_equal"))
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}
