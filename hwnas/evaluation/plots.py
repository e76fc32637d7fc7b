"""``pareto.png``: the search candidates and the evaluated models."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from hwnas.search.evolution import non_dominated


MARKERS = {"latency": ("D", "#2ca02c"), "memory": ("s", "#9467bd")}


def plot(candidates: pd.DataFrame, baseline_search: dict, models: dict[str, dict],
         baseline_names: Sequence[str], path, latency_col: str = "sim_latency_ms",
         metrics: dict | None = None) -> None:
    """Left: every search candidate at its simulated (measured target: estimated) latency
    and search score (feasible or not), the feasible front, the baseline and the evaluated
    models. Right: the evaluated models at the judge's latency and test score (from scratch, the mean over
    seeds, where a model was so trained; else after fine-tuning), the baseline variants
    marked, and with ``metrics`` the latency target's region (``build_metrics``). With a
    family in ``metrics``, a third panel: ``plot_family``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # the left panel at the candidates' latency (simulated, or the search's estimate on a
    # measured target), the right one at the judge's
    judge = (metrics or {}).get("latency_judge", "simulated")
    left = "simulated" if judge == "simulated" else "estimated"
    model_left = "latency_ms" if judge == "simulated" else "est_latency_ms"
    family = bool(metrics and metrics.get("family"))
    fig, axes = plt.subplots(1, 3 if family else 2, figsize=(19.5 if family else 13, 5.2))
    ax1, ax2 = axes[:2]
    if family:
        plot_family(axes[2], metrics)
    feasible = candidates.get("feasible", pd.Series(True, index=candidates.index)).to_numpy(bool)
    lat, acc = candidates[latency_col].to_numpy(), candidates["score"].to_numpy()
    ax1.scatter(lat[feasible], acc[feasible], s=7, c="#9e9e9e", label="feasible candidate")
    ax1.scatter(lat[~feasible], acc[~feasible], s=9, marker="x", c="#d0d0d0", linewidths=0.8,
                label="infeasible (over a search budget)")
    ok = candidates[feasible]
    mask = non_dominated(np.column_stack([ok[latency_col], -ok["score"]]))
    front = ok[mask].sort_values(latency_col)
    ax1.plot(front[latency_col], front["score"], "-o", ms=3, c="#d62728",
             label=f"front of the feasible ({left} latency)")
    ax1.scatter([baseline_search[latency_col]], [baseline_search["score"]], marker="*",
                s=220, c="#1f77b4", zorder=5, label="baseline")
    for name, m in models.items():
        if name in baseline_names or m.get("search_score") is None:
            continue
        marker, color = MARKERS.get(name, ("o", "#ff7f0e"))
        ax1.scatter([m[model_left]], [m["search_score"]], marker=marker, s=90, c=color,
                    edgecolors="k", zorder=6)
        ax1.annotate(name, (m[model_left], m["search_score"]), textcoords="offset points",
                     xytext=(7, -11), fontsize=8, fontweight="bold", color=color)
    ax1.set_xlabel(f"{left} latency (ms)")
    from hwnas import tasks

    label = tasks.get((metrics or {}).get("task", "classification")).label
    ax1.set_ylabel(f"search {label} (%, supernet, val)")
    ax1.set_title("search candidates and the evaluated networks")
    ax1.grid(alpha=0.3)
    ax1.legend(loc="lower right", fontsize=8)

    if metrics and "targets" in metrics:
        t = metrics["targets"]
        x = (1 - t["latency_reduction_min"]) * metrics["baseline_latency_ms"]
        y = metrics["baseline_score"] - t["latency_score_drop_max"]
        ax2.axvline(x, c="k", ls="--", lw=1,
                    label=f"latency target: -{100 * t['latency_reduction_min']:g}% vs the baseline")
        ax2.axhline(y, c="#1f77b4", ls=":", lw=1,
                    label=f"score target: baseline - {t['latency_score_drop_max']:g} points")
        ax2.fill_between([0, x], y, y + 100, color="#2ca02c", alpha=0.08, lw=0,
                         label="latency target met")
    from hwnas.extract import resolution_twin

    twins = {resolution_twin(f["name"]) for f in (metrics or {}).get("family", ())}
    models = {n: m for n, m in models.items() if n not in twins}  # in the family's panel
    for name, m in models.items():
        is_base = name in baseline_names
        a = m.get("scratch_score", m["score"])
        marker, color = (("*", "#1f77b4") if is_base else MARKERS.get(name, ("o", "#ff7f0e")))
        ax2.scatter([m["latency_ms"]], [a], marker=marker, s=220 if is_base else 90, c=color,
                    edgecolors="none" if is_base else "k", zorder=5)
        ax2.annotate(name, (m["latency_ms"], a), textcoords="offset points",
                     xytext=(7, 4), fontsize=8)
    accs = [m.get("scratch_score", m["score"]) for m in models.values()]
    lats = [m["latency_ms"] for m in models.values()]
    if accs:
        pad = max(0.5, 0.1 * (max(accs) - min(accs)))
        ax2.set_ylim(min(accs) - pad, max(accs) + pad)
        ax2.set_xlim(0, 1.15 * max(lats))
    ax2.set_xlabel(f"{judge} latency (ms)")
    ax2.set_ylabel(f"test {label} (%; from scratch: mean over seeds)")
    ax2.set_title("evaluated models (baseline: stars)")
    ax2.grid(alpha=0.3)
    if metrics and "targets" in metrics:
        ax2.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _stride(stride: int | None) -> str:
    return "" if stride is None else f", /{stride}"


