"""Final evaluation: the simulator judges the chosen networks and the baseline.

Pure functions; the ``evaluate`` stage reads the files and writes the results.

- ``measure``: simulated latency, energy and memory of named networks on a spec, and
  the latency estimator's error on each (the estimator never judges here).
- ``ablation_table``: the article's table (fused-IBN search yes/no x depth-multiplier
  search yes/no -> latency reduction against the baseline at equal accuracy), derived
  from one search's candidates by restriction; see its docstring for the definition.
- ``build_metrics``: the ``metrics.json`` figures and the issue's targets.
- ``plot`` and ``report``: ``pareto.png`` and ``report.md``.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from hwnas.arch import ArchError, ArchSpec, parse_arch
from hwnas.search.evolution import non_dominated
from hwnas.space import SearchSpace

# issue 6, item 5: 50% lower latency within 0.3 points of the baseline's accuracy, and a
# memory-budget network with 45% less memory within 1 point.
TARGETS = {"latency_reduction": 0.50, "latency_accuracy_drop": 0.3,
           "memory_reduction": 0.45, "memory_accuracy_drop": 1.0}

SIM_KEYS = ("latency_ms", "energy_mj", "memory_bytes", "params_bytes", "peak_activation_bytes",
            "macs", "cycles", "dram_bytes", "utilization")


class EvaluateError(ValueError):
    """Unusable input to the evaluation; the message names the file or key."""


# ---- simulated figures and the estimator's error --------------------------------------------


def measure(archs: dict[str, ArchSpec], spec, estimate: Callable | None = None) -> dict[str, dict]:
    """Name -> simulated figures (``SIM_KEYS``) plus, with ``estimate`` (an
    ``Estimator.estimate``), its latency/memory and relative errors against the simulator."""
    from hwnas.simulation import simulate_arch

    names = list(archs)
    out = {}
    for name in names:
        sim = simulate_arch(archs[name], spec, per_kernel=False)
        out[name] = {"arch": archs[name].with_name("").encode(),
                     **{k: sim[k] for k in SIM_KEYS}}
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


# ---- which choices of the space a network uses ---------------------------------------------


def uses_fused(arch: ArchSpec) -> bool:
    return any(b.type == "fused_ibn" for b in arch.blocks)


def uses_depth_search(arch: ArchSpec, space: SearchSpace) -> bool:
    """True when the network's per-stage depths differ from the baseline's (depth
    multiplier 1): it needs the depth-multiplier search to be found."""
    base = space.base_depths()
    fit = space.split(arch, prefer=base)
    return fit is None or fit[1] != base


def tag_candidates(df: pd.DataFrame, space: SearchSpace) -> pd.DataFrame:
    """Adds ``fused`` and ``depth_search`` columns (a copy; the input is untouched)."""
    out = df.copy()
    flags = {}
    for text in out["arch"].unique():
        try:
            arch = parse_arch(text)
        except ArchError as err:
            raise EvaluateError(f"candidates: bad architecture {text!r}: {err}") from None
        flags[text] = (uses_fused(arch), uses_depth_search(arch, space))
    out["fused"] = out["arch"].map(lambda t: flags[t][0])
    out["depth_search"] = out["arch"].map(lambda t: flags[t][1])
    return out


# ---- the article's table ----------------------------------------------------------------


def ablation_table(candidates: pd.DataFrame, baseline: dict, space: SearchSpace,
                   tolerance: float = 0.0, latency_col: str = "sim_latency_ms") -> list[dict]:
    """Latency reduction against the baseline at equal accuracy, per search setting.

    Definition. A cell (fused-IBN search F, depth-multiplier search D) is the
    sub-space the search would have had without that choice: a candidate belongs to it
    when it has no ``fused_ibn`` block (unless F) and its per-stage depths are the
    baseline's, i.e. depth multiplier 1 (unless D). Among the cell's feasible
    candidates, plus the baseline itself (it is in every cell), those whose search
    accuracy (the measure the search ranked by) is at least the baseline's minus
    ``tolerance`` points are "at equal accuracy"; the cell reports the one with the
    lowest latency (``latency_col``: simulated) and ``1 - latency / baseline latency``.

    The cells restrict a single search over the full space rather than running four
    searches, so the restricted cells hold fewer candidates and understate what a
    dedicated search of that sub-space would find.
    """
    df = tag_candidates(candidates, space)
    if "feasible" in df:
        df = df[df["feasible"].astype(bool)]
    base_acc, base_lat = float(baseline["accuracy"]), float(baseline[latency_col])
    rows = []
    for fused, depth in ((False, False), (True, False), (False, True), (True, True)):
        pool = df[(fused | ~df["fused"]) & (depth | ~df["depth_search"])]
        ok = pool[pool["accuracy"] >= base_acc - tolerance]
        best = {"arch": baseline["arch"], "accuracy": base_acc, latency_col: base_lat,
                "is_baseline": True}
        if len(ok):
            r = ok.loc[ok[latency_col].idxmin()]
            if float(r[latency_col]) < base_lat:
                best = {"arch": r["arch"], "accuracy": float(r["accuracy"]),
                        latency_col: float(r[latency_col]), "is_baseline": False}
        rows.append({"fused_ibn_search": fused, "depth_multiplier_search": depth,
                     "candidates": int(len(pool)), "at_equal_accuracy": int(len(ok)),
                     "arch": best["arch"], "accuracy": best["accuracy"],
                     "latency_ms": best[latency_col], "is_baseline": best["is_baseline"],
                     "latency_reduction": 1.0 - best[latency_col] / base_lat})
    return rows


# ---- metrics ----------------------------------------------------------------------------


def accuracy_se(acc_percent: float, n: int) -> float:
    """Binomial standard error of a test accuracy, in points."""
    p = acc_percent / 100.0
    return 100.0 * math.sqrt(max(p * (1 - p), 1e-12) / max(1, n))


def paired_se(ours: Sequence[float], theirs: Sequence[float]) -> float | None:
    """Standard error of the mean difference of paired runs (run i of both on seed i);
    None unless both have the same number of runs, at least two."""
    if not len(ours) == len(theirs) >= 2:
        return None
    d = [a - b for a, b in zip(ours, theirs)]
    return statistics.stdev(d) / math.sqrt(len(d))


def build_metrics(models: dict[str, dict], baseline_names: Sequence[str],
                  latency_name: str = "latency", memory_name: str | None = "memory",
                  targets: dict = TARGETS, scratch_name: str = "baseline-scratch") -> dict:
    """``metrics.json``: the latency-chosen model against the baseline, the memory-budget
    model's figures and whether the issue's targets are met. Where a chosen model was
    also trained from scratch (``scratch_accuracy``) and the baseline was (``scratch_name``),
    its accuracy is that, against the baseline's: architecture against architecture with
    the same budget and seeds (``accuracy_basis: scratch``; the saved weights' own test
    accuracy is ``model_accuracy``). Otherwise the saved weights' accuracy meets the stronger
    of the ``baseline_names`` variants by test accuracy (a conservative comparison)."""
    missing = [n for n in (latency_name, *baseline_names) if n not in models]
    if memory_name and memory_name not in models:
        missing.append(memory_name)
    if missing:
        raise EvaluateError(f"no evaluated model named '{missing[0]}' "
                            f"(have: {', '.join(models)})")
    variants = {n: models[n]["accuracy"] for n in baseline_names}
    chosen = models[latency_name]
    by_scratch = "scratch_accuracy" in chosen and scratch_name in models
    base_name = scratch_name if by_scratch else max(variants, key=lambda n: variants[n])
    base = models[base_name]

    def reduction(key: str, m: dict) -> float:
        return 1.0 - m[key] / base[key]

    def accuracy_of(m: dict) -> float:
        return m["scratch_accuracy"] if by_scratch and "scratch_accuracy" in m else m["accuracy"]

    def kept(m: dict) -> dict:
        """Which weights were saved (the better on the val split) and their accuracies."""
        out = {"model_accuracy": m["accuracy"]} if by_scratch or "weights" in m else {}
        if "weights" in m:
            out.update(weights=m["weights"], accuracy_finetuned=m["finetuned_accuracy"])
        if by_scratch and "scratch_accuracy_runs" in m:
            out["accuracy_runs"] = m["scratch_accuracy_runs"]
        return out

    out = {
        "accuracy": accuracy_of(chosen), "baseline_accuracy": base["accuracy"],
        "accuracy_basis": "scratch" if by_scratch else "saved weights",
        "baseline_accuracy_source": base_name,
        **{f"baseline_accuracy_{n.removeprefix('baseline-')}": a for n, a in variants.items()},
        "accuracy_delta": accuracy_of(chosen) - base["accuracy"],
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
    if "accuracy_runs" in base:
        out["baseline_accuracy_runs"] = base["accuracy_runs"]
    if by_scratch:  # the saved files against each other (one run each; val chose the weights)
        out["model_accuracy_delta"] = out["model_accuracy"] - base.get("model_accuracy",
                                                                       base["accuracy"])
    if "test_images" in chosen:
        out["accuracy_se"] = accuracy_se(out["accuracy"], chosen["test_images"])
    se = paired_se(out.get("accuracy_runs") or [], out.get("baseline_accuracy_runs") or [])
    if se is not None:
        out["accuracy_delta_se"] = se
    lat_ok = (out["latency_reduction"] >= targets["latency_reduction"]
              and out["accuracy"] >= out["baseline_accuracy"] - targets["latency_accuracy_drop"])
    out["targets"] = {"latency_reduction_min": targets["latency_reduction"],
                      "latency_accuracy_drop_max": targets["latency_accuracy_drop"],
                      "latency_met": bool(lat_ok)}
    if memory_name:
        mem = models[memory_name]
        out["memory_model"] = {
            "arch": mem["arch"], "accuracy": accuracy_of(mem),
            "accuracy_delta": accuracy_of(mem) - base["accuracy"],
            "memory_bytes": mem["memory_bytes"],
            "memory_reduction": reduction("memory_bytes", mem),
            "latency_ms": mem["latency_ms"], "latency_reduction": reduction("latency_ms", mem),
            "energy_mj": mem["energy_mj"], "estimator_error": mem.get("estimator_error"),
            **kept(mem)}
        mem_ok = (out["memory_model"]["memory_reduction"] >= targets["memory_reduction"]
                  and out["memory_model"]["accuracy_delta"] >= -targets["memory_accuracy_drop"])
        out["targets"].update(memory_reduction_min=targets["memory_reduction"],
                              memory_accuracy_drop_max=targets["memory_accuracy_drop"],
                              memory_met=bool(mem_ok))
    return out


# ---- figure and report ------------------------------------------------------------------


def plot(candidates: pd.DataFrame, baseline_search: dict, models: dict[str, dict],
         baseline_names: Sequence[str], path, latency_col: str = "sim_latency_ms") -> None:
    """Left: every search candidate at its simulated latency and search accuracy, the
    front, the baseline. Right: the evaluated models at simulated latency and test
    accuracy (from scratch, the mean over seeds, where a model was so trained; else after
    fine-tuning), the baseline variants marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    lat, acc = candidates[latency_col].to_numpy(), candidates["accuracy"].to_numpy()
    ax1.scatter(lat, acc, s=7, c="#bbbbbb", label="search candidates")
    mask = non_dominated(np.column_stack([lat, -acc]))
    front = candidates[mask].sort_values(latency_col)
    ax1.plot(front[latency_col], front["accuracy"], "-o", ms=3, c="#d62728",
             label="front (simulated latency)")
    ax1.scatter([baseline_search[latency_col]], [baseline_search["accuracy"]], marker="*",
                s=220, c="#1f77b4", zorder=5, label="baseline")
    ax1.set_xlabel("simulated latency (ms)")
    ax1.set_ylabel("search accuracy (%, supernet, val)")
    ax1.set_title("search candidates")
    ax1.grid(alpha=0.3)
    ax1.legend(loc="lower right", fontsize=8)

    for name, m in models.items():
        is_base = name in baseline_names
        a = m.get("scratch_accuracy", m["accuracy"])
        ax2.scatter([m["latency_ms"]], [a], marker="*" if is_base else "o",
                    s=220 if is_base else 50, c="#1f77b4" if is_base else "#d62728", zorder=5)
        ax2.annotate(name, (m["latency_ms"], a), textcoords="offset points",
                     xytext=(6, 4), fontsize=8)
    ax2.set_xlabel("simulated latency (ms)")
    ax2.set_ylabel("test accuracy (%; from scratch: mean over seeds)")
    ax2.set_title("evaluated models (baseline: stars)")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x, fmt: str = ".4f") -> str:
    return "-" if x is None else format(x, fmt)


