"""DVC stage ``extract``: the search's chosen networks as standalone, fine-tuned models.

Reads ``results/search/pareto.json`` (the ``chosen`` entries named by
``extract.chosen``, plus ``extract.pareto_extra`` further Pareto networks) and
``models/supernet.pt``. Each network is extracted from the supernet, BN-recalibrated
(its inherited test score is recorded), fine-tuned ``extract.epochs`` epochs with
the supernet's optimizer and schedule at ``extract.lr``, recalibrated again and
tested. With ``extract.baseline`` the baseline architecture goes through the same
recipe (``baseline-finetuned``): the like-for-like comparison. A family member whose input
resolution or output stride differs from the baseline's has a twin at the baseline's
(``A-baseline-resolution``, ``hwnas.extract.resolution_twins``), trained alike: what the
searched resolution bought. With ``extract.scratch``
the chosen networks are also trained from scratch with the baseline's budget
(``scratch_score``: the mean over ``baseline.seeds`` runs, ``hwnas.scratch.scratch_runs``):
architecture against architecture at equal training; each
chosen network then keeps the weights of the recipe that scores higher on the val
split (``weights``: ``finetuned`` or ``scratch``; ``hwnas.extract.keep_better``).

Writes ``models/subnets/<name>.pt`` (state dict + architecture string),
``models/subnets/<name>.onnx`` (onnxruntime checked against PyTorch on test images;
a difference above ``extract.onnx_tolerance`` is an error), and
``results/extract/subnets.json`` (every record, the space, the data) + ``metrics.json``.
"""
from __future__ import annotations

import time

from hwnas import layout
from hwnas.params import load_params, run_stage, section


def say(msg: str) -> None:
    print(f"extract: {msg}", flush=True)


def main() -> None:
    from hardware.spec import load_spec
    from hwnas import tracking
    from hwnas.extract import (ExtractError, FineTune, export_onnx, keep_better,
                               materialize, pick_subnets, read_pareto, resolution_twins,
                               save_subnet, search_record)
    from hwnas.files import staged
    from hwnas.context import pipeline_baseline, train_context
    from hwnas.scratch import scratch_runs
    from hwnas.supernet import load_supernet

    params = load_params()
    p = section(params, "extract")
    t_start = time.perf_counter()
    pareto = read_pareto(layout.PARETO)
    archs = pick_subnets(pareto, p["chosen"], p["pareto_extra"], source=str(layout.PARETO))
    ctx = train_context(section(params, "train_supernet"))
    supernet = load_supernet(layout.SUPERNET, ctx.device).eval()
    for name, arch in archs.items():  # before any training: a network of another task or data
        if not supernet.space.holds_head(arch.head):
            raise ExtractError(f"{layout.PARETO}: chosen network {name!r}: head "
                               f"{arch.head.encode()} does not match this task's data and "
                               f"supernet ({supernet.space.head.encode()})")
    baseline = pipeline_baseline(supernet.space, params).with_name("")
    archs.update(twins := resolution_twins(archs, baseline))
    if p["baseline"]:
        archs["baseline-finetuned"] = baseline
    seed = p["seed"]
    data = ctx.data(seed)
    ft = FineTune(epochs=p["epochs"], lr=float(p["lr"]),
                  calib_batches=params["train_supernet"]["calib_batches"])
    check_x = ctx.splits.test.x[:max(1, p["onnx_check_images"])]
    spec = load_spec(p["hardware"])
    say(f"{len(archs)} networks ({', '.join(archs)}), {ft.epochs} fine-tuning epoch(s) each")
    if missing := [n for n in p["chosen"] if n not in archs]:
        say(f"no candidate in the latency band of family member(s) {', '.join(missing)} "
            f"(search.family): left out")

    records, done, scratch = {}, {}, {}
    with tracking.run("extract", params={k: v for k, v in p.items()},
                      tags=tracking.stage_tags("extract", spec.spec_hash())), \
            staged() as files:
        folder = files.dir(layout.SUBNETS)
        for i, (name, arch) in enumerate(archs.items(), 1):
            t0 = time.perf_counter()
            key = arch.encode()
            if key in done:  # the same network chosen twice: reuse, don't train again
                net, rec = done[key]
                rec = dict(rec)
            else:
                net, rec = materialize(supernet, arch, data, ft, seed,
                                       log=lambda m, n=name: say(f"  {n}: {m}"))
                done[key] = (net, dict(rec))  # a pristine copy: rec gains per-name fields
            rec.update({f"search_{k}": v for k, v in search_record(pareto, arch).items()})
            if p["scratch"] and (name in p["chosen"] or name in twins):
                if key not in scratch:
                    scratch[key] = scratch_runs(
                        params, ctx, arch, log=lambda m, n=name: say(f"  {n} from scratch: {m}"))
                net, rec = keep_better((net, rec), scratch[key])
            else:
                rec.update(weights="finetuned", finetuned_score=rec["score"])
            save_subnet(net, arch, folder / f"{name}.pt", rec)
            diff = export_onnx(net, folder / f"{name}.onnx", check_x)
            rec.update(onnx_max_abs_diff=diff, test_images=len(ctx.splits.test))
            if diff > p["onnx_tolerance"]:
                raise ExtractError(f"{layout.SUBNETS / (name + '.onnx')}: onnxruntime differs "
                                   f"from PyTorch by {diff:.2e} > extract.onnx_tolerance "
                                   f"{p['onnx_tolerance']:g}")
            records[name] = rec
            say(f"[{i}/{len(archs)}] {name}: test {rec['score']:.1f}% ({rec['weights']} weights; "
                f"inherited {rec['inherited_score']:.1f}%), ONNX diff {diff:.1e}, "
                f"{time.perf_counter() - t0:.0f} s")
            tracking.log_metrics({f"{name}.score": rec["score"],
                                  f"{name}.inherited_score": rec["inherited_score"],
                                  f"{name}.onnx_max_abs_diff": diff})
        seconds = time.perf_counter() - t_start
        metrics = {"models": len(records), "seconds": round(seconds, 1),
                   "onnx_max_abs_diff": max(r["onnx_max_abs_diff"] for r in records.values()),
                   **{f"{n}_score": r["score"] for n, r in records.items()},
                   **{f"{n}_inherited_score": r["inherited_score"]
                      for n, r in records.items()}}
        files.json(layout.EXTRACTED, {
            "hardware": spec.name, "finetune": {"epochs": ft.epochs, "lr": ft.lr},
            "data": ctx.splits.summary(), "space": supernet.space.to_json(), "models": records})
        files.json(layout.EXTRACT / "metrics.json", metrics)
        tracking.log_metrics(metrics)
    say(f"done in {seconds:.0f} s -> {layout.SUBNETS}/, {layout.EXTRACTED}")


if __name__ == "__main__":
    run_stage("extract", main)
