"""DVC stage ``eval_supernet``: does the supernet rank subnets the way training them does?

For ``subnets`` architectures spread over the space by MACs (the smallest and the
largest included), compare the accuracy inherited from the supernet (extract, BN
recalibration, test split) with the same architecture trained from scratch with
the supernet's budget (same epochs, batches, augmentation, optimizer and schedule).
Writes Kendall tau, the largest subnet's gap and a row per subnet. From-scratch
results are kept in ``subnets.jsonl`` (``persist: true``) keyed by architecture and
training params, so a killed run resumes where it stopped.
"""
from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: on a busy machine spinning threads
# make every op wait for a descheduled peer (2-3x slower training measured here).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr

from hwnas.arch import ArchSpec
from hwnas.lowering import static_cost
from hwnas.model import build_model
from hwnas.params import load_params, section
from hwnas.space import SearchSpace
from hwnas.supernet import accuracy, largest_arch, load_supernet, smallest_arch, subnet_accuracy
from hwnas.training import train_from_scratch
from stages.train_supernet import MODEL, Setup, fingerprint, setup

OUT = Path("results/eval_supernet")


def spread_subnets(space: SearchSpace, n: int, candidates: int, seed: int) -> list[ArchSpec]:
    """The smallest, the largest and ``n - 2`` random subnets at evenly spaced MAC
    quantiles of ``candidates`` samples: a set that covers the space's size range."""
    rng = np.random.default_rng(seed)
    pool = sorted({a.encode(): a for a in (space.sample(rng) for _ in range(candidates))}.values(),
                  key=lambda a: static_cost(a).macs)
    picks = [pool[i] for i in np.unique(np.linspace(0, len(pool) - 1, max(0, n - 2)).round()
                                        .astype(int))] if n > 2 else []
    return [smallest_arch(space)] + picks + [largest_arch(space)]


def rank_metrics(rows: list[dict]) -> dict:
    inh = [r["inherited_acc"] for r in rows]
    scr = [r["scratch_acc"] for r in rows]
    largest = rows[-1]
    tau = kendalltau(inh, scr).statistic
    rho = spearmanr(inh, scr).statistic
    gap = largest["scratch_acc"] - largest["inherited_acc"]
    return {"subnets": len(rows), "kendall_tau": round(float(tau), 4),
            "spearman_rho": round(float(rho), 4),
            "largest_inherited_acc": largest["inherited_acc"],
            "largest_scratch_acc": largest["scratch_acc"],
            "largest_gap_points": round(gap, 2),
            "mean_abs_gap_points": round(float(np.mean(np.abs(np.subtract(scr, inh)))), 2),
            "pass_tau": bool(tau >= 0.5), "pass_largest_gap": bool(abs(gap) <= 2.0)}


def scratch_accuracy(arch: ArchSpec, s: Setup) -> float:
    torch.manual_seed(s.params["seed"])
    net = build_model(arch).to(s.device)
    train_from_scratch(net, s.loader("train", train=True, seed=s.params["seed"]), s.train)
    return accuracy(net, s.loader("test"))


def scratch_fingerprint(params: dict) -> str:
    """What a from-scratch result depends on: seed, data and the training budget (not the
    sandwich-only knobs), so changing the supernet's sampling keeps the cached runs."""
    train = {k: v for k, v in params["train"].items() if k not in ("num_random", "distill")}
    return fingerprint({"seed": params["seed"], "data": params["data"], "train": train})


def scratch_results(archs: list[ArchSpec], s: Setup, cache_path: Path,
                    on_done=None) -> dict[str, dict]:
    """From-scratch accuracy per architecture string, trained now or read from the cache
    (rows written with the same training params; one JSON line appended per subnet)."""
    fp = scratch_fingerprint(s.params)
    cached = {}
    if cache_path.exists():
        for line in cache_path.read_text().splitlines():
            r = json.loads(line)
            if r.get("fingerprint") == fp:
                cached[r["arch"]] = r
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    for arch in archs:
        key = arch.with_name("").encode()
        if key not in cached:
            t = time.perf_counter()
            acc = scratch_accuracy(arch, s)
            cost = static_cost(arch)
            cached[key] = {"arch": key, "fingerprint": fp, "scratch_acc": acc,
                           "scratch_seconds": round(time.perf_counter() - t, 1),
                           "macs": cost.macs, "params": cost.params}
            with cache_path.open("a") as f:
                f.write(json.dumps(cached[key]) + "\n")
        if on_done:
            on_done(cached[key])
    return cached


def main() -> None:
    from rich.progress import Progress

    from hwnas import tracking

    params = load_params()
    pt, pe = section(params, "train_supernet"), section(params, "eval_supernet")
    s = setup(pt)
    supernet = load_supernet(MODEL, s.device).eval()
    archs = spread_subnets(s.space, pe["subnets"], pe["candidates"], pe["seed"])
    OUT.mkdir(parents=True, exist_ok=True)
    calib, test = s.calib_loader(), s.loader("test")
    rows, t0 = [], time.perf_counter()
    with tracking.run("eval_supernet", {**pe, "train_fingerprint": fingerprint(pt)},
                      tags={"stage": "eval_supernet"}), Progress() as bar:
        task = bar.add_task("subnets: from scratch", total=len(archs))
        scratch = scratch_results(archs, s, OUT / "subnets.jsonl",
                                  on_done=lambda r: bar.update(task, advance=1))
        for i, arch in enumerate(archs):
            row = scratch[arch.with_name("").encode()]
            inherited = subnet_accuracy(supernet, arch, calib, test, pt.get("calib_batches", 8))
            rows.append({**row, "inherited_acc": inherited, "name": arch.name or f"subnet{i}"})
            tracking.log_metrics({"inherited_acc": inherited, "scratch_acc": row["scratch_acc"]},
                                 step=i)
        metrics = rank_metrics(rows)
        metrics["seconds"] = round(time.perf_counter() - t0, 1)
        tracking.log_metrics(metrics)
    table = [{k: r[k] for k in ("name", "arch", "macs", "params", "inherited_acc", "scratch_acc",
                                "scratch_seconds")} for r in rows]
    (OUT / "rows.json").write_text(json.dumps(table, indent=2) + "\n")
    (OUT / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
