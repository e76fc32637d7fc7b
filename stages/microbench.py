"""DVC stage ``microbench`` (and ``microbench_cpu``): measure sampled units on a backend.

Writes ``data/microbench/<hw>.parquet`` (every raw repeat), where ``<hw>`` is the spec
name for the ``sim`` backend and ``cpu`` for the host CPU.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.progress import Progress

from hardware.spec import load_spec
from hwnas.estimator.microbench import MicrobenchConfig, run_microbench
from hwnas.estimator.train import config_from
from hwnas.params import load_params, section

DATA = Path("data/microbench")


def params_for(backend: str, params: dict | None = None) -> dict:
    """The ``microbench`` section, with its ``cpu:`` overrides for the cpu backend."""
    p = section(params or load_params(), "microbench")
    overrides = p.pop("cpu", {}) or {}
    if backend == "cpu":
        p.update(overrides)
    p["backend"] = backend
    return p


def parse_params(params: dict) -> None:
    from hwnas.params import check_numbers

    for backend in ("sim", "cpu"):
        p = params_for(backend, params)
        name = "microbench" + (".cpu" if backend == "cpu" else "")
        check_numbers(name, p, positive_ints=("samples", "repeats"), positive=("time_budget_s",),
                      non_negative=("noise",))


def table_path(backend: str, spec_name: str) -> Path:
    return DATA / f"{spec_name if backend == 'sim' else 'cpu'}.parquet"


def run(backend: str, params: dict | None = None) -> Path:
    p = params_for(backend, params)
    spec = load_spec(p["hardware"])
    cfg = config_from(MicrobenchConfig, p)
    out = table_path(backend, spec.name)
    start = time.monotonic()
    with Progress(transient=True) as bar:
        task = bar.add_task(f"microbench {backend} on {spec.name if backend == 'sim' else 'cpu'}",
                            total=cfg.samples)
        table = run_microbench(cfg, spec, progress=lambda n: bar.advance(task, n),
                               log=bar.console.print)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out, index=False)
    summary = {"backend": backend, "units": int(table["sample"].nunique()), "rows": len(table),
               "seconds": round(time.monotonic() - start, 1),
               "by_kind": table.groupby("kind")["sample"].nunique().to_dict()}
    print(json.dumps(summary))
    return out


def parse_backend(argv: list[str] | None, description: str | None) -> str:
    """``--backend sim|cpu`` from the command line (both estimator stages take it)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--backend", choices=("sim", "cpu"), default="sim")
    return ap.parse_args(argv).backend


def main(argv: list[str] | None = None) -> None:
    run(parse_backend(argv, __doc__))


if __name__ == "__main__":
    main()
