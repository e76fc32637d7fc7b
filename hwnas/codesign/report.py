"""The co-design study over all points: the table, the Pareto front of hardware cost against
the best network's latency, the cross-evaluation (each point's network on every chip) and a
report that answers which chip, which network on it, and how the network follows the chip."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hwnas.codesign.grid import AXES, area_mm2, describe, point_key, points
from hwnas.codesign.point import SHAPE


def table(grid: dict, results: dict[str, dict], specs: dict, cost: dict) -> pd.DataFrame:
    """One row per point: its axes, area, this chip's baseline and best network (simulated)."""
    rows = []
    for point in points(grid):
        key = point_key(point)
        m, best = results[key], results[key]["best"] or {}
        arch = best.get("architecture", {})
        rows.append({"key": key, "label": label(point, grid), **point,
                     "area_mm2": area_mm2(specs[key], cost), "seconds": m["seconds"],
                     "baseline_latency_ms": m["baseline"]["latency_ms"],
                     "baseline_energy_mj": m["baseline"]["energy_mj"],
                     "baseline_score": m["baseline"]["score"],
                     "baseline_test_score": m["baseline"]["test_score"],
                     "best_latency_ms": best.get("latency_ms"),
                     "latency_reduction": best.get("latency_reduction"),
                     "best_energy_mj": best.get("energy_mj"),
                     "energy_reduction": best.get("energy_reduction"),
                     "baseline_memory_bytes": m["baseline"]["memory_bytes"],
                     "best_memory_bytes": best.get("memory_bytes"),
                     "memory_reduction": (1 - best["memory_bytes"] / m["baseline"]["memory_bytes"]
                                          if best else None),
                     "best_score": best.get("score"),
                     "best_test_score": best.get("test_score"),
                     "best_macs": best.get("macs"),
                     "best_utilization": best.get("utilization"),
                     "estimator_error_on_best": best.get("estimator_signed_error"),
                     "estimator_within_10pct": m["estimator"]["within_10pct"],
                     **{f"best_{k}": arch.get(k) for k in SHAPE},
                     "best_arch": best.get("arch")})
    df = pd.DataFrame(rows)
    from hwnas.search.evolution import non_dominated

    ok = df["best_latency_ms"].notna()
    df["cost_pareto"] = False
    if ok.any():
        df.loc[ok, "cost_pareto"] = non_dominated(df.loc[ok, ["area_mm2", "best_latency_ms"]])
    return df


def label(point: dict, grid: dict) -> str:
    """A point by the axes the grid varies (the array size always)."""
    parts = [f"{point['mac_array']}x{point['mac_array']}"]
    if len(grid["vector_lanes"]) > 1:
        parts.append(f"{point['vector_lanes']} lanes")
    if len(grid["sram_kib"]) > 1:
        parts.append(f"{point['sram_kib']:g} KiB")
    if len(grid["dram_bandwidth_gb_s"]) > 1:
        parts.append(f"{point['dram_bandwidth_gb_s']:g} GB/s")
    if len(grid["fusion"]) > 1:
        parts.append("fused" if point["fusion"] else "unfused")
    return ", ".join(parts)


def cross(df: pd.DataFrame, specs: dict) -> pd.DataFrame:
    """Latency of the network searched for row A on chip B, over B's own network's latency
    (1 on the diagonal; above 1: A's network is slower on B than the one searched for B)."""
    from hwnas.evaluation.metrics import simulate_latencies

    has = df[df["best_arch"].notna()]
    nets, own = list(has["best_arch"]), dict(zip(has["key"], has["best_latency_ms"]))
    on = {b: simulate_latencies(nets, specs[b]) for b in has["key"]}
    return pd.DataFrame([[on[b][a] / own[b] for b in has["key"]] for a in nets],
                        index=list(has["key"]), columns=list(has["key"]))


def _slowdowns(values: np.ndarray) -> dict:
    return {"pairs": int(len(values)), "share_slower_than_own": float(np.mean(values > 1 + 1e-9)),
            "median_slowdown": float(np.median(values) - 1),
            "mean_slowdown": float(np.mean(values) - 1), "max_slowdown": float(values.max() - 1)}


