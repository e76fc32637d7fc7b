"""The supernet's proof: does it rank subnets the way training them from scratch does?

For subnets at evenly spaced log-MACs (``spread_subnets``), the score inherited from
the supernet (extracted, BN-recalibrated) against the same architecture trained from
scratch with the supernet's budget, the mean of several seeded runs cached per
architecture (``scratch_results``); Kendall tau and the largest subnet's gap
(``rank_metrics``). "Probes" (``probe_subnets``) show a block type or kernel size the
supernet undertrains.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, spearmanr

from hwnas.arch import ArchSpec
from hwnas.checkpoint import fingerprint
from hwnas.context import TrainContext
from hwnas.extract import train_scratch
from hwnas.files import append_journal, read_journal
from hwnas.lowering import static_cost
from hwnas.space import SearchSpace


def spread_subnets(space: SearchSpace, n: int, candidates: int, seed: int) -> list[ArchSpec]:
    """The smallest, the largest and ``n - 2`` random subnets nearest to evenly spaced
    log-MACs between them, picked from ``candidates`` samples: a set that covers the
    space's size range (random samples bunch where from-scratch score saturates)."""
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
    inh = [r["inherited_score"] for r in rows]
    scr = [r["scratch_score"] for r in rows]
    largest = rows[-1]
    tau = kendalltau(inh, scr).statistic
    rho = spearmanr(inh, scr).statistic
    gap = largest["scratch_score"] - largest["inherited_score"]
    return {"subnets": len(rows), "kendall_tau": round(float(tau), 4),
            "spearman_rho": round(float(rho), 4),
            "largest_inherited_score": largest["inherited_score"],
            "largest_scratch_score": largest["scratch_score"],
            "largest_gap_points": round(gap, 2),
            "mean_abs_gap_points": round(float(np.mean(np.abs(np.subtract(scr, inh)))), 2),
            "pass_tau": bool(tau >= 0.5), "pass_largest_gap": bool(abs(gap) <= 2.0),
            "scratch_split_half_tau": split_half_tau(rows)}


def split_half_tau(rows: list[dict]) -> float | None:
    """How stable the from-scratch reference is: Kendall tau between the mean of the first
    half of each subnet's runs and the mean of the second half (None below 2 runs). A
    reference that does not agree with itself cannot score the supernet."""
    runs = [r.get("scratch_scores") or [] for r in rows]
    k = min(map(len, runs)) // 2
    if k < 1:
        return None
    first, second = ([float(np.mean(a[i:i + k])) for a in runs] for i in (0, k))
    return round(float(kendalltau(first, second).statistic), 4)


def scratch_score(arch: ArchSpec, ctx: TrainContext, eval_split: str = "test",
                     seed: int | None = None) -> float:
    """``arch`` trained alone with the supernet's budget; ``seed`` (default: the params'
    seed) draws the initialization and batch order, the data splits stay fixed."""
    seed = ctx.params["seed"] if seed is None else seed
    data = replace(ctx.data(seed), test=ctx.loader(eval_split), val=None)
    return train_scratch(arch, data, ctx.train, seed)[1]["score"]


SANDWICH_ONLY = ("num_random", "distill", "extremes", "clip_per_subnet", "distill_stages",
                 "stage_regressor", "teacher_weight")


def scratch_fingerprint(params: dict, eval_split: str = "test", run: int = 0) -> str:
    """What a from-scratch result depends on: seed, data, the training budget (not the
    sandwich-only knobs, so changing the supernet's sampling keeps the cached runs) and
    the split it is evaluated on."""
    from hwnas.context import recipe

    train = {k: v for k, v in recipe(params).items() if k not in SANDWICH_ONLY}
    keep = {"seed": params["seed"], "data": params["data"], "train": train}
    if eval_split != "test":
        keep["eval_split"] = eval_split
    if run:
        keep["run"] = run
    return fingerprint(keep)


