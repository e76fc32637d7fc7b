"""The detection task's data and metric: scene generator, COCO loader, mAP and presence."""
import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from hwnas import data
from hwnas.errors import UserError
from hwnas.tasks.detection import coco, metrics, scenes
from conftest import file_hashes

SMALL = scenes.SceneConfig(seed=3, counts={"train": 24, "val": 8, "test": 8})


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes") / "small"
    stats = scenes.generate(SMALL, out)
    return out, stats


@pytest.fixture(scope="module")
def sources():
    return scenes.load_sources(SMALL)


# ---- generator --------------------------------------------------------------------------


def test_same_config_same_bytes(generated, tmp_path):
    out, stats = generated
    again = tmp_path / "again"
    assert scenes.generate(SMALL, again) == stats
    first = file_hashes(out)
    assert first == file_hashes(again)
    assert {"train/instances.json", "val/instances.json", "test/instances.json", "stats.json",
            "contact_sheet.png", "train/images/000023.png", "test/images/000007.png"} <= set(first)
    other = tmp_path / "other"
    scenes.generate(SMALL.model_copy(update={"seed": 4}), other)
    assert file_hashes(other)["train/images/000000.png"] != first["train/images/000000.png"]


def test_scene_depends_only_on_seed_split_index(sources):
    bigger = SMALL.model_copy(update={"counts": scenes.SplitCounts(train=500, val=1, test=1)})
    a, b = (scenes.render_scene(c, sources, "train", 5) for c in (SMALL, bigger))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes)


def test_no_digit_leaks_between_splits(sources):
    pools = sources.pools
    _, labels = data._mnist()
    expected = data.split_indices(labels, SMALL.val_fraction, SMALL.test_fraction, SMALL.seed)
    assert all(np.array_equal(pools[s], e) for s, e in zip(scenes.SPLITS, expected))
    used = {}
    for split in scenes.SPLITS:
        drawn = scenes.render_split(SMALL, sources, split)
        used[split] = set(np.concatenate([np.r_[s.sources, s.fragments] for s in drawn]).tolist())
        assert used[split] and used[split] <= set(pools[split].tolist())
    assert not used["train"] & used["test"] and not used["train"] & used["val"]
    assert not used["val"] & used["test"]


def test_boxes_inside_and_tight_around_ink(sources):
    checked = 0
    for i in range(12):
        scene = scenes.render_scene(SMALL, sources, "train", i)
        res = SMALL.resolution
        for box, mask in zip(scene.boxes.astype(int), scene.masks):
            x0, y0, x1, y1 = box
            assert 0 <= x0 < x1 <= res and 0 <= y0 < y1 <= res
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            assert (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1) == (x0, y0, x1, y1)
            checked += 1
    assert checked >= 10


@pytest.mark.parametrize("x, y", [(5, 7), (-4, 30)])
def test_paste_changes_pixels_only_inside_the_ink_box(sources, x, y):
    """Independent of the masks: the pixels a pasted digit visibly changes span its box."""
    alpha = scenes._tile(np.random.default_rng(0), sources.tiles[11], SMALL)
    canvas = np.full((64, 64, 1), 0.2, np.float32)
    scenes.paste(canvas, alpha, x, y, np.array([0.9], np.float32))
    changed = np.abs(canvas[..., 0] - 0.2) >= scenes.INK_THRESHOLD * 0.7 - 1e-6
    rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
    tx0, ty0, tx1, ty1 = scenes.ink_box(alpha)
    expected = (max(tx0 + x, 0), max(ty0 + y, 0), min(tx1 + x, 64), min(ty1 + y, 64))
    assert (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1) == expected


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_empty_share(sources, share):
    config = SMALL.model_copy(update={"empty_share": share, "resolution": 64, "clutter": 0.0,
                                      "counts": scenes.SplitCounts(train=300, val=1, test=1)})
    drawn = scenes.render_split(config, sources, "train")
    empty = np.mean([len(s.boxes) == 0 for s in drawn])
    assert abs(empty - share) <= 0.09  # 3.6 binomial std at n=300
    assert max(len(s.boxes) for s in drawn) <= config.max_digits


def test_presence_classes_and_config_checks(sources):
    config = SMALL.model_copy(update={"classes": "presence"})
    drawn = (scenes.render_scene(config, sources, "val", i) for i in range(10))
    scene = next(s for s in drawn if len(s.boxes))
    assert (scene.labels == 0).all() and config.categories() == [{"id": 1, "name": "digit"}]
    with pytest.raises(ValidationError):
        scenes.SceneConfig(digit_scale=(0.5, 0.2))
    with pytest.raises(ValidationError):
        scenes.SceneConfig(colour=3)


# ---- loader -----------------------------------------------------------------------------


