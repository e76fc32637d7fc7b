"""DVC stage ``train_estimator`` (and ``train_estimator_host@onnxruntime``): fit the LightGBM latency
models on the microbenchmark table, then score them on held-out networks.

Writes ``models/estimator/<hw>/`` (LightGBM text files + manifest.json),
``results/estimator/<hw>/metrics.json``, ``predictions.csv`` and ``pred_vs_true.png``,
and logs an MLflow run.
"""
from __future__ import annotations

import json

from hwnas import layout
from hwnas.params import load_params, run_stage


def main(argv: list[str] | None = None) -> None:
    from rich.progress import Progress

    from hwnas import tracking
    from hwnas.estimator.microbench import read_table, stage_target
    from hwnas.estimator.scoring import table_networks
    from hwnas.files import staged
    from hwnas.estimator.model import Estimator, LightGBMConfig, file_hash
    from hwnas.estimator.train import (EvalConfig, config_from, flat_metrics, public_metrics,
                                       score_estimator, train)

    backend, p, spec, hw = stage_target(argv, __doc__, load_params(), "train_estimator")
    data = layout.microbench_table(hw)
    table = read_table(data)
    out_dir, res_dir = layout.estimator_dir(hw), layout.estimator_results(hw)
    tcfg = config_from(LightGBMConfig, {**p, "seed": p["seed"]})
    ecfg = config_from(EvalConfig, p)
    with tracking.run(f"train_estimator[{hw}]", params={**{k: v for k, v in p.items()
                                                           if k != "spaces"}, "backend": backend},
                      tags={"stage": "train_estimator", "hardware": hw,
                            "spec_hash": spec.spec_hash() if backend == "sim" else backend}):
        # the old model and results stay until the new ones are whole
        with staged() as files:
            folder, png = files.dir(out_dir), files.path(res_dir / "pred_vs_true.png")
            manifest = train(table, spec, backend, tcfg, folder, file_hash(data))
            est = Estimator.load(folder, spec)  # score what was saved, from disk
            with Progress(transient=True) as bar:
                task = bar.add_task(f"held-out networks ({hw})", total=None)
                metrics = score_estimator(est, spec, backend, ecfg, png,
                                          earlier=table_networks(table),
                                          earlier_time=data.stat().st_mtime,
                                          progress=lambda n: bar.advance(task, n))
            metrics["training_rows"] = {k: v["rows"] for k, v in manifest["kinds"].items()}
            metrics["microbench_units"] = int(table["sample"].nunique())
            files.json(res_dir / "metrics.json", public_metrics(metrics))
            metrics["_predictions"].to_csv(files.path(res_dir / "predictions.csv"), index=False)
            tracking.log_metrics(flat_metrics(metrics))
        tracking.log_artifacts(res_dir, ("pred_vs_true.png",))
    print(json.dumps({"hardware": hw, **metrics["network"], "memory": metrics["memory"]}))


if __name__ == "__main__":
    run_stage("train_estimator", main)
