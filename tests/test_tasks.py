"""Tasks as plug-ins: the registry, each task's hooks, and a detection pipeline's pieces on
tiny scenes (one sandwich step, scores, extraction, from-scratch steps)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import torch

from hwnas import layout, tasks
from hwnas.arch import HEADS
from hwnas.lowering import HEAD_OPS
from hwnas.params import ParamsError, TaskName, enable_task, load_params, section, task_params
from hwnas.tasks.detection import scenes

ROOT = Path(__file__).resolve().parents[1]
TINY = scenes.SceneConfig(seed=5, counts={"train": 16, "val": 8, "test": 8}, classes="presence")


def test_every_task_is_registered_on_both_sides():
    assert set(get_args(TaskName)) == set(tasks.TASKS)  # the params schema knows each task
    for name, task in tasks.TASKS.items():
        assert name in HEADS and name in HEAD_OPS  # spec and ops, without torch
        side = tasks.torch_task(name)
        for hook in ("load", "loss", "soft_targets", "distill", "score"):
            assert callable(getattr(side, hook)), (name, hook)
        assert task.metric and task.label


def test_unknown_task_is_one_line():
    with pytest.raises(Exception, match="unknown task 'pose'"):
        tasks.get("pose")
    proc = subprocess.run([sys.executable, "-m", "stages.data", "--task", "nope"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "--task: unknown task 'nope'" in proc.stderr


def test_packed_targets_round_trip():
    from hwnas.tasks.detection.modules import pack_targets, unpack_targets

    targets = [{"boxes": torch.tensor([[1.0, 2, 30, 40], [50, 50, 60, 70]]),
                "labels": torch.tensor([0, 0])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    y = pack_targets(targets, 3)
    assert y.shape == (2, 3, 5)
    for a, b in zip(unpack_targets(y), targets):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])


def test_task_params_merge_over_the_shared_sections():
    params = load_params(ROOT / "params.yaml", task="detection")
    shared = load_params(ROOT / "params.yaml", task="classification")
    d = params["train_supernet"]
    assert d["task"] == "detection" and d["train"]["max_shift"] == 0
    # keys the detection section does not name are the shared ones
    assert d["train"]["grad_clip"] == shared["train_supernet"]["train"]["grad_clip"]
    assert params["scenes"]["classes"] == "presence" and "scenes" not in shared


def test_bad_task_override_names_the_task_and_key(tmp_path):
    text = (ROOT / "params.yaml").read_text().replace(
        "      max_shift: 0 ", "      max_shift: -1 ", 1)
    assert text != (ROOT / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ParamsError, match=r"detection \(merged.*train_supernet\.train\.max_shift"):
        load_params(tmp_path / "params.yaml")


def test_enable_task_adds_it_once_and_keeps_comments(tmp_path):
    import re

    path = tmp_path / "params.yaml"
    path.write_text(re.sub(r"(?m)^tasks: .*$", "tasks: [classification]",
                           (ROOT / "params.yaml").read_text()))
    assert enable_task("detection", path)
    assert not enable_task("detection", path)
    text = path.read_text()
    assert "# The task pipelines of this workspace" in text
    assert load_params(path)["tasks"] == ["classification", "detection"]


@pytest.fixture(scope="module")
def detection_ctx(tmp_path_factory):
    from hwnas.context import train_context

    root = tmp_path_factory.mktemp("scenes")
    scenes.generate(TINY, root / "coco")
    params = task_params(load_params(ROOT / "params.yaml"), "detection")
    p = section(params, "train_supernet")
    p["data"] = {**p["data"], "dataset": str(root / "coco")}
    p["train"] = {**p["train"], "batch_size": 8, "num_random": 1}
    return train_context(p)


def test_detection_context_data_and_space(detection_ctx):
    ctx = detection_ctx
    assert ctx.splits.classes == 1 and ctx.splits.resolution == 96
    assert ctx.space.head.task == "detection" and ctx.space.head.stride == 8
    assert ctx.splits.train.y.shape[-1] == 5  # packed boxes: label + xyxy
    joined = next(iter(ctx.loader("val+test")))  # splits concatenate: one box width
    assert len(joined[0]) == 16


def test_detection_trains_scores_and_extracts(detection_ctx):
    from hwnas.supernet import SuperNet, extract_subnet, subnet_score, task_score
    from hwnas.training import make_optimizer, sandwich_archs, sandwich_step, train_step

    ctx = detection_ctx
    torch.manual_seed(0)
    supernet = SuperNet(ctx.space, True)
    opt = make_optimizer(supernet, ctx.train)
    x, y = next(iter(ctx.loader("train", train=True)))
    archs = sandwich_archs(supernet, np.random.default_rng(0), 1, 0, ctx.train.extremes)
    out = sandwich_step(supernet, x, y, archs, opt, ctx.train)
    assert np.isfinite(float(out["loss_largest"])) and np.isfinite(float(out["loss_students"]))
    arch = supernet.smallest()
    inherited = subnet_score(supernet, arch, ctx.calib_loader(), ctx.loader("val"), 1)
    assert 0.0 <= inherited <= 100.0
    net = extract_subnet(supernet, arch).train()
    opt = make_optimizer(net, ctx.train)
    losses = [train_step(net, x, y, opt, ctx.train)["loss"] for _ in range(8)]
    assert losses[-1] < losses[0]  # the task's loss drives a from-scratch step
    assert 0.0 <= task_score(net, ctx.loader("test")) <= 100.0


def test_detection_rejects_a_shift_augmentation(detection_ctx):
    from hwnas.context import train_context

    p = dict(detection_ctx.params, train={**detection_ctx.params["train"], "max_shift": 2})
    with pytest.raises(ParamsError, match="max_shift: must be 0 for detection"):
        train_context(p)


def test_a_split_without_annotations_is_refused(tmp_path):
    from hwnas.tasks.detection.coco import DatasetError
    from hwnas.tasks.detection.modules import load_splits

    scenes.generate(TINY, tmp_path / "coco")
    instances = tmp_path / "coco" / "val" / "instances.json"
    data = json.loads(instances.read_text())
    data["annotations"] = []
    instances.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"val/instances.json: no annotations"):
        load_splits(tmp_path / "coco", 96)


def test_layout_task_paths():
    assert layout.task_path("PARETO", "detection") == Path("results/detection/search/pareto.json")
    assert layout.task_path("SUPERNET", "detection") == Path("models/detection/supernet.pt")
    assert layout.task_data("detection") == Path("data/detection")


def test_detection_head_width_is_searched(detection_ctx):
    from hwnas.search.genome import from_arch, to_arch
    from hwnas.supernet import SuperNet, SupernetError, extract_subnet

    space = detection_ctx.space
    assert space.head_widths == (32, 64) and space.head.features == 64  # the baseline's
    assert space.largest().head.features == 64 and space.smallest().head.features == 32
    rng = np.random.default_rng(0)
    assert {space.sample(rng).head.features for _ in range(40)} == {32, 64}
    narrow = space.smallest()
    assert to_arch(space, from_arch(space, narrow)) == narrow.with_name("")
    torch.manual_seed(0)
    supernet = SuperNet(space, True).eval()
    x = detection_ctx.splits.val.x[:4]
    with torch.no_grad():
        assert torch.allclose(extract_subnet(supernet, narrow).eval()(x), supernet(x, narrow),
                              atol=1e-5)
    with pytest.raises(SupernetError, match="not among the supernet's"):
        supernet(x, replace(narrow, head=space.head_of(48)))


@pytest.mark.parametrize("case", ["box outside", "unknown category", "missing image"])
def test_bad_coco_stops_the_detection_stage_before_training(tmp_path, case):
    """A user's COCO root with a bad entry: train_supernet@detection exits 2 with one line
    naming the file and the entry; the previous supernet is untouched."""
    import yaml

    scenes.generate(TINY, tmp_path / "coco")
    instances = tmp_path / "coco" / "train" / "instances.json"
    data = json.loads(instances.read_text())
    if case == "box outside":
        data["annotations"][0]["bbox"] = [90.0, 90.0, 20.0, 20.0]
        expected = "annotations[0] (id "
    elif case == "unknown category":
        data["annotations"][0]["category_id"] = 42
        expected = "category_id 42 is not in categories"
    else:
        (tmp_path / "coco" / "train" / "images" / data["images"][0]["file_name"]).unlink()
        expected = "images[0]"
    instances.write_text(json.dumps(data))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["detection"]["train_supernet"]["data"]["dataset"] = str(tmp_path / "coco")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    previous = tmp_path / layout.task_path("SUPERNET", "detection")
    previous.parent.mkdir(parents=True)
    previous.write_bytes(b"the previous supernet")
    proc = subprocess.run([sys.executable, "-m", "stages.train_supernet", "--task", "detection"],
                          cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT),
                               "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert str(instances) in line and expected in line
    assert previous.read_bytes() == b"the previous supernet"


def test_examples_picture_and_host_time(detection_ctx, tmp_path):
    from hwnas.model import fresh_model

    ctx = detection_ctx
    nets = {"baseline": fresh_model(ctx.space.baseline(), 0), "small": fresh_model(ctx.space.smallest(), 0)}
    extra = tasks.torch_task("detection").examples(nets, ctx.splits.test, tmp_path / "e.png")
    assert (tmp_path / "e.png").stat().st_size > 5000
    assert set(extra["host_postprocess_ms"]) == {"baseline", "small"}
    assert all(v > 0 for v in extra["host_postprocess_ms"].values())


@pytest.mark.parametrize("task", sorted(tasks.TASKS))
def test_committed_evaluation_speaks_of_the_tasks_score(task):
    """Every task's evaluation has the same keys, its metric named (the committed run)."""
    metrics = json.loads((ROOT / layout.task_path("EVALUATE", task) / "metrics.json").read_text())
    keys = ("task", "metric", "score", "baseline_score", "score_delta", "score_delta_se",
            "latency_ms", "baseline_latency_ms", "latency_reduction", "memory_bytes",
            "baseline_memory_bytes", "memory_reduction", "estimator_error")
    assert all(k in metrics for k in keys), [k for k in keys if k not in metrics]
    assert metrics["task"] == task and metrics["metric"] == tasks.get(task).metric
    assert not any("accuracy" in k for k in metrics
                   if k not in ("presence_accuracy", "pixel_accuracy"))


def test_run_refuses_an_unknown_task_before_touching_params(tmp_path):
    params = (ROOT / "params.yaml").read_text()
    proc = subprocess.run([sys.executable, "-m", "hwnas.cli", "run", "--task", "pose"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "--task: unknown task 'pose'" in proc.stderr
    assert "Traceback" not in proc.stderr and (ROOT / "params.yaml").read_text() == params
