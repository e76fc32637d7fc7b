"""One accelerator of the grid: its microbenchmarks and estimator (reused while the spec, their
settings and their code are unchanged), the search against the task's one supernet, and the
best network at the baseline's supernet score, judged by the simulator on this chip."""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from hardware.spec import HardwareSpec
from hwnas.arch import ArchSpec, decode

# what the point's search reads of the ``search`` section (no budgets: the whole front)
SEARCH_KEYS = ("seed", "candidates", "population", "calib_images", "val_images")


@dataclass(frozen=True)
class PointFiles:
    """What a point keeps in its folder (``results/codesign/<task>/points/<key>/``)."""

    folder: Path

    @property
    def estimator(self) -> Path:
        return self.folder / "estimator"

    @property
    def estimator_record(self) -> Path:  # what the estimator was built from, and how long
        return self.folder / "estimator.json"

    @property
    def microbench(self) -> Path:
        return self.folder / "microbench.parquet"

    @property
    def journal(self) -> Path:
        return self.folder / "journal"

    @property
    def mlflow_run(self) -> Path:  # the run doing this point now (a killed one is closed)
        return self.folder / "mlflow_run"

    @property
    def candidates(self) -> Path:
        return self.folder / "candidates.parquet"

    @property
    def metrics(self) -> Path:
        return self.folder / "metrics.json"


def space_entry(space, params: dict) -> dict:
    """The supernet's space as a microbenchmark space entry (``microbench.spaces``)."""
    return {"resolution": space.input.height, "in_channels": space.input.channels,
            "classes": space.head.classes, "task": space.head.task,
            **params["train_supernet"]["space"]}


def _estimator_configs(params: dict, entry: dict):
    from hwnas.estimator.microbench import MicrobenchConfig
    from hwnas.estimator.model import LightGBMConfig
    from hwnas.estimator.train import config_from
    from hwnas.params import backend_section, section

    mb = {**backend_section(params, "microbench", "sim"), **params["codesign"]["microbench"],
          "backend": "sim", "spaces": [entry]}
    return (config_from(MicrobenchConfig, mb),
            config_from(LightGBMConfig, section(params, "train_estimator")))


def estimator_key(spec: HardwareSpec, mcfg, tcfg) -> str:
    """The spec's hash, the settings and the code the estimator comes from."""
    import hardware.graph
    import hardware.simulator
    import hardware.spec
    import hwnas.arch
    import hwnas.estimator.decompose
    import hwnas.estimator.microbench
    import hwnas.estimator.model
    import hwnas.estimator.sampling
    import hwnas.estimator.train
    import hwnas.lowering
    import hwnas.space
    from hwnas.checkpoint import code_fingerprint

    return code_fingerprint({"spec": spec.spec_hash(), "microbench": asdict(mcfg),
                             "lightgbm": asdict(tcfg)},
                            hardware.graph, hardware.simulator, hardware.spec, hwnas.arch,
                            hwnas.estimator.decompose, hwnas.estimator.microbench,
                            hwnas.estimator.model, hwnas.estimator.sampling,
                            hwnas.estimator.train, hwnas.lowering, hwnas.space)


def point_estimator(params: dict, spec: HardwareSpec, entry: dict, files: PointFiles,
                    log: Callable[[str], None]) -> dict:
    """The point's estimator in ``files.estimator``: the one there when it was built from
    this spec, these settings and this code, else microbenchmarks and a new one. Returns
    what it was built from (``estimator.json``)."""
    from hwnas.estimator.microbench import run_microbench
    from hwnas.estimator.train import train
    from hwnas.files import staged

    from hwnas.estimator.model import file_hash

    mcfg, tcfg = _estimator_configs(params, entry)
    key = estimator_key(spec, mcfg, tcfg)
    if files.estimator_record.is_file() and (files.estimator / "manifest.json").is_file():
        built = json.loads(files.estimator_record.read_text())
        if built.get("key") == key:
            log(f"estimator: reused (spec hash {spec.spec_hash()}, built in "
                f"{built['seconds']:.0f} s)")
            return built
    start = time.monotonic()
    table = run_microbench(mcfg, spec)
    with staged() as out:  # kept whole before the search starts: a killed point reuses it
        table.to_parquet(data := out.path(files.microbench), index=False)
        train(table, spec, "sim", tcfg, out.dir(files.estimator), file_hash(data))
        built = {"key": key, "spec_hash": spec.spec_hash(),
                 "units": int(table["sample"].nunique()),
                 "seconds": round(time.monotonic() - start, 1)}
        out.json(files.estimator_record, built)
    log(f"estimator: {built['units']} microbenchmark units, trained in {built['seconds']:.0f} s")
    return built


def heldout_accuracy(estimator, space, spec: HardwareSpec, n: int, seed: int) -> dict:
    """The estimator against the simulator on ``n`` networks of the searched space that no
    microbenchmark saw (nn-Meter's metrics)."""
    from hwnas.estimator.scoring import error_metrics, truth_sim

    rng = np.random.default_rng(seed)
    archs = [space.sample(rng) for _ in range(n)]
    pred = np.array([np.nan if r["latency_ms"] is None else r["latency_ms"]
                     for r in estimator.estimate(archs)])
    return error_metrics(pred, truth_sim(archs, spec)[0])


# what ``architecture`` says of a network (the report's shape columns)
SHAPE = ("blocks", "fused_share", "fused_share_early", "fused_share_late", "mean_channels",
         "aligned_share", "mean_expand", "mean_kernel")


