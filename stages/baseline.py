"""DVC stage ``baseline``: the MobileNetV2-like baseline trained from scratch.

The baseline is ``SearchSpace.baseline`` of the supernet's space
(all IBN, 3x3, the largest expansion, depth multiplier 1, the base widths of
``train_supernet.space.stages``). Budget: the chosen models' weights get
``train_supernet.train.epochs`` epochs of supernet training plus ``extract.epochs``
epochs of fine-tuning, so by default the baseline gets that many epochs from scratch
(``baseline.epochs`` overrides), with the same data, augmentation, optimizer and
schedule as the supernet (``hwnas.training.train_from_scratch``). The baseline
extracted from the supernet and fine-tuned like the chosen models is the
``baseline-finetuned`` model of the ``extract`` stage.

It trains ``baseline.seeds`` runs (``scratch_runs``); its ``accuracy`` is their mean test
accuracy, the saved model is the run with the best val accuracy (``model_accuracy``). It
does not read the supernet, so retraining the supernet does not rerun it.
Writes ``models/baseline/baseline.pt`` and ``results/baseline/metrics.json``.
"""
from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning (see stages/train_supernet.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json
import time
from dataclasses import replace
from pathlib import Path

from hwnas.params import ParamsError, load_params, run_stage, section

MODEL = Path("models/baseline/baseline.pt")
OUT = Path("results/baseline")


def parse_params(params: dict) -> dict:
    p = section(params, "baseline")
    v = p.get("epochs")
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
        raise ParamsError(f"params.yaml: baseline.epochs must be a positive integer or null, "
                          f"got {v!r}")
    v = p.get("seeds", 1)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ParamsError(f"params.yaml: baseline.seeds must be a positive integer, got {v!r}")
    return p


def budget_epochs(params: dict) -> tuple[int, str]:
    """Epochs from scratch and the sentence that states the budget."""
    p = parse_params(params)
    if p.get("epochs") is not None:
        return p["epochs"], f"baseline.epochs = {p['epochs']} epochs (set explicitly)"
    sup = int(params["train_supernet"]["train"]["epochs"])
    ft = int((params.get("extract") or {}).get("epochs", 0))
    return sup + ft, (f"{sup + ft} epochs: the chosen model's {sup} epochs of supernet training "
                      f"+ {ft} of fine-tuning")


def stage_data(s, seed: int):
    """What extraction and from-scratch runs read of the stage setup ``s``: training
    batches in the order ``seed`` draws, calibration, val and test splits, the device."""
    from hwnas.extract import Data

    return Data(train=lambda: s.loader("train", train=True, seed=seed), calib=s.calib_loader(),
                test=s.loader("test"), train_config=s.train, val=s.loader("val"),
                device=s.device)


def _scratch_run(stage_params: dict, arch: str, epochs: int, seed: int,
                 threads: int | None = None, log=None) -> tuple[dict, dict]:
    """One from-scratch run (in a worker process when ``threads`` is set): the trained
    weights (on the CPU) and the run's record."""
    from hwnas.arch import parse_arch
    from hwnas.extract import train_scratch
    from stages.train_supernet import setup

    s = setup({**stage_params, **({"threads": threads} if threads else {})})
    net, rec = train_scratch(parse_arch(arch), stage_data(s, seed),
                             replace(s.train, epochs=epochs), seed, log)
    return {k: v.cpu() for k, v in net.state_dict().items()}, rec


def scratch_runs(params: dict, arch, log=None):
    """``arch`` trained from scratch with the baseline's budget once per seed (``base.seed``
    + 0 .. ``baseline.seeds`` - 1). Returns the model of the run with the best val accuracy
    and a record whose ``accuracy`` is the mean test accuracy of the runs (``accuracy_runs``;
    the returned model's own is ``model_accuracy``): one run's noise, about 0.3 points on
    MNIST-5k, is the size of the 0.3-point equal-accuracy target. On the CPU several runs go two at a
    time to worker processes of one thread each (small networks gain little from a
    second thread); on a GPU they run in turn."""
    import multiprocessing
    import statistics
    from concurrent.futures import ProcessPoolExecutor

    from hwnas.model import fresh_model

    p = parse_params(params)
    epochs, _ = budget_epochs(params)
    stage = section(params, "train_supernet")
    seeds = [p["seed"] + i for i in range(p.get("seeds", 1))]
    job = (stage, arch.encode(), epochs)
    if len(seeds) == 1 or stage.get("device", "cpu") != "cpu":
        runs = [_scratch_run(*job, seed, log=log) for seed in seeds]
    else:
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_scratch_run, *job, seed, 1) for seed in seeds]
            runs = []
            for seed, f in zip(seeds, futures):
                runs.append(f.result())
                if log:
                    log(f"seed {seed}: test {runs[-1][1]['accuracy']:.1f}% "
                        f"({runs[-1][1]['train_seconds']:.0f} s)")
    vals = [r["val_accuracy"] for _, r in runs]
    best = vals.index(max(vals))  # the run to save: chosen on val, never on test
    state, kept = runs[best]
    net = fresh_model(arch, seeds[best], stage.get("device", "cpu"))
    net.load_state_dict(state)
    accs = [r["accuracy"] for _, r in runs]
    return net.eval(), {
        **kept, "accuracy": round(statistics.fmean(accs), 3), "accuracy_runs": accs,
        "val_accuracy_runs": vals, "model_accuracy": kept["accuracy"], "model_seed": seeds[best],
        "seeds": seeds, "train_seconds": round(sum(r["train_seconds"] for _, r in runs), 2)}


def say(msg: str) -> None:
    print(f"baseline: {msg}", flush=True)


def main() -> None:
    from hardware.spec import load_spec
    from hwnas import tracking
    from hwnas.extract import export_onnx, save_subnet
    from hwnas.lineage import lineage_tags
    from stages.train_supernet import setup

    params = load_params()
    p = parse_params(params)
    epochs, budget = budget_epochs(params)
    t_start = time.perf_counter()
    s = setup(section(params, "train_supernet"))
    widths = [c for c, _, _ in params["train_supernet"]["space"]["stages"]]
    arch = s.space.baseline(widths).with_name("")
    seed = p["seed"]
    spec = load_spec(p["hardware"])
    n = p.get("seeds", 1)
    say(f"{arch.encode()} from scratch, {budget}, {n} seed(s)")
    with tracking.run("baseline", params={"arch": arch.encode(), "epochs": epochs, "seed": seed,
                                          "seeds": n},
                      tags=lineage_tags("baseline", spec.spec_hash())):
        net, rec = scratch_runs(params, arch, log=lambda m: say(f"  {m}"))
        diff = export_onnx(net, MODEL.with_suffix(".onnx"), s.splits.test.x[:64])
        rec.update(budget=budget, test_images=len(s.splits.test), onnx_max_abs_diff=diff,
                   seconds=round(time.perf_counter() - t_start, 1))
        tracking.log_metrics(rec)
    save_subnet(net, arch, MODEL, rec)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "metrics.json").write_text(json.dumps(rec, indent=2) + "\n")
    say(f"test {rec['accuracy']:.2f}% (mean of {n} run(s): {rec['accuracy_runs']}) after "
        f"{epochs} epochs, {rec['train_seconds']:.0f} s of training -> {MODEL}")


if __name__ == "__main__":
    run_stage("baseline", main)
