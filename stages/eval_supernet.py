"""DVC stage ``eval_supernet``: does the supernet rank subnets the way training them does?

For ``subnets`` architectures at evenly spaced log-MACs (the smallest and the largest
included; ``spread_subnets``), compare the accuracy inherited from the supernet (extract, BN
recalibration) with the same architecture trained from scratch with the supernet's
budget (same epochs, batches, augmentation, optimizer and schedule), both on
``eval_split`` (default ``val+test``: 1,500 MNIST images). The from-scratch accuracy is
the mean of ``scratch_seeds`` runs (initialization and batch order; same splits).
Writes Kendall tau, the largest subnet's gap and a row per subnet, and "probes"
(``probes.json``): the largest subnet with every block one type and one kernel size,
and an all-ibn 3x3 baseline, so an undertrained block type or kernel size shows.
From-scratch runs are kept in ``subnets.jsonl`` (``persist: true``) keyed by
architecture, training params, split and run, so a killed run resumes where it stopped.
``scratch_split_half_tau`` (the first half of each subnet's runs against the second) says
whether the from-scratch reference is stable enough to score the supernet against.
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
from scipy.stats import kendalltau, spearmanr

from hwnas.arch import ArchSpec
from hwnas.lowering import static_cost
from hwnas.model import fresh_model
from hwnas.params import load_params, section
from hwnas.space import SearchSpace
from hwnas.supernet import accuracy, load_supernet, subnet_accuracy
from hwnas.training import train_from_scratch
from stages.train_supernet import MODEL, Setup, fingerprint, setup

OUT = Path("results/eval_supernet")


def spread_subnets(space: SearchSpace, n: int, candidates: int, seed: int) -> list[ArchSpec]:
    """The smallest, the largest and ``n - 2`` random subnets nearest to evenly spaced
    log-MACs between them, picked from ``candidates`` samples: a set that covers the
    space's size range. (Quantiles of random samples, the earlier pick, put 8 of 10 into
    2-40 MMACs, where MNIST from scratch saturates: 97.5-98.2%, runs differing by 0.7.)"""
    rng = np.random.default_rng(seed)
    pool = list({a.encode(): a for a in (space.sample(rng) for _ in range(candidates))}.values())
    small, large = space.smallest(), space.largest()
    log_macs = np.log([static_cost(a).macs for a in pool])
    picks: list[ArchSpec] = []
    for target in np.linspace(np.log(static_cost(small).macs), np.log(static_cost(large).macs),
                              n)[1:-1] if n > 2 else []:
        order = np.argsort(np.abs(log_macs - target))
        picks.append(next(pool[i] for i in order if pool[i] not in picks))
    return [small] + sorted(picks, key=lambda a: static_cost(a).macs) + [large]


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
            "pass_tau": bool(tau >= 0.5), "pass_largest_gap": bool(abs(gap) <= 2.0),
            "scratch_split_half_tau": split_half_tau(rows)}


def split_half_tau(rows: list[dict]) -> float | None:
    """How stable the from-scratch reference is: Kendall tau between the mean of the first
    half of each subnet's runs and the mean of the second half (None below 2 runs). A
    reference that does not agree with itself cannot score the supernet."""
    runs = [r.get("scratch_accs") or [] for r in rows]
    k = min(map(len, runs)) // 2
    if k < 1:
        return None
    first, second = ([float(np.mean(a[i:i + k])) for a in runs] for i in (0, k))
    return round(float(kendalltau(first, second).statistic), 4)


def scratch_accuracy(arch: ArchSpec, s: Setup, eval_split: str = "test",
                     seed: int | None = None) -> float:
    """``arch`` trained alone with the supernet's budget; ``seed`` (default: the params'
    seed) draws the initialization and batch order, the data splits stay fixed."""
    seed = s.params["seed"] if seed is None else seed
    net = fresh_model(arch, seed, s.device)
    train_from_scratch(net, s.loader("train", train=True, seed=seed), s.train)
    return accuracy(net, s.loader(eval_split))


SANDWICH_ONLY = ("num_random", "distill", "extremes", "clip_per_subnet", "distill_stages",
                 "stage_regressor", "teacher_weight")


def scratch_fingerprint(params: dict, eval_split: str = "test", run: int = 0) -> str:
    """What a from-scratch result depends on: seed, data, the training budget (not the
    sandwich-only knobs, so changing the supernet's sampling keeps the cached runs) and
    the split it is evaluated on."""
    train = {k: v for k, v in params["train"].items() if k not in SANDWICH_ONLY}
    keep = {"seed": params["seed"], "data": params["data"], "train": train}
    if eval_split != "test":
        keep["eval_split"] = eval_split
    if run:
        keep["run"] = run
    return fingerprint(keep)


def probe_subnets(space: SearchSpace) -> list[ArchSpec]:
    """The largest subnet with every block one type and one kernel (each type x kernel),
    and the MobileNetV2-like baseline (ibn, 3x3, largest expansion, depth multiplier 1,
    middle widths): do all block types and kernel sizes inherit sensible accuracy?"""
    probes = [space.largest(t, k) for t in space.common_types()
              for k in sorted(set.intersection(*(set(st.kernels) for st in space.stages)))]
    if "ibn" in space.common_types() and all(3 in st.kernels for st in space.stages):
        mid = (lambda xs: xs[(len(xs) - 1) // 2])  # noqa: E731
        base = space.baseline([mid(st.channels) for st in space.stages], mid(space.stem_channels))
        probes.append(base.with_name("baseline_ibn_k3"))
    return probes


def scratch_results(archs: list[ArchSpec], s: Setup, cache_path: Path,
                    on_done=None, eval_split: str = "test", seeds: int = 1) -> dict[str, dict]:
    """From-scratch accuracy per architecture string: the mean over ``seeds`` runs
    (run ``i`` uses seed ``params.seed + i`` for initialization and batch order), each
    trained now or read from the cache (one JSON line appended per run)."""
    fps = [scratch_fingerprint(s.params, eval_split, i) for i in range(seeds)]
    cached: dict[tuple[str, str], dict] = {}
    if cache_path.exists():
        for line in cache_path.read_text().splitlines():
            r = json.loads(line)
            if r.get("fingerprint") in fps:
                cached[r["arch"], r["fingerprint"]] = r
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    out = {}
    for arch in archs:
        key = arch.with_name("").encode()
        runs = []
        for i, fp in enumerate(fps):
            if (key, fp) not in cached:
                t = time.perf_counter()
                acc = scratch_accuracy(arch, s, eval_split, s.params["seed"] + i)
                cost = static_cost(arch)
                cached[key, fp] = {"arch": key, "fingerprint": fp, "run": i, "scratch_acc": acc,
                                   "scratch_seconds": round(time.perf_counter() - t, 1),
                                   "macs": cost.macs, "params": cost.params}
                with cache_path.open("a") as f:
                    f.write(json.dumps(cached[key, fp]) + "\n")
            runs.append(cached[key, fp])
        accs = [r["scratch_acc"] for r in runs]
        out[key] = {**runs[0], "run": None, "scratch_acc": round(float(np.mean(accs)), 3),
                    "scratch_accs": accs,
                    "scratch_seconds": round(sum(r["scratch_seconds"] for r in runs), 1)}
        if on_done:
            on_done(out[key])
    return out


def main() -> None:
    from rich.progress import Progress

    from hwnas import tracking

    params = load_params()
    pt, pe = section(params, "train_supernet"), section(params, "eval_supernet")
    s = setup(pt)
    supernet = load_supernet(MODEL, s.device).eval()
    archs = spread_subnets(s.space, pe["subnets"], pe["candidates"], pe["seed"])
    probes = probe_subnets(s.space) if pe.get("probes", True) else []
    scratch_probes = [a for a in probes if a.name == "baseline_ibn_k3"]
    split = pe.get("eval_split", "test")
    OUT.mkdir(parents=True, exist_ok=True)
    calib, held_out = s.calib_loader(), s.loader(split)
    nb = pt.get("calib_batches", 8)
    rows, probe_rows, t0 = [], [], time.perf_counter()
    with tracking.run("eval_supernet", {**pe, "train_fingerprint": fingerprint(pt)},
                      tags={"stage": "eval_supernet"}), Progress() as bar:
        task = bar.add_task("subnets: from scratch", total=len(archs) + len(scratch_probes))
        scratch = scratch_results(archs + scratch_probes, s, OUT / "subnets.jsonl",
                                  on_done=lambda r: bar.update(task, advance=1),
                                  eval_split=split, seeds=pe.get("scratch_seeds", 1))
        for i, arch in enumerate(archs):
            row = scratch[arch.with_name("").encode()]
            inherited = subnet_accuracy(supernet, arch, calib, held_out, nb)
            rows.append({**row, "inherited_acc": inherited, "name": arch.name or f"subnet{i}"})
            tracking.log_metrics({"inherited_acc": inherited, "scratch_acc": row["scratch_acc"]},
                                 step=i)
        for arch in probes:
            cost = static_cost(arch)
            probe_rows.append({"name": arch.name, "arch": arch.with_name("").encode(),
                               "macs": cost.macs, "params": cost.params,
                               "inherited_acc": subnet_accuracy(supernet, arch, calib, held_out, nb),
                               "scratch_acc": scratch.get(arch.with_name("").encode(), {})
                               .get("scratch_acc")})
        metrics = rank_metrics(rows)
        metrics["eval_split"], metrics["eval_images"] = split, len(held_out.data)
        metrics["scratch_seeds"] = pe.get("scratch_seeds", 1)
        if probe_rows:
            accs = [r["inherited_acc"] for r in probe_rows]
            metrics.update(probes_min_inherited_acc=min(accs),
                           probes_mean_inherited_acc=round(float(np.mean(accs)), 2),
                           **{f"probe_{r['name']}_inherited_acc": r["inherited_acc"]
                              for r in probe_rows})
        metrics["seconds"] = round(time.perf_counter() - t0, 1)
        tracking.log_metrics({k: v for k, v in metrics.items() if not isinstance(v, str)})
    table = [{k: r[k] for k in ("name", "arch", "macs", "params", "inherited_acc", "scratch_acc",
                                "scratch_accs", "scratch_seconds")} for r in rows]
    (OUT / "rows.json").write_text(json.dumps(table, indent=2) + "\n")
    (OUT / "probes.json").write_text(json.dumps(probe_rows, indent=2) + "\n")
    (OUT / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
