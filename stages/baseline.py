"""DVC stage ``baseline``: the MobileNetV2-like baseline of the space, trained from scratch
with the chosen models' budget over ``baseline.seeds`` paired seeds (``hwnas.scratch``).

It does not read the supernet, so retraining the supernet does not rerun it. The baseline
extracted from the supernet and fine-tuned like the chosen models is the
``baseline-finetuned`` model of the ``extract`` stage. Writes
``models/baseline/baseline.pt`` (+ ``.onnx``) and ``results/baseline/metrics.json``.
"""
from __future__ import annotations

import time

from hwnas import layout
from hwnas.params import load_params, run_stage, section


def say(msg: str) -> None:
    print(f"baseline: {msg}", flush=True)


def main() -> None:
    from hardware.spec import load_spec
    from hwnas import tracking
    from hwnas.context import pipeline_baseline, train_context
    from hwnas.extract import export_onnx, save_subnet
    from hwnas.files import staged
    from hwnas.scratch import budget_epochs, scratch_runs

    params = load_params()
    p = section(params, "baseline")
    epochs, budget = budget_epochs(params)
    t_start = time.perf_counter()
    ctx = train_context(section(params, "train_supernet"))
    arch = pipeline_baseline(ctx.space, params).with_name("")
    n = p["seeds"]
    say(f"{arch.encode()} from scratch, {budget}, {n} seed(s)")
    with tracking.run("baseline", params={"arch": arch.encode(), "epochs": epochs,
                                          "seed": p["seed"], "seeds": n},
                      tags=tracking.stage_tags("baseline", load_spec(p["hardware"]).spec_hash())), \
            staged() as files:
        folder = files.dir(layout.BASELINE_MODEL.parent)
        net, rec = scratch_runs(params, ctx, arch, log=lambda m: say(f"  {m}"))
        model = folder / layout.BASELINE_MODEL.name
        diff = export_onnx(net, model.with_suffix(".onnx"), ctx.splits.test.x[:64])
        rec.update(budget=budget, test_images=len(ctx.splits.test), onnx_max_abs_diff=diff,
                   seconds=round(time.perf_counter() - t_start, 1))
        save_subnet(net, arch, model, rec)
        files.json(layout.BASELINE / "metrics.json", rec)
        tracking.log_metrics(rec)
    say(f"test {rec['score']:.2f}% (mean of {n} run(s): {rec['score_runs']}) after "
        f"{epochs} epochs, {rec['train_seconds']:.0f} s of training -> {layout.BASELINE_MODEL}")


if __name__ == "__main__":
    run_stage("baseline", main)