def test_loader_round_trips_generated_scenes(generated, sources):
    out, stats = generated
    loaded = coco.load_split(out / "val")
    assert len(loaded) == 8 and loaded.images.shape == (8, 1, 96, 96)
    assert loaded.categories == [str(d) for d in range(10)]
    assert sum(len(t["boxes"]) for t in loaded.targets) == stats["val"]["boxes"]
    for i, target in enumerate(loaded.targets):
        scene = scenes.render_scene(SMALL, sources, "val", i)
        assert torch.equal(loaded.images[i, 0], torch.from_numpy(scene.image))
        assert torch.equal(target["boxes"], torch.from_numpy(scene.boxes))
        assert torch.equal(target["labels"], torch.from_numpy(scene.labels))


def test_letterbox_keeps_aspect_and_moves_boxes(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (64, 32), (200, 10, 10)).save(tmp_path / "images" / "a.png")
    instances = {"images": [{"id": 7, "file_name": "a.png", "width": 64, "height": 32}],
                 "annotations": [{"id": 1, "image_id": 7, "category_id": 5,
                                  "bbox": [8, 4, 16, 20]}],
                 "categories": [{"id": 5, "name": "person"}, {"id": 2, "name": "dog"}]}
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    loaded = coco.load_coco(tmp_path / "instances.json", resolution=32, channels=3)
    # scale 0.5, 32x16 image centred: 8 rows of black above
    assert loaded.images.shape == (1, 3, 32, 32) and loaded.images[0, :, :8].max() == 0
    assert loaded.targets[0]["boxes"].tolist() == [[4.0, 10.0, 12.0, 20.0]]
    assert loaded.categories == ["dog", "person"] and loaded.targets[0]["labels"].tolist() == [1]


def _valid(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("a.png", "b.png"):
        Image.new("L", (32, 32), 128).save(tmp_path / "images" / name)
    return {"images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 32},
                       {"id": 2, "file_name": "b.png", "width": 32, "height": 32}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 12]},
                            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [10, 5, 8, 20]}],
            "categories": [{"id": 1, "name": "0"}, {"id": 2, "name": "1"}]}


def _set(path, value):
    def change(d):
        *head, last = path
        for key in head:
            d = d[key]
        if value is _DELETE:
            del d[last]
        else:
            d[last] = value
    return change


_DELETE = object()