def probe_subnets(space: SearchSpace) -> list[ArchSpec]:
    """The largest subnet with every block one type and one kernel (each type x kernel),
    and the MobileNetV2-like baseline (ibn, 3x3, largest expansion, depth multiplier 1,
    middle widths): do all block types and kernel sizes inherit sensible score?"""
    probes = [space.largest(t, k) for t in space.common_types()
              for k in sorted(set.intersection(*(set(st.kernels) for st in space.stages)))]
    if "ibn" in space.common_types() and all(3 in st.kernels for st in space.stages):
        mid = (lambda xs: xs[(len(xs) - 1) // 2])  # noqa: E731
        base = space.baseline([mid(st.channels) for st in space.stages], mid(space.stem_channels))
        probes.append(base.with_name("baseline_ibn_k3"))
    return probes


def _scratch_job(ctx: TrainContext, arch: str, eval_split: str, seed: int
                 ) -> tuple[float, float]:
    """One from-scratch run in a worker: (score, seconds)."""
    from hwnas.arch import parse_arch

    t = time.perf_counter()
    return scratch_score(parse_arch(arch), ctx, eval_split, seed), time.perf_counter() - t


def scratch_results(archs: list[ArchSpec], ctx: TrainContext, cache_path: Path,
                    on_done=None, eval_split: str = "test", seeds: int = 1,
                    workers: int = 2) -> dict[str, dict]:
    """From-scratch score per architecture string: the mean over ``seeds`` runs
    (run ``i`` uses seed ``params.seed + i`` for initialization and batch order), each
    trained now or read from the cache (one JSON line appended per run). On the CPU the
    runs go to ``workers`` workers of one thread each (``hwnas.workers.Fanout``); on a
    GPU in turn."""
    from hwnas.context import context_fanout

    fps = [scratch_fingerprint(ctx.params, eval_split, i) for i in range(seeds)]
    cached: dict[tuple[str, str], dict] = {}
    for r in read_journal(cache_path):
        if r.get("fingerprint") in fps:
            cached[r["arch"], r["fingerprint"]] = r
    todo = [(arch, i) for arch in archs for i in range(seeds) if (arch.key, fps[i]) not in cached]
    missing = {arch.key: sum(1 for a, _ in todo if a.key == arch.key) for arch in archs}
    out = {}

    def finish(arch: ArchSpec) -> None:
        runs = [cached[arch.key, fp] for fp in fps]
        scores = [r["scratch_score"] for r in runs]
        out[arch.key] = {**runs[0], "run": None, "scratch_score": round(float(np.mean(scores)), 3),
                         "scratch_scores": scores,
                         "scratch_seconds": round(sum(r["scratch_seconds"] for r in runs), 1)}
        if on_done:
            on_done(out[arch.key])

    def record(arch: ArchSpec, i: int, score: float, seconds: float) -> None:
        cost = static_cost(arch)
        cached[arch.key, fps[i]] = {"arch": arch.key, "fingerprint": fps[i], "run": i,
                                    "scratch_score": score, "scratch_seconds": round(seconds, 1),
                                    "macs": cost.macs, "params": cost.params}
        append_journal(cache_path, [cached[arch.key, fps[i]]])
        missing[arch.key] -= 1
        if not missing[arch.key]:
            finish(arch)

    for arch in archs:
        if not missing[arch.key]:
            finish(arch)
    seed = ctx.params["seed"]
    if workers > 1 and ctx.device.type == "cpu" and len(todo) > 1:
        with context_fanout(ctx, workers) as fanout:
            jobs = [(arch.encode(), eval_split, seed + i) for arch, i in todo]
            for k, (score, seconds) in fanout.each(_scratch_job, jobs):
                record(*todo[k], score, seconds)
    else:
        for arch, i in todo:
            t = time.perf_counter()
            record(arch, i, scratch_score(arch, ctx, eval_split, seed + i), time.perf_counter() - t)
    return {arch.key: out[arch.key] for arch in archs}


def confirm_trainer(params: dict, log=print, before=None, journal: Path | None = None):
    """The search's ``train_on_val`` (``hwnas.search.choice.summarize``): architectures
    trained from scratch with the supernet's budget (``scratch_results``), scored on the val
    split, mean of ``search.confirm_seeds`` runs, kept in ``journal`` (by default
    ``layout.CONFIRMATIONS``; a killed search resumes them). ``before()`` runs first (the
    search frees its scoring workers)."""
    from hwnas import layout
    from hwnas.arch import parse_arch
    from hwnas.context import train_context
    from hwnas.params import section

    seeds = section(params, "search")["confirm_seeds"]

    def train_on_val(archs: list[str]) -> dict[str, dict]:
        if before is not None:
            before()
        log(f"search: confirming {len(archs)} tied candidates from scratch on the val split "
            f"({seeds} seed(s) each)")
        nets = [parse_arch(a) for a in archs]
        runs = scratch_results(nets, train_context(section(params, "train_supernet")),
                               journal or layout.CONFIRMATIONS, eval_split="val", seeds=seeds,
                               on_done=lambda r: log(f"search: confirmed {r['arch']}: val "
                                                     f"{r['scratch_score']:.2f}"))
        return {a: runs[n.key] for a, n in zip(archs, nets)}

    return train_on_val


def score_subnets(supernet, archs: list[ArchSpec], probes: list[ArchSpec],
                  scratch: dict[str, dict], calib, held_out, calib_batches: int,
                  on_row=None) -> tuple[list[dict], list[dict]]:
    """Inherited score of each subnet beside its from-scratch row, and of each probe
    (with its from-scratch score where one was trained)."""
    from hwnas.supernet import subnet_score

    rows, probe_rows = [], []
    for i, arch in enumerate(archs):
        row = scratch[arch.key]
        inherited = subnet_score(supernet, arch, calib, held_out, calib_batches)
        rows.append({**row, "inherited_score": inherited, "name": arch.name or f"subnet{i}"})
        if on_row:
            on_row(i, rows[-1])
    for arch in probes:
        cost = static_cost(arch)
        key = arch.key
        probe_rows.append({"name": arch.name, "arch": key, "macs": cost.macs,
                           "params": cost.params,
                           "inherited_score": subnet_score(supernet, arch, calib, held_out,
                                                            calib_batches),
                           "scratch_score": scratch.get(key, {}).get("scratch_score")})
    return rows, probe_rows


def probe_metrics(probe_rows: list[dict]) -> dict:
    """The probes' inherited scores: the lowest, the mean and each."""
    if not probe_rows:
        return {}
    accs = [r["inherited_score"] for r in probe_rows]
    return {"probes_min_inherited_score": min(accs),
            "probes_mean_inherited_score": round(float(np.mean(accs)), 2),
            **{f"probe_{r['name']}_inherited_score": r["inherited_score"] for r in probe_rows}}
