"""Which supernet training variant ranks subnets best? Kendall tau against the proof's reference.

Run (repo root, after ``dvc repro eval_supernet`` has the 4-run from-scratch reference):

    .venv/bin/python bench/bench_tau.py TAG '{"seed": 1, "ema": [0.99], "lr": 0.1}'

Trains the default ``train_supernet`` config with the variant's changes (checkpoints in
``/tmp/bench_tau/``; a killed run resumes), then scores the inherited score of
``eval_supernet``'s 10 log-spread subnets and probes against the cached from-scratch means
in ``results/eval_supernet/rows.json``, for the last weights and each weight average.
Appends one JSON line per weight set to ``/tmp/bench_tau/results.jsonl``. The variants
other than ``epochs``, ``lr``, ``distill_stages``, ``adaptor``, ``teacher_weight`` and
``extremes`` are patches of this script, not options of the stage (bench/RESULTS.md has
what each gave).

Variant keys (all optional):
  seed       training seed (init, batch order, sampled subnets; same splits)
  epochs, lr the supernet's epochs / learning rate (the reference keeps 6 epochs, lr 0.05)
  ema        decays of exponential moving averages of the weights to score as well
  gamma      initial last-BN scale of residual blocks (default 0: they start as identity)
  separate_e1  ibn blocks with expand 1 get their own depthwise and project weights
  boost      scale each tensor's gradient by (most uses / its uses) in the step
  distill_stages  weight of stage-output distillation (train.distill_stages)
  stages_ramp     the same weight, decaying linearly from this value to 0 over training
  adaptor    stage distillation through the supernet's learned per-stage maps
             (train.stage_regressor: FitNets' hint regressor, identity at init)
  teacher_weight  weight of the largest subnet's loss in the sandwich (train.teacher_weight)
  extremes   train.extremes (block types of the largest and smallest: fixed | cycle | ...)
  last_stage stage distillation on the last stage's output only
  smallest_only  stage distillation for the smallest subnet only (the step's first student)
  warm_epochs     train only the largest subnet (types in turn) for this many of the epochs
                  first, then the sandwich (Once-for-All's progressive shrinking, one phase)
"""
from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import hwnas  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root
import hwnas.supernet as hs  # noqa: E402
import hwnas.training as ht  # noqa: E402
import hwnas.proof as es  # noqa: E402
from hwnas import layout  # noqa: E402
from hwnas.context import train_context  # noqa: E402
from hwnas.lowering import static_cost  # noqa: E402
from hwnas.params import load_params, section  # noqa: E402

OUT = Path("/tmp/bench_tau")


class SeparateE1IBN(hs.DynamicIBN):
    """ibn whose expand-1 path (no expansion conv) has its own depthwise and project."""

    def __init__(self, cin, out, mid, kernel, small_kernels=()):
        super().__init__(cin, out, mid, kernel, small_kernels)
        self.dw_e1 = hs.DynamicConvBN(cin, cin, kernel, depthwise=True, small_kernels=small_kernels)
        self.project_e1 = hs.DynamicConvBN(cin, out, act=False)

    def _swap(self, b):
        return (self.dw_e1, self.project_e1) if b.expand == 1 else (self.dw, self.project)

    def forward(self, x, b):
        dw, project = self._swap(b)
        h = x if b.expand == 1 else self.expand(x, b.mid(x.shape[1]))
        y = project(dw(h, b.mid(x.shape[1]), b.kernel, b.stride), b.out)
        return x + y if b.residual(x.shape[1]) else y

    def export_to(self, target, cin, b):
        dw, project = self._swap(b)
        if b.expand != 1:
            self.expand.export_to(target.expand, cin, b.mid(cin), 1)
        dw.export_to(target.dw, b.mid(cin), b.mid(cin), b.kernel)
        project.export_to(target.project, b.mid(cin), b.out, 1)