BAD = {
    "box outside": (_set(("annotations", 1, "bbox"), [10, 5, 30, 20]),
                    "annotations[1] (id 2): box [10, 5, 30, 20] extends outside image 2 (32x32)"),
    "negative x": (_set(("annotations", 0, "bbox"), [-2, 1, 5, 5]),
                   "annotations[0] (id 1): box [-2, 1, 5, 5] extends outside image 1 (32x32)"),
    "zero width": (_set(("annotations", 0, "bbox"), [1, 1, 0, 5]),
                   "annotations[0] (id 1): box [1, 1, 0, 5] has zero or negative size"),
    "negative height": (_set(("annotations", 1, "bbox"), [1, 1, 4, -3.5]),
                        "annotations[1] (id 2): box [1, 1, 4, -3.5] has zero or negative size"),
    "unknown category": (_set(("annotations", 0, "category_id"), 7),
                         "annotations[0] (id 1): category_id 7 is not in categories (ids 1, 2)"),
    "missing image id": (_set(("annotations", 1, "image_id"), 99),
                         "annotations[1] (id 2): image_id 99 is not in images"),
    "missing image file": (_set(("images", 1, "file_name"), "gone.png"),
                           "images[1] (id 2): file "),
    "no annotations": (_set(("annotations",), []), "no annotations"),
    "missing top-level key": (_set(("categories",), _DELETE), "missing key 'categories'"),
    "missing entry key": (_set(("annotations", 0, "bbox"), _DELETE),
                          "annotations[0] (id 1): missing key 'bbox'"),
    "bbox of 3 numbers": (_set(("annotations", 1, "bbox"), [1, 2, 3]),
                          ("annotations[1] (id 2): bbox: Value error, must be "
                           "[x, y, width, height], got [1, 2, 3]")),
    "bbox not a number": (_set(("annotations", 0, "bbox"), [1, "x", 3, 4]),
                          "annotations[0] (id 1): bbox[1]"),
    "NaN in bbox": (_set(("annotations", 0, "bbox"), [float("nan"), 1, 3, 4]),
                    "annotations[0] (id 1): bbox[0]"),
    "duplicate image id": (_set(("images", 1, "id"), 1), "images[1] (id 1): duplicate id"),
    "crowd": (_set(("annotations", 0, "iscrowd"), 1), "annotations[0] (id 1): iscrowd 1"),
    "wrong size in entry": (_set(("images", 0, "width"), 40), "images[0] (id 1): "),
    "empty object": (lambda d: d.clear(), "missing key 'images'"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_coco_is_one_line_naming_file_and_entry(tmp_path, case):
    change, expected = BAD[case]
    instances = _valid(tmp_path)
    change(instances)
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(instances))
    with pytest.raises(coco.DatasetError) as err:
        coco.load_coco(path, resolution=32)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and expected in message
    assert isinstance(err.value, UserError)


@pytest.mark.parametrize("text, expected", [
    ('{"images": [], "annotations": [,]}', "not valid JSON: Expecting value at line 1"),
    ("[1, 2]", "expected a JSON object with images, annotations and categories, got a list"),
])
def test_malformed_json(tmp_path, text, expected):
    path = tmp_path / "instances.json"
    path.write_text(text)
    with pytest.raises(coco.DatasetError, match=f"^{path}: {expected}"):
        coco.read_instances(path)


def test_unreadable_image_file(tmp_path):
    instances = _valid(tmp_path)
    (tmp_path / "images" / "b.png").write_bytes(b"not a png")
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    expected = r"instances.json: images\[1\] \(id 2\): cannot read"
    with pytest.raises(coco.DatasetError, match=expected):
        coco.load_coco(tmp_path / "instances.json", resolution=32)


def test_valid_fixture_loads(tmp_path):
    instances = _valid(tmp_path)
    (tmp_path / "instances.json").write_text(json.dumps(copy.deepcopy(instances)))
    loaded = coco.load_coco(tmp_path / "instances.json", resolution=32)
    assert loaded.targets[1]["boxes"].tolist() == [[10.0, 5.0, 18.0, 25.0]]


# ---- metrics ----------------------------------------------------------------------------


def _target(*boxes, labels=None):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return {"boxes": boxes, "labels": torch.tensor(labels or [0] * len(boxes), dtype=torch.int64)}


def _pred(*boxes, scores=None, labels=None):
    t = _target(*boxes, labels=labels)
    return {**t, "scores": torch.tensor(scores or [0.9] * len(t["boxes"]))}


TARGETS = [_target([10, 10, 30, 40], [50, 50, 70, 70], labels=[3, 7]), _target(),
           _target([0, 0, 20, 20], labels=[3]), _target()]


def test_perfect_predictions_score_one():
    preds = [_pred(*t["boxes"].tolist(), labels=t["labels"].tolist()) for t in TARGETS]
    assert metrics.mean_average_precision(preds, TARGETS) == {"map": 1.0, "map_50": 1.0}


def test_shifted_boxes_score_lower():
    perfect = [_pred(*t["boxes"].tolist(), labels=t["labels"].tolist()) for t in TARGETS]
    shifted = [{**p, "boxes": p["boxes"] + 4} for p in perfect]
    far = [{**p, "boxes": p["boxes"] + 15} for p in perfect]
    a = metrics.mean_average_precision(shifted, TARGETS)
    b = metrics.mean_average_precision(far, TARGETS)
    assert 0 < a["map"] < a["map_50"] <= 1.0 and b["map_50"] < a["map_50"]
    assert b["map"] == 0.0


def test_empty_scenes_and_empty_predictions():
    perfect = [_pred(*t["boxes"].tolist(), labels=t["labels"].tolist()) for t in TARGETS]
    # a confident box on an empty scene is a false positive
    spurious = perfect[:1] + [_pred([5, 5, 25, 25], scores=[0.95], labels=[3])] + perfect[2:]
    assert metrics.mean_average_precision(spurious, TARGETS)["map"] < 1.0
    nothing = [_pred() for _ in TARGETS]
    assert metrics.mean_average_precision(nothing, TARGETS) == {"map": 0.0, "map_50": 0.0}
    assert metrics.mean_average_precision([_pred(), _pred()], [_target(), _target()])["map"] == -1.0


def test_presence_accuracy_by_hand():
    preds = [_pred([0, 0, 5, 5], scores=[0.9]), _pred([0, 0, 5, 5], scores=[0.3]),
             _pred([0, 0, 5, 5], scores=[0.7]), _pred()]
    targets = [_target([0, 0, 5, 5]), _target([1, 1, 6, 6]), _target(), _target()]
    assert metrics.presence(preds).tolist() == [True, False, True, False]
    assert metrics.presence_accuracy(preds, targets) == 0.5
    assert metrics.presence_accuracy(preds, targets, score_threshold=0.2) == 0.75
    assert metrics.presence_accuracy(preds, targets, score_threshold=0.95) == 0.5
    assert metrics.presence_accuracy(preds, targets, score_threshold=0.8) == 0.75
    metric = metrics.DetectionMetric(score_threshold=0.8)
    metric.update(preds[:2], targets[:2])
    metric.update(preds[2:], targets[2:])
    assert metric.compute()["presence_accuracy"] == 0.75


def test_hwnas_scenes_writes_coco_folders_the_loader_reads(tmp_path):
    from typer.testing import CliRunner

    from hwnas.cli import app
    from hwnas.tasks.detection.coco import load_split

    (tmp_path / "s.yaml").write_text("counts: {train: 6, val: 2, test: 2}\nresolution: 64\n")
    out = tmp_path / "scenes"
    result = CliRunner().invoke(app, ["scenes", "--out", str(out), "--config",
                                      str(tmp_path / "s.yaml"), "--classes", "presence"])
    assert result.exit_code == 0, result.output
    assert (out / "contact_sheet.png").is_file() and (out / "stats.json").is_file()
    data = load_split(out / "train", resolution=64)
    assert len(data.images) == 6 and data.categories == ["digit"]
