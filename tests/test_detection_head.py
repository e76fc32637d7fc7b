"""The detection head plug-in: spec, lowering, module, targets, loss, decode, elastic head."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from hardware.spec import load_spec
from hwnas.arch import ArchError, decode, from_json
from hwnas.lowering import to_graph
from hwnas.model import build_model
from hwnas.simulation import simulate_arch
from hwnas.space import SpaceConfig, _space
from hwnas.supernet import SuperNet, extract_subnet, load_supernet, supernet_state
from hwnas.tasks.detection import metrics, modules
from hwnas.tasks.detection.coco import DetectionData
from hwnas.tasks.detection.head import DetectionHead

ARCH = ("det:i1x96x96-stem_k3_c16_s2-ibn_k3_e6_c16_s2-ibn_k3_e6_c24_s2-ibn_k3_e6_c24_s1"
        "-ibn_k3_e6_c48_s1-det_f64_n1_s8")
HEAD = DetectionHead(features=16, classes=2, stride=8)
SPACE = replace(_space("det-test", SpaceConfig(
    resolution=32, in_channels=1, stages=((16, 1, 2), (24, 2, 2)), stem_stride=2, kernels=(3, 5),
    expands=(1, 3), depth_multipliers=(0.5, 1.0), width_range=(0.5, 1.0)), 8, curated=True),
    head=HEAD)


def test_spec_round_trips_json_and_string():
    arch = decode(ARCH)
    assert arch.head == DetectionHead(64, 1, 8) and arch.head.encode() == "det_f64_n1_s8"
    assert decode(arch.encode()) == arch and arch.encode() == ARCH
    assert from_json(arch.to_json()) == arch
    assert arch.to_json()["head"] == {"task": "detection", "features": 64, "classes": 1,
                                      "stride": 8}
    assert decode(ARCH.replace("det_f64_n1_s8", "cls_f0_n2")).head.task == "classification"


@pytest.mark.parametrize("head, message", [
    ({"task": "detection", "features": 64}, "head: missing field 'classes'"),
    ({"task": "detection", "classes": 0}, "head.classes: must be at least 1"),
    ({"task": "detection", "classes": 1, "features": 0}, "head.features: must be at least 1"),
    ({"task": "detection", "classes": 1, "stride": 6}, "head.stride: must be a power of 2"),
    ({"task": "detection", "classes": 1, "stride": 128}, "head.stride: must be at most 64"),
    ({"task": "detection", "classes": 1, "anchors": 9}, "head: unknown field 'anchors'"),
    ({"task": "detection", "classes": 1, "stride": 16}, "head.stride: the head expects a "
                                                         "stride-16 feature map"),
])
def test_validation_names_the_field(head, message):
    data = decode(ARCH).to_json()
    with pytest.raises(ArchError, match=message.replace("(", r"\(")):
        from_json({**data, "head": head})


def test_lowered_ops_are_existing_kinds_and_simulate():
    arch = decode(ARCH)
    graph = to_graph(arch)
    assert {op.kind for op in graph.ops} <= {"conv", "depthwise", "fc", "add", "pool"}
    head = [op for op in graph.ops if op.name.startswith("head")]
    assert [(op.kind, op.kernel, op.in_c, op.out_c, op.out_h) for op in head] == [
        ("conv", 3, 48, 64, 12), ("conv", 1, 64, 5, 12)]
    record = simulate_arch(arch, load_spec("neural-engine-32"))
    assert record["latency_ms"] > 0 and any(k["name"].startswith("head")
                                            for k in record["kernels"])


def test_model_forward_shapes():
    arch = decode(ARCH.replace("n1", "n10"))
    out = build_model(arch).eval()(torch.rand(2, 1, 96, 96))
    assert out.shape == (2, 14, 12, 12)


def _boxes():
    return [{"boxes": torch.tensor([[3.0, 5.0, 17.0, 27.0], [20.0, 2.0, 31.0, 12.0]]),
             "labels": torch.tensor([1, 0])},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
            {"boxes": torch.tensor([[8.0, 8.0, 30.0, 31.0]]), "labels": torch.tensor([1])}]


def _perfect_outputs(y: torch.Tensor, head: DetectionHead) -> torch.Tensor:
    """Head outputs that predict the dense targets exactly (logits +-12, exact distances)."""
    c = head.classes
    heat, boxes = y[:, :c], y[:, c:]
    size = y.shape[-1]
    centers = modules.cell_centers(size, head.stride).T.reshape(1, 2, size, size)
    ltrb = torch.cat([centers - boxes[:, :2], boxes[:, 2:] - centers], 1).clamp(min=1e-3)
    raw = torch.log(torch.expm1(ltrb / head.stride))
    return torch.cat([heat * 24 - 12, raw], 1)


def test_targets_round_trip_through_decode():
    targets = _boxes()
    y = modules.encode_targets(targets, HEAD, 32)
    assert y.shape == (3, HEAD.classes + 4, 4, 4)
    assert y[1].abs().sum() == 0 and y[0, :2].sum() >= 2
    preds = modules.decode(_perfect_outputs(y, HEAD), HEAD)
    for p, t in zip(preds, targets):
        assert len(p["boxes"]) == len(t["boxes"])  # one box per object: NMS merged the cells
        if len(t["boxes"]):
            iou = box_iou(p["boxes"], t["boxes"])
            assert (iou.amax(0) > 0.9).all()
            assert torch.equal(p["labels"][iou.argmax(0)], t["labels"])
    assert metrics.mean_average_precision(preds, targets) == {"map": 1.0, "map_50": 1.0}
    data = DetectionData(torch.full((3, 1, 32, 32), 51, dtype=torch.uint8), targets, [1, 2, 3],
                         ["a", "b", "c"], ["0", "1"], [1, 2], 32)
    split = modules.tensor_data(data, 0.1, 0.5, max_boxes=3)
    assert split.y.shape == (3, 3, 5) and torch.allclose(split.x, torch.full((3, 1, 32, 32), 0.2))
    # the packed boxes encode (inside the loss) to the same dense targets
    assert torch.equal(modules.encode_targets(modules.unpack_targets(split.y), HEAD, 32), y)


def test_nms_removes_duplicates():
    head = DetectionHead(8, 1, 8)
    torch.manual_seed(0)
    centers = modules.cell_centers(4, 8).T.reshape(2, 4, 4)
    ltrb = torch.cat([centers - 2, 30 - centers], 0) + torch.rand(4, 4, 4) * 0.2
    out = torch.cat([torch.full((1, 4, 4), 5.0), torch.log(torch.expm1(ltrb / 8))])[None]
    (p,) = modules.decode(out, head)  # every cell fires on the same object: 16 boxes
    assert len(p["boxes"]) == 1 and box_iou(p["boxes"], torch.tensor([[2.0, 2, 30, 30]])) > 0.98
    (kept,) = modules.decode(out, head, iou_threshold=1.0)  # NMS that suppresses nothing
    assert len(kept["boxes"]) == 16


def test_loss_decreases_on_a_tiny_batch():
    torch.manual_seed(0)
    arch = SPACE.largest()
    model = build_model(arch)
    x = torch.rand(3, 1, 32, 32)
    y = modules.encode_targets(_boxes(), HEAD, 32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss, parts = modules.detection_loss(model(x), y, HEAD)
        assert set(parts) == {"cls", "box"} and math.isfinite(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_elastic_head_exports_identical_outputs(tmp_path):
    torch.manual_seed(0)
    supernet = SuperNet(SPACE)
    assert isinstance(supernet.head, modules.DynamicDetectionHead)
    supernet.train()
    for _ in range(2):  # move BN statistics and weights off their init
        supernet(torch.rand(4, 1, 32, 32), SPACE.largest())
    supernet.eval()
    rng = np.random.default_rng(0)
    x = torch.rand(2, 1, 32, 32)
    for arch in [SPACE.smallest(), *(SPACE.sample(rng) for _ in range(3))]:
        net = extract_subnet(supernet, arch)
        assert isinstance(net.head, modules.DetectionHeadModule)
        assert torch.allclose(net(x), supernet(x, arch), atol=1e-5)
    path = tmp_path / "supernet.pt"
    torch.save(supernet_state(supernet), path)
    loaded = load_supernet(path).eval()
    assert loaded.space == SPACE and torch.equal(loaded(x, arch), supernet(x, arch))
    head = modules.DynamicDetectionHead(32, HEAD).eval()
    small = modules.DetectionHeadModule(24, HEAD).eval()
    head.export_to(small, 24, HEAD)
    f = torch.rand(2, 24, 4, 4)
    assert torch.allclose(small(f), head(f, HEAD), atol=1e-6)


def test_metric_on_torchmetrics_is_one_for_perfect_predictions():
    targets = _boxes()
    preds = [{**t, "scores": torch.ones(len(t["labels"]))} for t in targets]
    assert metrics.mean_average_precision(preds, targets) == {"map": 1.0, "map_50": 1.0}
    assert metrics.presence_accuracy(preds, targets) == 1.0