def plot_family(ax, metrics: dict) -> None:
    """A family's members (from scratch: mean and paired standard error over seeds) and the
    baseline at the judge's latency, each labelled with its input resolution and output
    stride; a member's twin at the baseline's resolution (``at_baseline_resolution``) hollow,
    an arrow from it to the member."""
    fam, base = metrics["family"], metrics
    ax.scatter([base["baseline_latency_ms"]], [base["baseline_score"]], marker="*", s=220,
               c="#1f77b4", label="baseline", zorder=5)
    ax.annotate(f"baseline\n{base['baseline_input_resolution']} px"
                f"{_stride(base['baseline_output_stride'])}", (base["baseline_latency_ms"],
                                                       base["baseline_score"]),
                textcoords="offset points", xytext=(-30, -26), fontsize=8)
    ax.errorbar([f["latency_ms"] for f in fam], [f["score"] for f in fam],
                yerr=[f["score_delta_se"] or 0.0 for f in fam], fmt="o-", ms=6, c="#d62728",
                capsize=3, label="members (+-1 paired SE of the change)", zorder=6)
    for f in fam:
        ax.annotate(f"{f['name']}: -{100 * f['latency_reduction']:.0f}%\n"
                    f"{f['input_resolution']} px{_stride(f['output_stride'])}",
                    (f["latency_ms"], f["score"]), textcoords="offset points", xytext=(6, 4),
                    fontsize=8)
    twins = [(f, t) for f in fam if (t := f.get("at_baseline_resolution"))]
    if twins:
        ax.scatter([t["latency_ms"] for _, t in twins], [t["score"] for _, t in twins], s=45,
                   facecolors="none", edgecolors="#d62728", zorder=6,
                   label="a member's twin at the baseline's resolution (arrow: to the member)")
        for f, t in twins:
            ax.annotate("", (f["latency_ms"], f["score"]), (t["latency_ms"], t["score"]),
                        arrowprops={"arrowstyle": "->", "color": "#d62728", "lw": 0.8,
                                    "ls": ":"})
    drop = base["targets"]["family_score_drop_max"]
    ax.axhline(base["baseline_score"] - drop, c="#1f77b4", ls=":", lw=1,
               label=f"baseline - {drop:g} points")
    ax.set_xlim(0, 1.15 * base["baseline_latency_ms"])
    ax.set_xlabel(f"{metrics.get('latency_judge', 'simulated')} latency (ms)")
    ax.set_ylabel("test score (%; from scratch: mean over seeds)")
    ax.set_title("the family (input px, /output stride)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
