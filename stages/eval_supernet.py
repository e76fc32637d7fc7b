"""DVC stage ``eval_supernet``: the supernet's proof (``hwnas.proof``).

For ``subnets`` architectures spread over log-MACs, inherited score (extract, BN
recalibration) against the mean of ``scratch_seeds`` from-scratch runs with the
supernet's budget, on ``eval_split``. Writes Kendall tau, the largest subnet's gap, a
row per subnet (``rows.json``) and the probes (``probes.json``). From-scratch runs are
kept in ``subnets.jsonl`` (``persist: true``), so a killed run resumes where it stopped
and a retrained supernet re-scores in seconds.
"""
from __future__ import annotations

import json
import time

from hwnas import layout
from hwnas.params import load_params, run_stage, section


def main() -> None:
    from rich.progress import Progress

    from hwnas import tracking
    from hwnas.checkpoint import fingerprint
    from hwnas.context import train_context
    from hwnas.files import staged
    from hwnas.proof import (probe_metrics, probe_subnets, rank_metrics, score_subnets,
                              scratch_results, spread_subnets)
    from hwnas.supernet import load_supernet

    params = load_params()
    pt, pe = section(params, "train_supernet"), section(params, "eval_supernet")
    ctx = train_context(pt)
    supernet = load_supernet(layout.SUPERNET, ctx.device).eval()
    archs = spread_subnets(ctx.space, pe["subnets"], pe["candidates"], pe["seed"])
    probes = probe_subnets(ctx.space) if pe["probes"] else []
    scratch_probes = [a for a in probes if a.name == "baseline_ibn_k3"]
    split = pe["eval_split"]
    layout.EVAL_SUPERNET.mkdir(parents=True, exist_ok=True)
    calib, held_out = ctx.calib_loader(), ctx.loader(split)
    t0 = time.perf_counter()
    with tracking.run("eval_supernet", {**pe, "train_fingerprint": fingerprint(pt)},
                      tags={"stage": "eval_supernet"}), Progress() as bar:
        task = bar.add_task("subnets: from scratch", total=len(archs) + len(scratch_probes))
        scratch = scratch_results(archs + scratch_probes, ctx, layout.EVAL_SUPERNET / "subnets.jsonl",
                                  on_done=lambda r: bar.update(task, advance=1),
                                  eval_split=split, seeds=pe["scratch_seeds"])
        rows, probe_rows = score_subnets(
            supernet, archs, probes, scratch, calib, held_out, pt["calib_batches"],
            on_row=lambda i, r: tracking.log_metrics(
                {"inherited_score": r["inherited_score"], "scratch_score": r["scratch_score"]}, step=i))
        metrics = {**rank_metrics(rows), "eval_split": split, "eval_images": len(held_out.data),
                   "scratch_seeds": pe["scratch_seeds"], **probe_metrics(probe_rows),
                   "seconds": round(time.perf_counter() - t0, 1)}
        tracking.log_metrics({k: v for k, v in metrics.items() if not isinstance(v, str)})
        table = [{k: r[k] for k in ("name", "arch", "macs", "params", "inherited_score",
                                    "scratch_score", "scratch_scores", "scratch_seconds")}
                 for r in rows]
        with staged() as files:  # every output, or none (and the run FAILED if none)
            files.json(layout.EVAL_SUPERNET / "rows.json", table)
            files.json(layout.EVAL_SUPERNET / "probes.json", probe_rows)
            files.json(layout.EVAL_SUPERNET / "metrics.json", metrics)
    print(json.dumps(metrics))


if __name__ == "__main__":
    run_stage("eval_supernet", main)