def cross_summary(ratio: pd.DataFrame, df: pd.DataFrame) -> dict | None:
    """How much a network loses on the chips it was not searched for, over all pairs and
    over the pairs whose chips differ in each axis the grid varies (None: under 2 points)."""
    if len(ratio) < 2:
        return None
    off = ~np.eye(len(ratio), dtype=bool)
    worst = np.unravel_index(np.argmax(np.where(off, ratio.to_numpy(), -np.inf)), ratio.shape)
    rows = df.set_index("key").loc[ratio.index]
    differs = {a: rows[a].to_numpy()[:, None] != rows[a].to_numpy()[None, :] for a in AXES}
    by_axis = {}
    for axis in AXES:  # the pairs of chips that differ in this axis alone
        alone = differs[axis] & ~np.any([differs[a] for a in AXES if a != axis], axis=0)
        if alone.any():
            by_axis[axis] = _slowdowns(ratio.to_numpy()[alone])
    return {**_slowdowns(ratio.to_numpy()[off]),
            "worst": {"network_of": ratio.index[worst[0]], "on": ratio.columns[worst[1]]},
            "by_axis": by_axis}


def summary(df: pd.DataFrame, ratio: pd.DataFrame, area_budget: float) -> dict:
    within = df[(df["area_mm2"] <= area_budget) & df["best_latency_ms"].notna()]
    pick = within.loc[within["best_latency_ms"].idxmin()] if len(within) else None
    red = df["latency_reduction"].dropna()
    return {"points": int(len(df)), "points_with_a_network": int(df["best_arch"].notna().sum()),
            "seconds": float(df["seconds"].sum()),
            "min_latency_reduction": float(red.min()) if len(red) else None,
            "median_latency_reduction": float(red.median()) if len(red) else None,
            "points_at_least_40pct": int((red >= 0.40).sum()),
            "cost_pareto": df.loc[df["cost_pareto"], "key"].tolist(),
            "cross": cross_summary(ratio, df),
            "area_budget_mm2": area_budget,
            "pick": None if pick is None else {
                "key": pick["key"], "area_mm2": float(pick["area_mm2"]),
                "best_latency_ms": float(pick["best_latency_ms"]),
                "latency_reduction": float(pick["latency_reduction"]),
                "best_energy_mj": float(pick["best_energy_mj"]), "arch": pick["best_arch"]}}


