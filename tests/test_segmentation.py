"""The segmentation task: its head, the searched input resolution and output stride, the
family's choice and its metrics."""
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hardware.spec import load_spec
from hwnas import layout
from hwnas.arch import ArchError, decode
from hwnas.data import Loader, TensorData
from hwnas.evaluation.metrics import build_metrics, resolution_effect
from hwnas.evaluation.report import family_section
from hwnas.extract import resolution_twins
from hwnas.lowering import to_graph
from hwnas.model import build_model
from hwnas.params import load_params, section, task_params
from hwnas.search.choice import family
from hwnas.search.genome import from_arch, random_genome, to_arch
from hwnas.space import SearchSpace, SpaceConfig, SpaceError, curated_space
from hwnas.supernet import SuperNet, SupernetError, extract_subnet
from hwnas.tasks.segmentation import modules
from hwnas.tasks.segmentation.head import SegmentationHead
from hwnas.tasks.segmentation.scenes import SegmentationScenes, generate
from hwnas.training import TrainConfig

SPEC = load_spec("neural-engine-32")
CFG = SpaceConfig(resolution=32, in_channels=1, classes=1, task="segmentation", head_features=16,
                  stem_stride=2, stages=((16, 1, 2), (16, 1, 2), (32, 1, 1)), expands=(1, 3),
                  kernels=(3,), depth_multipliers=(1.0,), width_range=(0.5, 1.0),
                  resolutions=(24, 32), out_strides=(2, 4, 8))


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return curated_space(SPEC, CFG)


def test_head_round_trips_and_names_bad_fields():
    head = SegmentationHead(features=32, classes=3, stride=8, out_stride=2)
    assert head.encode() == "seg_f32_n3_s8_o2" and head.upsample == 4 and head.out_channels == 4
    assert SegmentationHead.from_json({"task": "segmentation", "classes": 3, "features": 32,
                                       "stride": 8, "out_stride": 2}, "head") == head
    with pytest.raises(ArchError, match="head.out_stride: 16 is coarser"):
        SegmentationHead.from_json({"task": "segmentation", "classes": 1, "stride": 8,
                                    "out_stride": 16}, "head")
    with pytest.raises(ArchError, match="head.out_stride: must be a power of 2"):
        SegmentationHead.from_json({"task": "segmentation", "classes": 1, "stride": 8,
                                    "out_stride": 3}, "head")


