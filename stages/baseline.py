"""DVC stage ``baseline``: the MobileNetV2-like baseline trained from scratch.

The baseline is ``hwnas.search.objectives.baseline_arch`` of the supernet's space
(all IBN, 3x3, the largest expansion, depth multiplier 1, the base widths of
``train_supernet.space.stages``). Budget: the chosen models' weights get
``train_supernet.train.epochs`` epochs of supernet training plus ``extract.epochs``
epochs of fine-tuning, so by default the baseline gets that many epochs from scratch
(``baseline.epochs`` overrides), with the same data, augmentation, optimizer and
schedule as the supernet (``hwnas.training.train_from_scratch``). The baseline
extracted from the supernet and fine-tuned like the chosen models is the
``baseline-finetuned`` model of the ``extract`` stage.

It does not read the supernet, so retraining the supernet does not rerun it.
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


def say(msg: str) -> None:
    print(f"baseline: {msg}", flush=True)


def main() -> None:
    from hardware.spec import load_spec
    from hwnas import tracking
    from hwnas.extract import Data, export_onnx, save_subnet, train_scratch
    from hwnas.lineage import lineage_tags
    from hwnas.search.objectives import baseline_arch
    from stages.train_supernet import setup

    params = load_params()
    p = parse_params(params)
    epochs, budget = budget_epochs(params)
    t_start = time.perf_counter()
    s = setup(section(params, "train_supernet"))
    widths = [c for c, _, _ in params["train_supernet"]["space"]["stages"]]
    arch = baseline_arch(s.space, widths).with_name("")
    seed = p["seed"]
    data = Data(train=lambda: s.loader("train", train=True, seed=seed), calib=s.calib_loader(),
                test=s.loader("test"), train_config=s.train, device=s.device)
    cfg = replace(s.train, epochs=epochs)
    spec = load_spec(p["hardware"])
    say(f"{arch.encode()} from scratch, {budget}")
    with tracking.run("baseline", params={"arch": arch.encode(), "epochs": epochs, "seed": seed},
                      tags=lineage_tags("baseline", spec.spec_hash())):
        net, rec = train_scratch(arch, data, cfg, seed, log=lambda m: say(f"  {m}"))
        diff = export_onnx(net, MODEL.with_suffix(".onnx"), s.splits.test.x[:64])
        rec.update(budget=budget, test_images=len(s.splits.test), onnx_max_abs_diff=diff,
                   seconds=round(time.perf_counter() - t_start, 1))
        tracking.log_metrics(rec)
    save_subnet(net, arch, MODEL, rec)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "metrics.json").write_text(json.dumps(rec, indent=2) + "\n")
    say(f"test {rec['accuracy']:.1f}% after {epochs} epochs in {rec['train_seconds']:.0f} s "
        f"-> {MODEL}")


if __name__ == "__main__":
    run_stage("baseline", main)