def main() -> None:
    tag, variant = sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    params = load_params()
    pt, pe = section(params, "train_supernet"), section(params, "eval_supernet")
    pt["train"].update({k: variant[k] for k in ("epochs", "lr", "distill_stages", "teacher_weight",
                                                 "extremes") if k in variant})
    if "adaptor" in variant:
        pt["train"]["stage_regressor"] = variant["adaptor"]
    s = train_context(pt)
    if "seed" in variant:
        s.params = {**s.params, "seed": variant["seed"]}
    if variant.get("separate_e1"):
        hs.DYNAMIC_BLOCKS["ibn"] = SeparateE1IBN
    gamma = variant.get("gamma", 0.0)

    class Variant(hs.SuperNet):  # residual blocks' last BN scale: 0 (the default) or gamma
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            for stage in self.stages:
                for blocks in list(stage)[1:]:
                    for block in blocks.values():
                        for last in ("project", "project_e1"):
                            if hasattr(block, last):
                                torch.nn.init.constant_(getattr(block, last).bn.weight, gamma)
    hs.SuperNet = Variant  # train_supernet builds hwnas.supernet.SuperNet
    stage_loss = ht.stage_distill_loss
    students_in_step = 0  # reset by each step: its first student is the smallest
    if variant.get("last_stage") or variant.get("smallest_only"):
        def picked_loss(student, teacher, maps=None):
            nonlocal students_in_step
            students_in_step += 1
            if variant.get("smallest_only") and students_in_step > 1:
                return student[0].new_zeros(())
            if variant.get("last_stage"):
                student, teacher = student[-1:], teacher[-1:]
                maps = None if maps is None else list(maps)[-1:]
            return stage_loss(student, teacher, maps)
        ht.stage_distill_loss = picked_loss
    step = ht.sandwich_step
    uses: dict[int, int] = {}
    if variant.get("boost"):
        clip = ht._clip_and_step

        def boosted_clip(model, opt, cfg, scale=1.0):
            top = max(uses.values())
            with torch.no_grad():
                for p in model.parameters():
                    if p.grad is not None and 0 < uses.get(id(p), 0) < top:
                        p.grad.mul_(top / uses[id(p)])
            uses.clear()
            return clip(model, opt, cfg, scale)
        ht._clip_and_step = boosted_clip
    averages: dict[float, torch.nn.Module] = {}
    steps_per_epoch = len(s.loader("train", train=True))
    total, done = s.train.epochs * steps_per_epoch, 0

    def tracked_step(supernet, *a, **k):
        nonlocal done, students_in_step
        students_in_step = 0
        if variant.get("boost") and not getattr(supernet, "_hooked", False):
            for p in supernet.parameters():  # count the subnets that use each tensor
                p.register_hook(lambda g, key=id(p): uses.__setitem__(key, uses.get(key, 0) + 1))
            supernet._hooked = True
        if "stages_ramp" in variant:  # distill_stages decays linearly to 0 over training
            x, y, archs, opt, cfg = a
            done += 1
            cfg = replace(cfg, distill_stages=variant["stages_ramp"] * max(0.0, 1 - done / total))
            a = (x, y, archs, opt, cfg)
        out = step(supernet, *a, **k)
        with torch.no_grad():
            for d in variant.get("ema", []):
                avg = averages.setdefault(d, copy.deepcopy(supernet))
                for pa, p in zip(avg.parameters(), supernet.parameters()):
                    pa.lerp_(p, 1 - d)
        return out
    ht.sandwich_step = tracked_step
    if variant.get("warm_epochs"):
        archs_of, warm = ht.sandwich_archs, variant["warm_epochs"] * steps_per_epoch

        def warm_archs(supernet, rng, num_random, step=0, extremes="fixed"):
            archs = archs_of(supernet, rng, num_random, step, extremes)
            return archs[:1] if step < warm else archs
        ht.sandwich_archs = warm_archs

    OUT.mkdir(parents=True, exist_ok=True)
    t = time.time()
    supernet, _ = ht.train_supernet(s, OUT / f"{tag}.pt", progress=True)
    train_s = time.time() - t
    ref = json.loads((layout.EVAL_SUPERNET / "rows.json").read_text())
    archs = es.spread_subnets(s.space, pe["subnets"], pe["candidates"], pe["seed"])
    if [a.key for a in archs] != [r["arch"] for r in ref]:
        raise SystemExit("bench_tau: results/eval_supernet/rows.json holds other subnets; "
                         "run `dvc repro eval_supernet` first")
    probes = es.probe_subnets(s.space)
    calib, held = s.calib_loader(), s.loader(pe["eval_split"])
    for name, net in [("last", supernet)] + [(f"ema{d}", m) for d, m in averages.items()]:
        net.eval()
        inherited = [round(hs.subnet_score(net, a, calib, held, pt.get("calib_batches", 8)), 2)
                     for a in archs + probes]
        scored = es.rank_metrics([{**r, "inherited_score": acc} for r, acc in zip(ref, inherited)])
        row = {"tag": tag, "variant": variant, "weights": name, "train_s": round(train_s),
               **{k: scored[k] for k in ("kendall_tau", "spearman_rho", "largest_gap_points")},
               "mmacs": [round(static_cost(a).macs / 1e6, 2) for a in archs + probes],
               "inherited": inherited}
        print(json.dumps(row), flush=True)
        with (OUT / "results.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
