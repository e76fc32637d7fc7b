"""DVC stage ``train_estimator`` (and ``train_estimator_cpu``): fit the LightGBM latency
models on the microbenchmark table, then score them on held-out networks.

Writes ``models/estimator/<hw>/`` (LightGBM text files + manifest.json),
``results/estimator/<hw>/metrics.json``, ``predictions.csv`` and ``pred_vs_true.png``,
and logs an MLflow run.
"""
from __future__ import annotations

import json
from pathlib import Path

from rich.progress import Progress

from hardware.spec import load_spec
from hwnas import tracking
from hwnas.estimator.microbench import read_table
from hwnas.estimator.model import Estimator, LightGBMConfig, file_hash
from hwnas.estimator.train import (EvalConfig, config_from, evaluate, flat_metrics, train,
                                   write_metrics)
from hwnas.params import load_params, section
from stages.microbench import params_for, parse_backend, table_path

MODELS = Path("models/estimator")
RESULTS = Path("results/estimator")


def parse_params(params: dict) -> None:
    from hwnas.params import check_numbers

    check_numbers("train_estimator", section(params, "train_estimator"),
                  positive_ints=("n_estimators", "num_leaves", "eval_networks"),
                  positive=("learning_rate",))


def run(backend: str, params: dict | None = None) -> dict:
    params = params or load_params()
    p = section(params, "train_estimator")
    overrides = p.pop("cpu", {}) or {}
    if backend == "cpu":
        p.update(overrides)
    spec = load_spec(p["hardware"])
    hw = spec.name if backend == "sim" else "cpu"
    data = table_path(backend, spec.name)
    table = read_table(data)
    out_dir, res_dir = MODELS / hw, RESULTS / hw
    tcfg = config_from(LightGBMConfig, {**p, "seed": p["seed"]})
    ecfg = config_from(EvalConfig, p)
    threads = params_for(backend, params).get("threads") if backend == "cpu" else None
    with tracking.run(f"train_estimator[{hw}]", params={**{k: v for k, v in p.items()
                                                           if k != "spaces"}, "backend": backend},
                      tags={"stage": "train_estimator", "hardware": hw,
                            "spec_hash": spec.spec_hash() if backend == "sim" else "cpu"}):
        manifest = train(table, spec, backend, tcfg, out_dir, file_hash(data), threads)
        est = Estimator.load(out_dir, spec)  # score what was saved, from disk
        with Progress(transient=True) as bar:
            task = bar.add_task(f"timing {ecfg.eval_networks} networks", total=None)
            metrics = evaluate(est, spec, backend, ecfg, res_dir / "pred_vs_true.png",
                               progress=lambda n: bar.advance(task, n))
        metrics["training_rows"] = {k: v["rows"] for k, v in manifest["kinds"].items()}
        metrics["microbench_units"] = int(table["sample"].nunique())
        tracking.log_metrics(flat_metrics(metrics))
        import mlflow

        mlflow.log_artifact(str(res_dir / "pred_vs_true.png"))
    write_metrics(metrics, res_dir / "metrics.json")
    metrics["_predictions"].to_csv(res_dir / "predictions.csv", index=False)
    print(json.dumps({"hardware": hw, **metrics["network"], "memory": metrics["memory"]}))
    return metrics


def main(argv: list[str] | None = None) -> None:
    run(parse_backend(argv, __doc__))


if __name__ == "__main__":
    main()
