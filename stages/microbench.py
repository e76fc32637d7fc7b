"""DVC stage ``microbench`` (and ``microbench_host@onnxruntime``): measure sampled units on a
backend.

Writes ``data/microbench/<target>.parquet`` (every raw repeat): the spec name for the
``sim`` backend, ``onnxruntime`` for this CPU through ONNX Runtime (``hwnas.layout``).
"""
from __future__ import annotations

import json
import time

from hwnas import layout
from hwnas.params import load_params, run_stage


def main(argv: list[str] | None = None) -> None:
    from rich.progress import Progress

    from hwnas.files import atomic_path
    from hwnas.estimator.microbench import MicrobenchConfig, run_microbench, stage_target
    from hwnas.estimator.train import config_from

    backend, p, spec, target = stage_target(argv, __doc__, load_params(), "microbench")
    cfg = config_from(MicrobenchConfig, {**p, "backend": backend})
    out = layout.microbench_table(target)
    start = time.monotonic()
    with Progress(transient=True) as bar:
        task = bar.add_task(f"microbench {backend} on {target}", total=cfg.samples)
        table = run_microbench(cfg, spec, progress=lambda n: bar.advance(task, n),
                               log=bar.console.print)
    with atomic_path(out) as tmp:
        table.to_parquet(tmp, index=False)
    print(json.dumps({"backend": backend, "units": int(table["sample"].nunique()),
                      "rows": len(table), "seconds": round(time.monotonic() - start, 1),
                      "by_kind": table.groupby("kind")["sample"].nunique().to_dict()}))


if __name__ == "__main__":
    run_stage("microbench", main)