def architecture(arch: ArchSpec, parallelism: int) -> dict:
    """What a chip changes in the network it gets (``SHAPE``): block types in the first and
    the second half of the blocks, widths and how many are multiples of the array width,
    depth, expansion, kernels."""
    blocks = arch.blocks
    half = len(blocks) // 2
    fused = [b.type == "fused_ibn" for b in blocks]
    return {"blocks": len(blocks),
            "fused_share": float(np.mean(fused)),
            "fused_share_early": float(np.mean(fused[:half] or fused)),  # one block: both
            "fused_share_late": float(np.mean(fused[half:])),
            "mean_channels": float(np.mean([b.out for b in blocks])),
            "aligned_share": float(np.mean([b.out % parallelism == 0 for b in blocks])),
            "mean_expand": float(np.mean([b.expand for b in blocks if b.type != "conv"] or [1])),
            "mean_kernel": float(np.mean([b.kernel for b in blocks]))}


def scores_on_test(params: dict, ctx, archs: list[ArchSpec]) -> list[float]:
    """Inherited scores on the test split, which chose nothing: how much of a chosen
    network's val score was luck among many candidates."""
    from hwnas import layout, tasks
    from hwnas.search.objectives import supernet_score
    from hwnas.supernet import load_supernet

    splits = tasks.torch_task(ctx.space.head.task).load(params["train_supernet"]["data"],
                                                        ctx.params["seed"])
    score = supernet_score(load_supernet(layout.SUPERNET).eval(), ctx.calib,
                           (splits.test.x, splits.test.y))
    return [score(a) for a in archs]


def _finite(obj):
    """NaN and infinities as null (a Spearman of too few networks, a cost out of range)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def run_point(params: dict, key: str, spec: HardwareSpec, files: PointFiles,
              log: Callable[[str], None] = print) -> tuple[dict, pd.DataFrame]:
    """Estimator, search and the best network of one grid point: its ``metrics.json`` and
    its candidates."""
    from rich.progress import Progress

    from hwnas import layout
    from hwnas.evaluation.metrics import judge_models
    from hwnas.search.choice import summarize
    from hwnas.search.evolution import Constraints, search
    from hwnas.search.objectives import check_feasible, make_objective_fn
    from hwnas.search.run import fingerprint, load_search_context
    from hwnas.supernet import load_supernet

    start = time.monotonic()
    space = load_supernet(layout.SUPERNET).space
    built = point_estimator(params, spec, space_entry(space, params), files, log)
    ctx = load_search_context(params, spec, files.estimator)
    # the estimator has a model for every kernel of the space's cheapest networks
    check_feasible(ctx.space, ctx.estimator.estimate, Constraints())
    accuracy = heldout_accuracy(ctx.estimator, ctx.space, spec, params["codesign"]["eval_networks"],
                                params["train_estimator"]["eval_seed"])
    log(f"estimator: {100 * accuracy['within_10pct']:.0f}% of {accuracy['n']} held-out "
        f"networks of the space within 10% of the simulator (Spearman {accuracy['spearman']:.3f})")

    p = ctx.params
    scorer = ctx.scorer("supernet")
    searched = time.monotonic()
    try:
        objective = make_objective_fn(scorer, ctx.estimator.estimate)
        base = objective([ctx.baseline])[0]
        # a journal resumes only the same search: its settings, supernet, estimator, code
        fp = fingerprint({k: p[k] for k in SEARCH_KEYS}, layout.SUPERNET,
                         files.estimator / "manifest.json")
        with Progress(transient=True) as bar:
            task = bar.add_task(f"search on {key}", total=p["candidates"])
            df = search(ctx.space, objective, candidates=p["candidates"],
                        population=p["population"], seed=p["seed"],
                        journal=files.journal / f"{fp}.jsonl", seeds=[ctx.baseline],
                        on_batch=lambda n, _: bar.update(task, completed=n))
    finally:
        scorer.close()
    search_seconds = time.monotonic() - searched
    # the front's fastest at the baseline's supernet score, by the estimator (no budgets)
    summary = summarize(df, base, None)
    archs = {"baseline": ctx.baseline}
    if summary["_fastest"]:
        archs["best"] = decode(summary["_fastest"])
    sim = judge_models(archs, spec, ctx.estimator.estimate)
    tests = dict(zip(archs, scores_on_test(params, ctx, list(archs.values()))))
    metrics = {"key": key, "hardware": spec.name, "spec_hash": spec.spec_hash(),
               "estimator": {**accuracy, "units": built["units"],
                             "seconds": built["seconds"]},
               "search": {"candidates": int(len(df)), "seconds": round(search_seconds, 1),
                          "pareto_size": summary["pareto_size"]},
               "best": None}
    scores = {"baseline": base["score"], "best": summary["score_of_fastest"]}
    for name in archs:
        metrics[name] = {**sim[name], "score": scores[name], "test_score": tests[name]}
    if "best" in archs:
        best, b = metrics["best"], metrics["baseline"]
        best.update(latency_reduction=1 - best["latency_ms"] / b["latency_ms"],
                    energy_reduction=1 - best["energy_mj"] / b["energy_mj"],
                    architecture=architecture(archs["best"], spec.parallelism))
    metrics["seconds"] = round(time.monotonic() - start, 1)
    return _finite(metrics), df
