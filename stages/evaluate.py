"""DVC stage ``evaluate``: the chosen models against the baseline, judged by the simulator,
or on a measured target (``onnxruntime``) timed for real (``hwnas.evaluation``). Reads the search's ``pareto.json`` and ``candidates.parquet``,
extract's ``subnets.json``, the baseline's ``metrics.json`` and the estimator; writes
``results/evaluate/metrics.json``, ``models.json``, ``table.json``, ``pareto.png`` and
``report.md``.
"""
from __future__ import annotations

import time

from hwnas import layout
from hwnas.params import load_params, run_stage, section


def say(msg: str) -> None:
    print(f"evaluate: {msg}", flush=True)


def main() -> None:
    from hardware.spec import load_spec
    from hwnas import tasks, tracking
    from hwnas.estimator import Estimator
    from hwnas.evaluation.metrics import equal_word, headline
    from hwnas.evaluation.plots import plot
    from hwnas.evaluation.report import report
    from hwnas.evaluation.run import BASELINES, evaluate, read_inputs
    from hwnas.extract import load_subnet
    from hwnas.files import staged

    params = load_params()
    p = section(params, "evaluate")
    t0 = time.perf_counter()
    inputs = read_inputs()
    spec = load_spec(p["hardware"])
    estimator = Estimator.load(layout.estimator_dir(spec.name), spec)
    ev = evaluate(inputs, spec, estimator, float(p["equal_score_tolerance"]), log=say,
                  targets=p["targets"], margin=float(p["non_inferiority_margin"]),
                  measure=p["measure"])
    task = tasks.get(layout.current_task())
    metrics = {"task": task.name, "metric": task.metric, **ev.metrics}
    shown = [("latency model", layout.SUBNETS / "latency.pt"), ("baseline", layout.BASELINE_MODEL),
             *((f["name"], layout.SUBNETS / f"{f['name']}.pt") for f in metrics.get("family", ()))]
    nets = {name: load_subnet(path)[0] for name, path in shown if path.is_file()}
    test = tasks.torch_task(task.name).load(params["train_supernet"]["data"], p["seed"]).test

    out = layout.EVALUATE
    with tracking.run("evaluate", params={**p, "score_mode": metrics["score_mode"]},
                      tags=tracking.stage_tags("evaluate", spec.spec_hash())):
        flat = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
        flat.update({f"memory_model.{k}": v for k, v in metrics.get("memory_model", {}).items()})
        flat.update({f"table.{k}": v for k, v in metrics["table"].items()})
        with staged() as files:  # every output, or none: the previous ones stay whole
            plot(ev.candidates, ev.base_search, ev.models, BASELINES,
                 files.path(out / "pareto.png"), latency_col=ev.latency_col, metrics=metrics)
            metrics.update(tasks.torch_task(task.name).examples(
                nets, test, files.path(out / "examples.png")))
            files.text(out / "report.md", report(metrics, ev.models, ev.table, ev.info))
            files.json(out / "models.json", ev.models)
            files.json(out / "table.json", ev.table)
            files.json(out / "metrics.json", metrics)
            files.json(layout.HEADLINE, headline(metrics))
            tracking.log_metrics(flat)
        tracking.log_artifacts(out, ("report.md", "pareto.png", "metrics.json"), log=say)
    t = metrics["targets"]
    say(f"latency -{100 * metrics['latency_reduction']:.1f}% at {metrics['score_delta']:+.2f} "
        f"points (target {'met' if t['latency_met'] else 'not met'}; "
        f"{equal_word(metrics['shown_equal'])})"
        + (f"; memory model -{100 * metrics['memory_model']['memory_reduction']:.1f}% memory at "
           f"{metrics['memory_model']['score_delta']:+.2f} points (target "
           f"{'met' if t['memory_met'] else 'not met'})" if "memory_model" in metrics else "")
        + f"; {time.perf_counter() - t0:.0f} s -> {out / 'report.md'}")


if __name__ == "__main__":
    run_stage("evaluate", main)