def report(metrics: dict, models: dict[str, dict], table: list[dict], info: dict) -> str:
    """``report.md``: what was measured, the headline, every model and the table."""
    t = metrics["targets"]
    variants = ", ".join(f"{k.removeprefix('baseline_accuracy_')}: {v:.2f}"
                         for k, v in metrics.items()
                         if k.startswith("baseline_accuracy_") and isinstance(v, (int, float)))
    lines = [
        f"# Evaluation on {info['hardware']}",
        "",
        "All latency, energy and memory figures are from the analytic simulator on the target "
        "spec (the judge); the latency estimator's relative error against it is reported "
        "beside them. Accuracy is top-1 on the test split "
        f"({info.get('test_images', '?')} images of {info.get('dataset', '?')}), never seen by "
        "the search (val split) or training.",
        "",
        "## Headline",
        "",
        "| | chosen (latency) | baseline | change |",
        "| --- | --- | --- | --- |",
        f"| test accuracy (%) | {metrics['accuracy']:.2f} | {metrics['baseline_accuracy']:.2f} "
        f"| {metrics['accuracy_delta']:+.2f} points |",
        f"| simulated latency (ms) | {metrics['latency_ms']:.4f} | "
        f"{metrics['baseline_latency_ms']:.4f} | {_pct(-metrics['latency_reduction'])} |",
        f"| simulated energy (mJ) | {metrics['energy_mj']:.5f} | "
        f"{metrics['baseline_energy_mj']:.5f} | {_pct(-metrics['energy_reduction'])} |",
        f"| memory (bytes) | {metrics['memory_bytes']:,} | {metrics['baseline_memory_bytes']:,} "
        f"| {_pct(-metrics['memory_reduction'])} |",
        f"| estimator latency error | {_pct(metrics['estimator_error'])} | "
        f"{_pct(metrics['baseline_estimator_error'])} | |",
        "",
    ]
    if metrics.get("accuracy_basis") == "scratch":
        runs = metrics.get("accuracy_runs") or []
        lines += ["", f"Accuracy compares architectures: the chosen network and the baseline "
                      f"both trained from scratch with the same budget, the mean test accuracy "
                      f"over paired seeds (chosen {runs}, baseline "
                      f"{metrics.get('baseline_accuracy_runs', [])}). "
                      f"{info.get('baseline_budget', '')}"]
    else:
        lines += ["", f"Baseline accuracy is the stronger of its variants ({variants}; used: "
                      f"{metrics['baseline_accuracy_source']}). {info.get('baseline_budget', '')}"]
    if "weights" in metrics:
        lines += ["", f"The saved model keeps the weights that score higher on the val split: "
                      f"fine-tuned from the supernet ({metrics['accuracy_finetuned']:.2f}% test) "
                      f"or the from-scratch run best on val; kept: **{metrics['weights']}** "
                      f"({_num(metrics.get('model_accuracy'), '.2f')}% test"
                  + (f", {metrics['model_accuracy_delta']:+.2f} points against the saved "
                     f"baseline" if "model_accuracy_delta" in metrics else "") + ")."]
    if "accuracy_se" in metrics:
        lines += ["", f"Standard error of one test accuracy here: about "
                      f"{metrics['accuracy_se']:.2f} points (binomial over the test images)."
                  + (f" Over the paired runs (same seeds) the accuracy change has a standard "
                     f"error of {metrics['accuracy_delta_se']:.2f} points."
                     if "accuracy_delta_se" in metrics else "")]
    mm = metrics.get("memory_model")
    if mm:
        lines += ["", "## Memory-budget model", "",
                  "| test accuracy (%) | change | memory (bytes) | memory reduction | "
                  "latency (ms) | latency reduction |",
                  "| --- | --- | --- | --- | --- | --- |",
                  f"| {mm['accuracy']:.2f} | {mm['accuracy_delta']:+.2f} points | "
                  f"{mm['memory_bytes']:,} | {_pct(mm['memory_reduction'])} | "
                  f"{mm['latency_ms']:.4f} | {_pct(mm['latency_reduction'])} |"]
    lines += ["", "## Targets (issue 6)", "",
              f"- latency: reduction >= {_pct(t['latency_reduction_min'])} at accuracy >= baseline "
              f"- {t['latency_accuracy_drop_max']} points: "
              f"**{'met' if t['latency_met'] else 'not met'}** "
              f"({_pct(metrics['latency_reduction'])}, {metrics['accuracy_delta']:+.2f} points)"]
    if mm:
        lines.append(f"- memory: reduction >= {_pct(t['memory_reduction_min'])} at accuracy >= "
                     f"baseline - {t['memory_accuracy_drop_max']} points: "
                     f"**{'met' if t['memory_met'] else 'not met'}** "
                     f"({_pct(mm['memory_reduction'])}, {mm['accuracy_delta']:+.2f} points)")
    lines += ["", "## Every evaluated model", "",
              "| model | test acc (%) | inherited acc (%) | search acc (%) | from scratch acc (%) "
              "| latency (ms) | energy (mJ) | memory (bytes) | est. latency error "
              "| ONNX max abs diff |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, m in models.items():
        # the saved weights' own accuracy; from scratch: the mean over seeds where there are runs
        saved = m.get("model_accuracy", m["accuracy"])
        scratch = m.get("scratch_accuracy", m["accuracy"] if "accuracy_runs" in m else None)
        lines.append(f"| {name} | {saved:.2f} | {_num(m.get('inherited_accuracy'), '.2f')} | "
                     f"{_num(m.get('search_accuracy'), '.2f')} | "
                     f"{_num(scratch, '.2f')} | {m['latency_ms']:.4f} | "
                     f"{m['energy_mj']:.5f} | {m['memory_bytes']:,} | "
                     f"{_pct(m.get('estimator_error'))} | {_num(m.get('onnx_max_abs_diff'), '.1e')} |")
    lines += ["", "Architectures:", ""]
    lines += [f"- `{name}`: `{m['arch']}`" for name, m in models.items()]
    lines += ["", "## Latency reduction at equal accuracy, by search setting", "",
              "| fused-IBN search | depth-multiplier search | candidates | at equal accuracy | "
              "latency (ms) | latency reduction |", "| --- | --- | --- | --- | --- | --- |"]
    for r in table:
        yn = lambda b: "yes" if b else "no"  # noqa: E731
        lines.append(f"| {yn(r['fused_ibn_search'])} | {yn(r['depth_multiplier_search'])} | "
                     f"{r['candidates']} | {r['at_equal_accuracy']} | {r['latency_ms']:.4f} | "
                     f"{_pct(r['latency_reduction'])}{' (baseline)' if r['is_baseline'] else ''} |")
    lines += ["", info.get("table_definition", ""), "",
              "![accuracy vs simulated latency](pareto.png)", ""]
    lines += [f"- {note}" for note in info.get("notes", ())]
    return "\n".join(lines).rstrip() + "\n"
