"""Detection baseline feasibility: does a MobileNetV2-like stride-8 detector trained from scratch
on CPU land between 60 and 92 mAP@0.5 on the default scenes (neither saturated nor hopeless)?
And where do latency and mAP move for a 2x narrower and a 2x wider backbone?

    PYTHONPATH=$PWD python bench/bench_detection_baseline.py --classes presence digits \
        --seeds 0 1 --widths 1 --epochs 8 --out results.json
    PYTHONPATH=$PWD python bench/bench_detection_baseline.py --classes presence --seeds 0 \
        --widths 0.5 2

Scenes: ``SceneConfig()`` defaults (96 px grayscale, 0-4 digits, 30% empty) plus ``--scene``
overrides (``key=json``, e.g. ``--scene 'digit_scale=[0.3,0.6]'``), generated once under
``--data``. Backbone: ``SearchSpace.baseline()`` of a curated space whose stages are
16/24/32/48 channels x depths 1/2/3/2 with strides 2/2/1/1 after a stride-2 stem (total
stride 8: a 12x12 map at 96 px), IBN k3 e6, then ``DetectionHead``. Training: AdamW, linear
warmup + cosine (``hwnas.training.lr_at``), channels_last, no augmentation, 1 torch thread
(``--threads``; on a shared 2-core machine 2 threads were 3-10x slower per step). The
presence threshold is chosen on val; mAP is torchmetrics' (faster_coco_eval backend); the
test split is only reported, never selected on.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import torch

from hardware.spec import load_spec
from hwnas.data import Loader
from hwnas.model import fresh_model
from hwnas.simulation import simulate_arch
from hwnas.space import SpaceConfig, _space
from hwnas.tasks.detection import coco, metrics, scenes
from hwnas.tasks.detection.head import DetectionHead
from hwnas.tasks.detection.modules import (decode, detection_loss, encode_targets, tensor_data,
                                           unpack_targets)
from hwnas.training import TrainConfig, lr_at, set_lr

STAGES = ((16, 1, 2), (24, 2, 2), (32, 3, 1), (48, 2, 1))  # channels, depth, stride
STEM = 16


def baseline_arch(classes: int, width: float = 1.0, features: int = 64, resolution: int = 96):
    """The space's baseline with every backbone width scaled by ``width`` (head kept)."""
    stages = tuple((max(8, round(c * width / 8) * 8), d, s) for c, d, s in STAGES)
    cfg = SpaceConfig(resolution=resolution, in_channels=1, stages=stages, stem_stride=2,
                      expands=(1, 3, 6), width_range=(0.5, 1.0))
    space = replace(_space("det", cfg, 8, curated=True),
                    head=DetectionHead(features=features, classes=classes, stride=8))
    stem = max(8, round(STEM * width / 8) * 8)
    space = replace(space, stem_channels=(stem,))
    name = "baseline" if width == 1 else f"baseline_w{width:g}"
    return space.baseline([c for c, _, _ in stages], stem).with_name(name)


def load_scenes(root: Path, config: scenes.SceneConfig) -> dict[str, coco.DetectionData]:
    folder = root / f"scenes_{hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:10]}"
    if not (folder / "stats.json").is_file():
        scenes.generate(config, folder)
        (folder / "config.json").write_text(config.model_dump_json())
    return {s: coco.load_split(folder / s, config.resolution, config.channels)
            for s in scenes.SPLITS}


@torch.no_grad()
def predict(model, x: torch.Tensor, head: DetectionHead, batch: int = 250) -> list[dict]:
    model.eval()
    out = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].contiguous(memory_format=torch.channels_last)
        out += decode(model(xb), head)
    return out


def evaluate(preds: list[dict], data: coco.DetectionData, threshold: float) -> dict:
    m = metrics.mean_average_precision(preds, data.targets)
    return {"map_50": 100 * m["map_50"], "map": 100 * m["map"],
            "presence_acc": 100 * metrics.presence_accuracy(preds, data.targets, threshold)}


def best_threshold(preds: list[dict], data: coco.DetectionData) -> float:
    grid = [round(0.05 * i, 2) for i in range(1, 20)]
    return max(grid, key=lambda t: (metrics.presence_accuracy(preds, data.targets, t), -abs(t - .5)))