def plot_pareto(df: pd.DataFrame, path: Path, area_budget: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 6))
    ok = df[df["best_latency_ms"].notna()]
    ax.scatter(df["area_mm2"], df["baseline_latency_ms"] * 1e3, s=40, facecolors="none",
               edgecolors="#9e9e9e", label="that chip's baseline (MobileNetV2-like)")
    ax.scatter(ok["area_mm2"], ok["best_latency_ms"] * 1e3, s=40, c="#1f77b4",
               label="best network at the baseline's supernet score")
    front = ok[ok["cost_pareto"]].sort_values("area_mm2")
    ax.plot(front["area_mm2"], front["best_latency_ms"] * 1e3, "-o", c="#d62728", ms=8,
            mfc="none", label="Pareto front: hardware cost vs latency")
    for _, r in ok.iterrows():
        ax.annotate(r["label"], (r["area_mm2"], r["best_latency_ms"] * 1e3), xytext=(5, 4),
                    textcoords="offset points", fontsize=7)
    ax.axvline(area_budget, c="k", ls=":", lw=1, label=f"area budget {area_budget:g} mm$^2$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("hardware cost: area proxy (mm$^2$, log scale)")
    ax.set_ylabel("simulated latency (µs, log scale)")
    ax.set_title("co-design: the best network on each accelerator")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_cross(ratio: pd.DataFrame, df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    labels = list(df.set_index("key").loc[ratio.index, "label"])
    n = len(ratio)
    fig, ax = plt.subplots(figsize=(2.5 + 0.62 * n, 1.8 + 0.55 * n))
    if not n:  # no point has a network at the baseline's score: nothing to cross
        ax.text(0.5, 0.5, "no point has a network at the baseline's supernet score",
                ha="center", va="center")
        ax.set_axis_off()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return
    values = ratio.to_numpy()
    top, low = max(float(values.max()), 1.01), min(float(values.min()), 0.99)
    # red: slower than the chip's own network; blue: faster (the other search found better)
    im = ax.imshow(values, cmap="RdBu_r", norm=TwoSlopeNorm(1.0, low, top))
    for i in range(n):
        for j in range(n):
            strong = values[i, j] > 1 + 0.6 * (top - 1) or values[i, j] < 1 - 0.6 * (1 - low)
            ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if strong else "black")
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel("chip the network runs on")
    ax.set_ylabel("chip the network was searched for")
    ax.set_title("latency on the chip / that chip's own network's latency", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def shape_by(df: pd.DataFrame, axis: str) -> pd.DataFrame:
    """The best networks' shape per value of ``axis`` (mean over the other axes)."""
    cols = [f"best_{k}" for k in SHAPE] + ["best_macs", "latency_reduction"]
    return df.dropna(subset=["best_latency_ms"]).groupby(axis)[cols].mean()


def _follows(df: pd.DataFrame, axis: str) -> str:
    """One answer line: how the best network changes along one axis of the grid."""
    values = "; ".join(
        f"{('on' if v else 'off') if isinstance(v, (bool, np.bool_)) else f'{v:g}'}: fused-IBN "
        f"share {r['best_fused_share']:.2f} (early "
        f"{r['best_fused_share_early']:.2f}, late {r['best_fused_share_late']:.2f}), "
        f"{r['best_mean_channels']:.0f} channels, {100 * r['best_aligned_share']:.0f}% of widths "
        f"a multiple of the array, {r['best_macs'] / 1e6:.2f} M MACs"
        for v, r in shape_by(df, axis).iterrows())
    pair = df[[axis, "best_fused_share"]].astype(float).dropna()
    rho = (f"{pair.corr(method='spearman').iloc[0, 1]:.2f}"
           if pair.nunique().min() > 1 else "not defined (no variation)")
    return (f"- **How the network follows `{axis}`** (means over the other axes): {values}. "
            f"Spearman of {axis} and fused-IBN share over the points: {rho}.")


def markdown(df: pd.DataFrame, ratio: pd.DataFrame, s: dict, base: str, cost: dict,
             task: str) -> str:
    pick, c = s["pick"], s["cross"]
    lines = [f"# Co-design for {task}: {s['points']} accelerators around {base}", "",
             "Each point is the base spec with the grid's MAC array (square), vector lanes, SRAM, "
             "DRAM bandwidth and fusion rules. Per point: microbenchmarks and an estimator of "
             "its own, then the search against the task's one supernet (its score does not "
             "depend on the chip). The best network of a point is the estimator's fastest "
             "Pareto network at the baseline's supernet score or better; latency and energy "
             "are the simulator's (noise off) on that chip. Scores are supernet scores on the "
             "val split, not from-scratch runs; the test-split column scores them again on "
             "images that chose nothing. A network's early blocks are the first half of its "
             "blocks, the late ones the rest. Results are bit-identical only on the same machine. "
             f"The study took {s['seconds'] / 60:.1f} min of point time "
             "(estimators, searches, scoring; a reused estimator or journal counts what it "
             "took now).", "",
             f"Hardware cost is an area proxy: {cost['mac_mm2']:g} mm² per MAC, "
             f"{cost['lane_mm2']:g} mm² per vector lane, {cost['sram_kib_mm2']:g} mm² per KiB "
             "of SRAM (params.yaml `codesign.cost`).", "", "## Answers", ""]
    if not s["points_with_a_network"]:
        lines += ["No point has a network at the baseline's supernet score: the search found "
                  "nothing as accurate and faster on any chip (a larger `search.candidates`, "
                  "or a supernet that ranks better, may).", ""]
        return "\n".join(lines + _points_table(df)) + "\n"
    if pick:
        row = df.set_index("key").loc[pick["key"]]
        lines += [f"- **Which accelerator at {s['area_budget_mm2']:g} mm²:** "
                  f"{describe(row.to_dict())} ({pick['area_mm2']:.2f} mm²): its best network "
                  f"runs in {pick['best_latency_ms'] * 1e3:.1f} µs, "
                  f"{100 * pick['latency_reduction']:.1f}% below the baseline's latency on the "
                  f"same chip, at {pick['best_energy_mj'] * 1e3:.2f} µJ per inference.",
                  f"- **Which network on it:** `{pick['arch']}` ({row['best_blocks']:.0f} blocks, "
                  f"fused-IBN share {row['best_fused_share']:.2f} (early "
                  f"{row['best_fused_share_early']:.2f}, late {row['best_fused_share_late']:.2f}), "
                  f"mean width {row['best_mean_channels']:.0f} channels, "
                  f"{row['best_macs'] / 1e6:.2f} M MACs, supernet score {row['best_score']:.1f}% "
                  f"vs the baseline's {row['baseline_score']:.1f}% on the val split, "
                  f"{row['best_test_score']:.1f}% vs {row['baseline_test_score']:.1f}% on the "
                  f"test split)."]
    else:
        lines += [f"- No point fits the area budget of {s['area_budget_mm2']:g} mm²."]
    front = df[df["cost_pareto"]].sort_values("area_mm2")
    lines += ["- **Cost against speed:** the Pareto front of area vs the best network's latency "
              "is " + "; ".join(f"{r['label']} ({r['area_mm2']:.2f} mm², "
                                 f"{r['best_latency_ms'] * 1e3:.1f} µs)"
                                 for _, r in front.iterrows()) + ".",
              *(_follows(df, axis) for axis in AXES if df[axis].nunique() > 1),
              "- **Alignment:** the supernet's widths are curated for the base spec's array, "
              "so on arrays that divide it every width is aligned by construction; on wider "
              "ones alignment is a choice the search makes.",
              (f"- **Specialisation:** for {100 * c['share_slower_than_own']:.0f}% of the "
               f"{c['pairs']} pairs, the network searched for chip A runs slower on chip B than "
               f"B's own; the median pair loses {100 * c['median_slowdown']:.1f}% "
               f"(mean {100 * c['mean_slowdown']:.1f}%), the worst "
               f"{100 * c['max_slowdown']:.0f}% (the network of {c['worst']['network_of']} on "
               f"{c['worst']['on']}). Over the pairs of chips that differ in one axis alone, "
               + "; ".join(f"in `{a}`: {100 * d['share_slower_than_own']:.0f}% slower, median "
                              f"{100 * d['median_slowdown']:+.1f}%, worst "
                              f"{100 * d['max_slowdown']:+.0f}% ({d['pairs']} pairs)"
                              for a, d in c["by_axis"].items())
               + ". A ratio below 1 is a network the other chip's search found and this "
                 "chip's did not (search noise, or the estimator's error)." if c else
               "- **Specialisation:** one point has no other chip to compare with."),
              (f"- **Against each chip's baseline:** the best network's latency is "
               f"{100 * s['min_latency_reduction']:.1f}% to "
               f"{100 * df['latency_reduction'].max():.1f}% lower (median "
               f"{100 * s['median_latency_reduction']:.1f}%); {s['points_at_least_40pct']} of "
               f"{s['points']} points reach 40%." if s["min_latency_reduction"] is not None else
               "- **Against each chip's baseline:** no point has a network at the baseline's "
               "supernet score."), "",
              "![Pareto front](pareto.png)", "", "![Cross-evaluation](cross.png)", ""]
    return "\n".join(lines + _points_table(df)) + "\n"


def _f(value, spec: str, scale: float = 1.0, unit: str = "") -> str:
    """A table cell: ``value * scale`` in ``spec``, or n/a where it is missing."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value * scale:{spec}}{unit}"


def _points_table(df: pd.DataFrame) -> list[str]:
    lines = ["## Points", "",
             "| point | area mm² | baseline µs | best µs | latency | memory "
             "| energy µJ (best / base) | val score (best / base) | test score (best / base) "
             "| fused early / late | channels | est. error | est. ±10% |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for _, r in df.iterrows():
        head = (f"| {describe(r.to_dict())} | {r['area_mm2']:.2f} "
                f"| {_f(r['baseline_latency_ms'], '.1f', 1e3)} ")
        if pd.isna(r["best_latency_ms"]):
            lines.append(head + "| none at the baseline's score " + "| " * 9 + "|")
            continue
        lines.append(
            head + f"| {_f(r['best_latency_ms'], '.1f', 1e3)} "
            f"| {_f(-r['latency_reduction'], '+.1%')} | {_f(-r['memory_reduction'], '+.1%')} "
            f"| {_f(r['best_energy_mj'], '.2f', 1e3)} / {_f(r['baseline_energy_mj'], '.2f', 1e3)} "
            f"| {_f(r['best_score'], '.1f')} / {_f(r['baseline_score'], '.1f')} "
            f"| {_f(r['best_test_score'], '.1f')} / {_f(r['baseline_test_score'], '.1f')} "
            f"| {_f(r['best_fused_share_early'], '.2f')} / {_f(r['best_fused_share_late'], '.2f')} "
            f"| {_f(r['best_mean_channels'], '.0f')} | {_f(r['estimator_error_on_best'], '+.1%')} "
            f"| {_f(r['estimator_within_10pct'], '.0%')} |")
    lines += ["", "Latency and memory: the best network's against the chip's baseline. Est. error: "
              "the estimator's latency of the best network against the simulator's; est. ±10%: "
              "share of held-out networks of the space the point's estimator costs within 10%. "
              "`table.csv` has every column, with the networks."]
    return lines