def test_ops_upsample_only_below_the_backbone_stride(space):
    base = space.baseline()
    kinds = [op.kind for op in to_graph(base).ops if op.name.startswith("head")]
    assert kinds == ["conv", "gate", "resize", "conv", "conv"]
    coarse = replace(base, head=replace(base.head, out_stride=8))
    assert "resize" not in [op.kind for op in to_graph(coarse).ops]
    fine = to_graph(replace(base, head=replace(base.head, out_stride=2))).ops
    pred = fine[-1]
    assert (pred.out_h, pred.out_c) == (base.input.height // 2, 2)


def test_space_searches_resolution_and_output_stride(space):
    base = space.baseline()
    assert (base.input.height, base.head.out_stride) == (32, 4)  # the data's and stride / 2
    largest, smallest = space.largest(), space.smallest()
    assert (largest.input.height, largest.head.out_stride) == (32, 2)
    assert (smallest.input.height, smallest.head.out_stride) == (24, 8)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(40):
        arch = space.sample(rng)
        assert space.holds_input(arch.input) and space.holds_head(arch.head)
        assert to_arch(space, from_arch(space, arch)) == arch
        seen.add((arch.input.height, arch.head.out_stride))
        genome = random_genome(space, rng)
        assert to_arch(space, genome).input.height == genome["resolution"]
    assert len(seen) == 6
    assert SearchSpace.from_json(space.to_json()) == space
    assert space.size() == 6 * curated_space(SPEC, replace(CFG, resolutions=None,
                                                           out_strides=None)).size() // 1
    assert decode(base.encode()) == base


def test_a_searched_choice_must_hold_the_spaces_own():
    with pytest.raises(SpaceError, match="resolutions: .* must include the space's own "
                                         "resolution 32"):
        curated_space(SPEC, replace(CFG, resolutions=(24, 28)))
    with pytest.raises(SpaceError, match="out_strides: this task's head has no out_stride"):
        curated_space(SPEC, replace(CFG, task="classification", out_strides=(2, 4)))


def test_supernet_scales_inputs_and_exports_identical_subnets(space):
    torch.manual_seed(0)
    supernet = SuperNet(space)
    x = torch.randn(3, 1, 32, 32)
    for arch in (space.baseline(), space.largest(), space.smallest()):
        out = supernet(x, arch)
        size = arch.input.height // arch.head.out_stride
        assert out.shape == (3, 2, size, size)
        supernet.eval()
        net = extract_subnet(supernet, arch)
        assert torch.allclose(net(x), supernet(x, arch), atol=1e-5)
        supernet.train()
    other = replace(space.baseline(), input=replace(space.input, height=40, width=40))
    with pytest.raises(SupernetError, match="input: 40x40 is not among"):
        supernet(x, other)


def test_loss_and_score_judge_the_labels_pixels(space):
    task = modules.TASK
    coarse = replace(space.baseline(), head=replace(space.baseline().head, out_stride=8),
                     input=replace(space.input, height=24, width=24))
    y = torch.zeros(4, 32, 32, dtype=torch.long)
    y[:, 8:20, 10:22] = 1
    y[0, :2] = modules.IGNORE
    out = torch.randn(4, 2, 3, 3, requires_grad=True)  # a 24 px input at stride 8
    loss = task.loss(out, y, coarse.head, TrainConfig(label_smoothing=0.0))
    loss.backward()
    assert loss.item() > 0 and out.grad.abs().sum() > 0

    class Perfect(torch.nn.Module):  # logits at stride 1 that match the masks exactly
        def forward(self, x):
            return torch.nn.functional.one_hot(x[:, 0].long().clamp(0, 1), 2).permute(0, 3, 1, 2).float()
    data = TensorData(y.clamp(max=1).unsqueeze(1).float(), y)
    scores = modules.pixel_scores(Perfect(), Loader(data, 2), coarse.head)
    assert scores == {"miou": 100.0, "pixel_accuracy": 100.0}
    model = build_model(coarse).eval()
    assert 0.0 <= task.score(model, Loader(data, 2), coarse.head) <= 100.0


def test_dice_loss_rewards_overlap_not_pixel_count():
    y = torch.zeros(2, 16, 16, dtype=torch.long)
    y[0, 4:8, 4:8] = 1  # 16 of 512 pixels are foreground
    right = torch.nn.functional.one_hot(y, 2).permute(0, 3, 1, 2).float() * 20
    background = torch.zeros(2, 2, 16, 16)
    background[:, 0] = 20  # 97% of the pixels right, none of the digit
    assert modules.dice_loss(right, y) < 0.01
    assert modules.dice_loss(background, y) > 0.9
    y[1, :2] = modules.IGNORE  # ignored pixels change nothing
    assert modules.dice_loss(right.where(y.unsqueeze(1) != modules.IGNORE, 0.0), y) < 0.01


def _row(arch, score, latency, macs):
    return {"arch": arch, "score": score, "latency_ms": latency, "macs": macs,
            "memory_bytes": 1, "pareto": True, "feasible": True}


def test_family_takes_the_best_network_of_each_band_of_cuts():
    df = pd.DataFrame([_row("a", 80.0, 0.9, 9), _row("b", 78.0, 0.7, 7), _row("c", 79.0, 0.65, 6),
                       _row("d", 70.0, 0.4, 4), _row("e", 60.0, 0.2, 2)])
    base = {"score": 80.0, "latency_ms": 1.0}
    # reductions a 0.1, b 0.3, c 0.35, d 0.6, e 0.8; bands [0.05, 0.3), [0.3, 0.5), [0.5, 1]
    assert family(df, base, [0.5, 0.05, 0.3]) == {"A": "a", "B": "c", "C": "d"}
    assert family(df, base, [0.4, 0.5]) == {"A": None, "B": "d"}  # an empty band: None
    over = pd.DataFrame([{**_row("f", 99.0, 0.66, 9), "feasible": False}])  # over a budget
    assert family(pd.concat([df, over]), base, [0.05, 0.3, 0.5])["B"] == "c"


def test_members_off_the_baseline_resolution_get_a_twin_at_it(space):
    base = space.baseline()
    small = base.at_resolution(24, 8)
    assert small.resolution_and_stride() == (24, 8) and small.blocks == base.blocks
    assert small.head.features == base.head.features
    twins = resolution_twins({"latency": small, "A": base, "B": small, "C": small}, base)
    assert twins == {"B-baseline-resolution": base, "C-baseline-resolution": base}
    assert space.holds_input(twins["B-baseline-resolution"].input)


def _model(arch: str, latency: float, runs: list[float]) -> dict:
    return {"arch": arch, "score": sum(runs) / len(runs), "scratch_score": sum(runs) / len(runs),
            "scratch_score_runs": runs, "score_runs": runs, "latency_ms": latency,
            "energy_mj": latency, "memory_bytes": int(1000 * latency)}


def test_family_metrics_and_targets(space):
    base = space.baseline()
    small = replace(base, input=replace(base.input, height=24, width=24),
                    head=replace(base.head, out_stride=8))
    models = {"latency": _model(small.encode(), 0.45, [70.0, 71.0, 69.5]),
              "baseline-scratch": _model(base.encode(), 1.0, [70.5, 71.0, 70.0]),
              "A": _model(base.encode(), 0.75, [70.4, 71.1, 70.0]),
              "B": _model(small.encode(), 0.45, [70.0, 71.0, 69.5]),
              # B's twin at the baseline's 32 px and stride 4: slower, and better by 1/3
              "B-baseline-resolution": _model(base.encode(), 0.9, [70.5, 71.0, 70.0])}
    m = build_metrics(models, ["baseline-scratch"], memory_name=None, family_names=["A", "B"])
    a, b = m["family"]
    assert (a["name"], a["input_resolution"], a["output_stride"]) == ("A", 32, 4)
    assert (b["input_resolution"], b["output_stride"]) == (24, 8)
    assert b["latency_reduction"] == pytest.approx(0.55) and b["score_delta"] == pytest.approx(-1 / 3)
    assert b["score_delta_se"] is not None and (m["baseline_input_resolution"],
                                                m["baseline_output_stride"]) == (32, 4)
    assert m["targets"]["family_met"]  # 25% <= 27%, 55% >= 51%, both within 1 point
    resolution_effect(m, models)
    assert "at_baseline_resolution" not in a  # A kept the baseline's resolution: no twin
    twin = b["at_baseline_resolution"]
    assert twin["latency_saved"] == pytest.approx(0.5) and twin["score"] == pytest.approx(70.5)
    assert twin["score_gain"] == pytest.approx(-1 / 3) and twin["score_gain_se"] > 0
    text = family_section(m)
    line = next(x for x in text if x.startswith("- B (24 px, stride 8)"))
    assert "latency -50.0%" in line and "-0.33 points" in line
    models["A"] = _model(base.encode(), 0.6, [70.4, 71.1, 70.0])  # 40%: the span misses 27%
    assert not build_metrics(models, ["baseline-scratch"], memory_name=None,
                             family_names=["A", "B"])["targets"]["family_met"]


# ---- the task in the pipeline's context (tiny generated scenes) ----------------------------

ROOT = Path(__file__).resolve().parents[1]
TINY = SegmentationScenes(seed=5, resolution=64, classes="presence",
                          counts={"train": 16, "val": 8, "test": 8})


@pytest.fixture(scope="module")
def seg_ctx(tmp_path_factory):
    from hwnas.context import train_context

    root = tmp_path_factory.mktemp("scenes") / "voc"
    generate(TINY, root)
    p = section(task_params(load_params(ROOT / "params.yaml"), "segmentation"), "train_supernet")
    p["data"] = {**p["data"], "dataset": str(root)}
    p["train"] = {**p["train"], "batch_size": 8, "num_random": 1}
    return train_context(p)


def test_context_trains_scores_and_extracts(seg_ctx, tmp_path):
    from hwnas.model import fresh_model
    from hwnas.supernet import subnet_score, task_score
    from hwnas.training import make_optimizer, sandwich_archs, sandwich_step, train_step

    ctx = seg_ctx
    assert ctx.splits.classes == 1 and ctx.space.resolutions == (48, 56, 64)
    assert ctx.space.baseline().input.height == 64 and ctx.space.out_strides == (2, 4, 8)
    torch.manual_seed(0)
    supernet = SuperNet(ctx.space, True)
    opt = make_optimizer(supernet, ctx.train)
    x, y = next(iter(ctx.loader("train", train=True)))
    archs = sandwich_archs(supernet, np.random.default_rng(0), 1, 0, ctx.train.extremes)
    out = sandwich_step(supernet, x, y, archs, opt, ctx.train)  # students at other sizes
    assert np.isfinite(float(out["loss_largest"])) and np.isfinite(float(out["loss_students"]))
    arch = supernet.smallest()
    assert 0.0 <= subnet_score(supernet, arch, ctx.calib_loader(), ctx.loader("val"), 1) <= 100
    net = extract_subnet(supernet, arch).train()
    opt = make_optimizer(net, ctx.train)
    losses = [float(train_step(net, x, y, opt, ctx.train)["loss"]) for _ in range(8)]
    assert losses[-1] < losses[0]
    assert 0.0 <= task_score(net, ctx.loader("test")) <= 100.0
    nets = {"baseline": fresh_model(ctx.space.baseline(), 0), "small": net}
    extra = modules.TASK.examples(nets, ctx.splits.test, tmp_path / "e.png")
    assert (tmp_path / "e.png").stat().st_size > 5000
    assert set(extra["pixel_accuracy"]) == {"baseline", "small"}


@pytest.mark.parametrize("case", ["mask size", "class id", "no mask"])
def test_bad_masks_stop_the_stage_before_training(tmp_path, case):
    """A user's VOC-style folder with a bad pair: train_supernet@segmentation exits 2 with
    one line naming the file; the previous supernet is untouched."""
    import yaml
    from PIL import Image

    root = tmp_path / "voc"
    generate(TINY, root)
    mask = root / "train" / "masks" / "000003.png"
    if case == "mask size":
        Image.new("L", (32, 64)).save(mask)
    elif case == "class id":
        Image.new("L", (64, 64), 7).save(mask)
    else:
        mask.unlink()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["segmentation"]["train_supernet"]["data"]["dataset"] = str(root)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    previous = tmp_path / layout.task_path("SUPERNET", "segmentation")
    previous.parent.mkdir(parents=True)
    previous.write_bytes(b"the previous supernet")
    proc = subprocess.run([sys.executable, "-m", "stages.train_supernet", "--task",
                           "segmentation"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT),
                               "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "000003" in line, line
    assert previous.read_bytes() == b"the previous supernet"


def test_missing_foreground_classes_is_one_line(tmp_path):
    from hwnas.tasks.segmentation.masks import DatasetError

    with pytest.raises(DatasetError, match=r"^train_supernet\.data\.classes: required"):
        modules.Segmentation().load({"dataset": str(tmp_path), "resolution": 64}, seed=0)