def run(data: dict, classes: int, seed: int, width: float, epochs: int, lr: float,
        batch: int, box_weight: float, spec) -> dict:
    arch = baseline_arch(classes, width)
    head = arch.head
    mean = data["train"].images.float().mean() / 255
    std = data["train"].images.float().std() / 255
    most = max(1, *(len(t["labels"]) for d in data.values() for t in d.targets))
    tensors = {s: tensor_data(d, mean, std, most) for s, d in data.items()}
    xs = {s: t.x for s, t in tensors.items()}
    loader = Loader(tensors["train"], batch, shuffle=True, seed=seed, drop_last=True)
    model = fresh_model(arch, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    cfg = TrainConfig(epochs=epochs, lr=lr, warmup_epochs=0.5)
    total, step, t0, log = epochs * len(loader), 0, time.perf_counter(), []
    for epoch in range(epochs):
        model.train()
        losses = []
        for xb, yb in loader:
            set_lr(opt, lr_at(step, total, len(loader), cfg))
            out = model(xb.contiguous(memory_format=torch.channels_last))
            dense = encode_targets(unpack_targets(yb), head, out.shape[-1] * head.stride)
            loss, parts = detection_loss(out, dense, head, box_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            losses.append(parts)
            step += 1
        log.append({k: round(sum(p[k] for p in losses) / len(losses), 4) for k in ("cls", "box")})
        print(f"  epoch {epoch + 1}/{epochs} {log[-1]} {time.perf_counter() - t0:.0f}s", flush=True)
    train_s = time.perf_counter() - t0
    val_preds, test_preds = predict(model, xs["val"], head), predict(model, xs["test"], head)
    threshold = best_threshold(val_preds, data["val"])
    sim = simulate_arch(arch, spec, per_kernel=False)
    return {"arch": arch.encode(), "classes": classes, "seed": seed, "width": width,
            "epochs": epochs, "lr": lr, "batch": batch, "train_s": round(train_s, 1),
            "presence_threshold": threshold, "val": evaluate(val_preds, data["val"], threshold),
            "test": evaluate(test_preds, data["test"], threshold), "loss": log,
            "latency_ms": sim["latency_ms"], "macs": sim["macs"], "params": sim["params"],
            "peak_activation_bytes": sim["peak_activation_bytes"]}


def _override(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    return key, json.loads(value)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--classes", nargs="+", default=["presence", "digits"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--widths", nargs="+", type=float, default=[1.0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--box-weight", type=float, default=1.0)
    p.add_argument("--scene", nargs="*", type=_override, default=[], metavar="KEY=JSON")
    p.add_argument("--data", type=Path, default=Path("/tmp/hwnas_det_bench"))
    p.add_argument("--hardware", default="neural-engine-32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path)
    p.add_argument("--summarize", nargs="+", type=Path, metavar="JSON",
                   help="only print the summary of saved --out files")
    args = p.parse_args(argv)
    if args.summarize:
        summarize([r for f in args.summarize for r in json.loads(f.read_text())])
        return
    torch.set_num_threads(args.threads)
    spec = load_spec(args.hardware)
    results = []
    for classes in args.classes:
        config = scenes.SceneConfig(classes=classes, **dict(args.scene))
        data = load_scenes(args.data, config)
        for width in args.widths:
            for seed in args.seeds:
                print(f"{classes} width {width:g} seed {seed} scenes {dict(args.scene)}", flush=True)
                r = run(data, len(config.categories()), seed, width, args.epochs, args.lr,
                        args.batch, args.box_weight, spec)
                r["scenes"] = dict(args.scene)
                results.append(r)
                print(json.dumps({k: r[k] for k in ("arch", "val", "test", "latency_ms",
                                                    "train_s")}), flush=True)
                if args.out:
                    args.out.write_text(json.dumps(results, indent=1))
    summarize(results)


def summarize(results: list[dict]) -> None:
    """Mean +- sample sd (and range) per configuration: classes, width, scenes, recipe."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        key = (r["classes"], r["width"], json.dumps(r["scenes"]), r["epochs"], r["lr"])
        groups.setdefault(key, []).append(r)
    for (classes, width, scene, epochs, lr), rows in groups.items():
        print(f"classes {classes} width {width:g} scenes {scene} epochs {epochs} lr {lr:g} "
              f"(n={len(rows)}, latency {rows[0]['latency_ms']:.4f} ms):")
        for split in ("val", "test"):
            parts = []
            for metric in ("map_50", "map", "presence_acc"):
                v = [r[split][metric] for r in rows]
                mean = sum(v) / len(v)
                sd = math.sqrt(sum((x - mean) ** 2 for x in v) / max(1, len(v) - 1))
                parts.append(f"{metric} {mean:.1f} +- {sd:.1f} [{min(v):.1f}, {max(v):.1f}]")
            print(f"  {split}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
