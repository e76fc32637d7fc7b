"""DVC stage ``codesign@<task>-<point>`` (a ``matrix`` over ``codesign.tasks`` and the axes of
``codesign.grid``): one accelerator of a task's co-design study (``hwnas.codesign.point``).
Writes ``results/codesign/<task>/points/<point>/``: the microbenchmark table and estimator
(reused while the spec, their settings and their code are unchanged), the search journal (a
killed point resumes), ``candidates.parquet`` and ``metrics.json``.
"""
from __future__ import annotations

import argparse
import sys

from hwnas import layout
from hwnas.params import PARAMS_FILE, load_params, run_stage


def main() -> None:
    from hwnas import tracking
    from hwnas.checkpoint import claim_run
    from hwnas.codesign.grid import (check_as_dvc_reads, describe, point_key, points, specs,
                                     stage_name)
    from hwnas.codesign.point import PointFiles, run_point
    from hwnas.errors import UserError
    from hwnas.files import staged

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--task", default=layout.DEFAULT_TASK)
    ap.add_argument("--point", required=True, help="the point's key (its folder's name)")
    key = ap.parse_args(sys.argv[1:]).point
    params = load_params()  # the task's, named by --task (run_stage)
    cfg = params["codesign"]
    check_as_dvc_reads(PARAMS_FILE, cfg["grid"])
    grid = {point_key(p): p for p in points(cfg["grid"])}
    if key not in grid:
        raise UserError(f"--point {key}: not a point of params.yaml codesign.grid "
                        f"({', '.join(grid)})")
    spec = specs(cfg["base"], cfg["grid"])[key]
    task = layout.current_task()
    files = PointFiles(layout.codesign_dir(task) / "points" / key)
    print(f"codesign {task} {key}: {describe(grid[key])}")
    with tracking.run(f"codesign[{task}/{key}]", params={**grid[key], "base": cfg["base"]},
                      tags=tracking.stage_tags(stage_name(task, grid[key]),  # its lineage
                                               spec.spec_hash())) as active:
        claim_run(files.mlflow_run, active.info.run_id)  # a killed earlier try is closed
        metrics, candidates = run_point(params, key, spec, files)
        tracking.log_metrics({k: v for k, v in (metrics["best"] or {}).items()
                              if k != "architecture"})
    with staged() as out:
        candidates.to_parquet(out.path(files.candidates), index=False)
        out.json(files.metrics, metrics)
    best, base = metrics["best"], metrics["baseline"]
    print(f"codesign {task} {key}: " + (
        "no network at the baseline's supernet score" if best is None
        else f"best network {best['latency_ms'] * 1e3:.1f} us simulated, "
             f"{100 * best['latency_reduction']:.1f}% below this chip's baseline "
             f"({base['latency_ms'] * 1e3:.1f} us) at supernet score {best['score']:.1f}% "
             f"(baseline {base['score']:.1f}%); {metrics['seconds']:.0f} s"))


if __name__ == "__main__":
    run_stage("codesign", main)
