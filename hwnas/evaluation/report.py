"""``report.md``: what was measured, the headline, every model and the article's table."""
from __future__ import annotations


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _at(resolution: int, stride: int | None) -> str:
    """An input resolution and, for a head with one, its output stride."""
    return f"{resolution} px" + ("" if stride is None else f", stride {stride}")


def _change(x: float) -> str:
    """A relative change, signed: +12.0% more, -12.0% less."""
    return f"{100 * x:+.1f}%"


def _num(x, fmt: str = ".4f") -> str:
    return "-" if x is None else format(x, fmt)


def report(metrics: dict, models: dict[str, dict], table: list[dict], info: dict) -> str:
    """``report.md``: what was measured, the headline, every model and the table."""
    from hwnas import tasks
    from hwnas.evaluation.metrics import verdict

    t = metrics["targets"]
    task = tasks.get(metrics.get("task", "classification"))
    variants = ", ".join(f"{k.removeprefix('baseline_score_')}: {v:.2f}"
                         for k, v in metrics.items()
                         if k.startswith("baseline_score_") and isinstance(v, (int, float)))
    judge = info.get("latency_judge", "simulated")
    lines = [
        f"# Evaluation on {info['hardware']}",
        "",
        judge_sentence(info, metrics),
        f"Score is {task.label} (%) on the test split "
        f"({info.get('test_images', '?')} images of {info.get('dataset', '?')}), never seen by "
        "the search (val split) or training.",
        "",
        "Reproducibility: rerun on the same machine with the same thread count, every figure "
        "here is identical; on another CPU, floating-point rounding in training differs, so "
        "the supernet, the scores and possibly the chosen network differ within the "
        "standard errors reported.",
        "",
        "## Headline",
        "",
        "| | chosen (latency) | baseline | change |",
        "| --- | --- | --- | --- |",
        f"| test score (%) | {metrics['score']:.2f} | {metrics['baseline_score']:.2f} "
        f"| {metrics['score_delta']:+.2f} points |",
        f"| {judge} latency (ms) | {metrics['latency_ms']:.4f} | "
        f"{metrics['baseline_latency_ms']:.4f} | {_pct(-metrics['latency_reduction'])} |",
        *([f"| latency spread over the rounds | {_pct(metrics['latency_spread'])} | "
           f"{_pct(metrics['baseline_latency_spread'])} | each round: "
           + ", ".join(_pct(-r) for r in metrics["latency_reduction_rounds"]) + " |"]
          if "latency_spread" in metrics else []),
        *([f"| simulated energy (mJ) | {metrics['energy_mj']:.5f} | "
           f"{metrics['baseline_energy_mj']:.5f} | {_pct(-metrics['energy_reduction'])} |"]
          if metrics["energy_mj"] is not None else []),
        f"| memory (bytes) | {metrics['memory_bytes']:,} | {metrics['baseline_memory_bytes']:,} "
        f"| {_pct(-metrics['memory_reduction'])} |",
        f"| estimator latency error | {_pct(metrics['estimator_error'])} | "
        f"{_pct(metrics['baseline_estimator_error'])} | |",
        "",
    ]
    if metrics.get("score_basis") == "scratch":
        runs = metrics.get("score_runs") or []
        lines += ["", f"Score compares architectures: the chosen network and the baseline "
                      f"both trained from scratch with the same budget, the mean test score "
                      f"over paired seeds (chosen {runs}, baseline "
                      f"{metrics.get('baseline_score_runs', [])}). "
                      f"{info.get('baseline_budget', '')}"]
    else:
        lines += ["", f"Baseline score is the stronger of its variants ({variants}; used: "
                      f"{metrics['baseline_score_source']}). {info.get('baseline_budget', '')}"]
    if "weights" in metrics:
        lines += ["", f"The saved model keeps the weights that score higher on the val split: "
                      f"fine-tuned from the supernet ({metrics['score_finetuned']:.2f}% test) "
                      f"or the from-scratch run best on val; kept: **{metrics['weights']}** "
                      f"({_num(metrics.get('model_score'), '.2f')}% test"
                  + (f", {metrics['model_score_delta']:+.2f} points against the saved "
                     f"baseline" if "model_score_delta" in metrics else "") + ")."]
    if "score_se" in metrics:
        lines += ["", f"Standard error of one test score here: about "
                      f"{metrics['score_se']:.2f} points (binomial over the test images)."
                  + (f" Over the paired runs (same seeds) the score change has a standard "
                     f"error of {metrics['score_delta_se']:.2f} points."
                     if "score_delta_se" in metrics else "")]
    mm = metrics.get("memory_model")
    if mm:
        lines += ["", "## Memory-budget model", "",
                  "| test score (%) | change | memory (bytes) | memory reduction | "
                  "latency (ms) | latency reduction |",
                  "| --- | --- | --- | --- | --- | --- |",
                  f"| {mm['score']:.2f} | {mm['score_delta']:+.2f} points | "
                  f"{mm['memory_bytes']:,} | {_pct(mm['memory_reduction'])} | "
                  f"{mm['latency_ms']:.4f} | {_pct(mm['latency_reduction'])} |"]
    lines += family_section(metrics)
    lines += ["", "## Equal score, stated statistically", "",
              f"- latency model: {verdict(metrics)}"]
    if mm:
        lines.append(f"- memory model: {verdict(mm)}")
    lines += ["", "Equal means non-inferior: the 95% confidence interval (Student's t) of the "
                  "paired score difference (chosen - baseline, run i of both on seed i) lies "
                  "above minus the margin (`evaluate.non_inferiority_margin`). A miss is "
                  "reported, not hidden; more seeds (`baseline.seeds`) narrow the interval."]
    lines += ["", "## Targets", "",
              f"- latency: reduction >= {_pct(t['latency_reduction_min'])} at score >= baseline "
              f"- {t['latency_score_drop_max']} points: "
              f"**{'met' if t['latency_met'] else 'not met'}** "
              f"({_pct(metrics['latency_reduction'])}, {metrics['score_delta']:+.2f} points)"]
    if mm:
        lines.append(f"- memory: reduction >= {_pct(t['memory_reduction_min'])} at score >= "
                     f"baseline - {t['memory_score_drop_max']} points: "
                     f"**{'met' if t['memory_met'] else 'not met'}** "
                     f"({_pct(mm['memory_reduction'])}, {mm['score_delta']:+.2f} points)")
    if fam := metrics.get("family"):
        low, high = t["family_span"]
        cuts = [f["latency_reduction"] for f in fam]
        lines.append(f"- family: latency reductions from at most {_pct(low)} to at least "
                     f"{_pct(high)}, each at score >= baseline - {t['family_score_drop_max']} "
                     f"points: **{'met' if t['family_met'] else 'not met'}** ({_pct(min(cuts))} "
                     f"to {_pct(max(cuts))}; score changes "
                     + ", ".join(f"{f['name']} {f['score_delta']:+.2f}" for f in fam) + ")")
    lines += ["", "## Every evaluated model", "",
              "| model | test score (%) | search score (%) | inherited score (%) | from scratch (%) "
              "| latency (ms) | energy (mJ) | memory (bytes) | est. latency error "
              "| ONNX max abs diff |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, m in models.items():
        # the saved weights' own score; from scratch: the mean over seeds where there are runs
        saved = m.get("model_score", m["score"])
        scratch = m.get("scratch_score", m["score"] if "score_runs" in m else None)
        lines.append(f"| {name} | {saved:.2f} | {_num(m.get('search_score'), '.2f')} | "
                     f"{_num(m.get('inherited_score'), '.2f')} | "
                     f"{_num(scratch, '.2f')} | {m['latency_ms']:.4f} | "
                     f"{_num(m['energy_mj'], '.5f')} | {m['memory_bytes']:,} | "
                     f"{_pct(m.get('estimator_error'))} | {_num(m.get('onnx_max_abs_diff'), '.1e')} |")
    lines += ["", "Test score: the saved weights on the test split. Search score: the "
                  "supernet's score for the architecture on the val split, which the search "
                  "ranked by. Inherited score: the network extracted from the supernet, "
                  "BN-recalibrated, on the test split, before fine-tuning. From scratch: the "
                  "mean over seeds.",
              "", "Architectures:", ""]
    lines += [f"- `{name}`: `{m['arch']}`" for name, m in models.items()]
    lines += ["", f"What the search chose on {info['hardware']}, block by block after the stem "
                  "(F fused-IBN, I IBN, C conv; then kernel x expansion):", ""]
    lines += [f"- `{name}`: {block_choices(m['arch'])}" for name, m in models.items()]
    lines += ["", "## Latency reduction at equal score, by search setting", "",
              "| fused-IBN search | depth-multiplier search | candidates | at equal score | "
              "latency (ms) | latency reduction |", "| --- | --- | --- | --- | --- | --- |"]
    for r in table:
        yn = lambda b: "yes" if b else "no"  # noqa: E731
        lines.append(f"| {yn(r['fused_ibn_search'])} | {yn(r['depth_multiplier_search'])} | "
                     f"{r['candidates']} | {r['at_equal_score']} | {r['latency_ms']:.4f} | "
                     f"{_pct(r['latency_reduction'])}{' (baseline)' if r['is_baseline'] else ''} |")
    lines += ["", info.get("table_definition", ""), "",
              "The same question answered by four searches of their own, each network trained "
              "from scratch: [the findings](../findings/report.md) (`hwnas findings --task "
              f"{metrics.get('task', 'classification')}` writes them).", "",
              f"![score vs {judge} latency](pareto.png)", "",
              "## Test examples", "", "![test examples](examples.png)", ""]
    if pixel := metrics.get("pixel_accuracy"):
        lines += ["Pixel accuracy on the test split (%): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in pixel.items()) + ". The logits' "
                  "bilinear upsampling to the labels' resolution and the argmax run on the host "
                  f"(not accelerator work, not in the {judge} latency), as does scaling the "
                  "image to a network's input resolution.", ""]
    if host := metrics.get("host_postprocess_ms"):
        lines += [f"Host post-processing (not accelerator work, not in the {judge} latency): "
                  "sigmoid, top-k, box decoding and class-wise NMS run on the host CPU after "
                  "the network, measured here per test image in eager PyTorch on this host's CPU: "
                  + ", ".join(f"{k} {v:.2f} ms" for k, v in host.items()) + ".", ""]
    lines += [f"- {note}" for note in info.get("notes", ())]
    return "\n".join(lines).rstrip() + "\n"


def judge_sentence(info: dict, metrics: dict) -> str:
    """What the figures are: the simulator's, or on a measured target timings."""
    if info.get("latency_judge", "simulated") == "simulated":
        return ("All latency, energy and memory figures are from the analytic simulator on the "
                "target spec (the judge); the latency estimator's relative error against it is "
                "reported beside them.")
    m = info["measure"]
    return (f"Latency is measured (the judge): each model's architecture, built with random "
            f"weights, exported to ONNX and timed in ONNX Runtime on this machine's CPU (batch 1, one pinned core, {m['clock']} clock, "
            f"{m['repeats']} repeats of at least {m['min_repeat_ms']:g} ms after {m['warmup']} "
            f"warm-up calls, the median), in {m['rounds']} rounds, each in its own process, "
            f"one after the other; a figure is the rounds' geometric mean and its spread the "
            f"largest distance of a round from it (largest here: "
            f"{_pct(metrics.get('models_latency_spread_max'))}). Timings hold for this machine "
            f"only. Memory is the graph's (parameters and peak activations at "
            f"{info['bytes_per_element']} bytes per element); energy is not measured. "
            f"The latency estimator's relative error against the measurement is beside them.")


def block_choices(arch_text: str) -> str:
    """A network's blocks in order as type/kernel/expansion, e.g. ``F3x4 F3x4 I5x6``
    (F fused-IBN, I IBN, C conv), with the count of each type."""
    from collections import Counter

    from hwnas.arch import parse_arch

    letter = {"fused_ibn": "F", "ibn": "I", "conv": "C"}
    blocks = parse_arch(arch_text).blocks
    seq = " ".join(f"{letter.get(b.type, '?')}{b.kernel}"
                   + (f"x{b.expand:g}" if b.type != "conv" else "") for b in blocks)
    counts = Counter(b.type for b in blocks)
    return f"{seq} ({', '.join(f'{n} {t}' for t, n in sorted(counts.items()))})"


def family_section(metrics: dict) -> list[str]:
    """The family (A, B, ...) in the article's shape, with each member's searched input
    resolution and output stride against the baseline's."""
    from hwnas.evaluation.metrics import equal_word

    fam = metrics.get("family")
    if not fam:
        return []
    res, stride = metrics["baseline_input_resolution"], metrics["baseline_output_stride"]
    lines = ["", "## The family", "",
             f"Each member is the search's best network (supernet score, val split) of its "
             f"band of latency reductions (`search.family`: from its cut to the next), trained "
             f"from scratch over the baseline's seeds; the baseline "
             f"reads {_at(res, stride)}.", "",
             "| model | latency reduction | memory reduction | energy reduction | score (%) | "
             "change (points) | paired SE | equal? | input (px) | output stride |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
             f"| baseline | 0% | 0% | 0% | {metrics['baseline_score']:.2f} | | | | {res} | "
             f"{_num(stride, 'd')} |"]
    for f in fam:
        lines.append(f"| {f['name']} | {_pct(f['latency_reduction'])} | "
                     f"{_pct(f['memory_reduction'])} | {_pct(f['energy_reduction'])} | "
                     f"{f['score']:.2f} | {f['score_delta']:+.2f} | "
                     f"{_num(f['score_delta_se'], '.2f')} | {equal_word(f['shown_equal'])} | "
                     f"{f['input_resolution']} | {_num(f['output_stride'], 'd')} |")
    other = [f["name"] for f in fam
             if (f["input_resolution"], f["output_stride"]) != (res, stride)]
    lines += ["", (f"Members with a searched input or output resolution other than the "
                   f"baseline's: {', '.join(other)}. What the choice bought, against a twin "
                   f"(`<member>-baseline-resolution`: the same blocks and head width at "
                   f"{_at(res, stride)}, trained from scratch over the same seeds):"
                   if other else
                   "Every member kept the baseline's input and output resolution.")]
    for f in fam:
        if twin := f.get("at_baseline_resolution"):
            lines.append(
                f"- {f['name']} ({_at(f['input_resolution'], f['output_stride'])}): "
                f"{f['latency_ms']:.4f} ms against {twin['latency_ms']:.4f} ms (latency "
                f"{_change(-twin['latency_saved'])}, memory {_change(-twin['memory_saved'])}), "
                f"score {f['score']:.2f} against {twin['score']:.2f}% "
                f"({twin['score_gain']:+.2f} points, paired SE "
                f"{_num(twin['score_gain_se'], '.2f')})")
    lines += ["", "The family is the right panel of the figure below (`pareto.png`)."]
    return lines


def table_definition(tolerance: float, latency: str = "simulated") -> str:
    return ("Table definition: each cell restricts the one search's feasible candidates to "
            "the sub-space that search setting allows (no fused-IBN block when fused-IBN "
            "search is off; the baseline's per-stage depths, i.e. depth multiplier 1, when "
            "depth-multiplier search is off), adds the baseline, keeps those whose search "
            f"score (supernet, val split) is at least the baseline's"
            f"{f' minus {tolerance:g} points' if tolerance else ''}, and reports the lowest "
            f"{latency} latency among them against the baseline's. The cells come from one "
            "search of the full space, not four searches, so restricted cells hold fewer "
            "candidates and understate a dedicated search; score here is the search's "
            "estimate, not the fine-tuned test score.")
