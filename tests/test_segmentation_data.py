"""The segmentation task's data: scene masks (generator) and the VOC-style loader."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from hwnas.errors import UserError, one_line
from hwnas.tasks.detection import scenes as det
from hwnas.tasks.segmentation import masks, scenes
from conftest import file_hashes

SMALL = scenes.SegmentationScenes(seed=3, classes="presence",
                                  counts={"train": 16, "val": 6, "test": 6})
DIGITS = SMALL.model_copy(update={"classes": "digits"})


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("seg") / "small"
    return out, scenes.generate(SMALL, out)


@pytest.fixture(scope="module")
def sources():
    return det.load_sources(SMALL)


# ---- generator ------------------------------------------------------------------------------


def test_config_is_the_detection_config():
    assert isinstance(SMALL, det.SceneConfig)
    with pytest.raises(ValidationError):
        scenes.SegmentationScenes(colour="red")
    with pytest.raises(ValidationError):
        SMALL.seed = 4  # frozen
    assert SMALL.class_names() == ["background", "digit"] and SMALL.foreground_classes == 1
    assert DIGITS.class_names() == ["background", *map(str, range(10))]
    assert DIGITS.foreground_classes == 10


def test_same_config_same_bytes(generated, tmp_path):
    out, stats = generated
    again = tmp_path / "again"
    assert scenes.generate(SMALL, again) == stats
    first = file_hashes(out)
    assert first == file_hashes(again)
    assert {"classes.json", "stats.json", "contact_sheet.png", "train/images/000015.png",
            "train/masks/000015.png", "test/images/000005.png",
            "test/masks/000005.png"} <= set(first)
    assert json.loads((out / "classes.json").read_text()) == {"classes": ["background", "digit"]}
    assert set(stats) == {"train", "val", "test"} and stats["train"]["scenes"] == 16
    assert 0 < stats["train"]["foreground_share"]["mean"] < 1
    assert json.loads((out / "stats.json").read_text()) == stats
    other = tmp_path / "other"
    scenes.generate(SMALL.model_copy(update={"seed": 4}), other)
    assert file_hashes(other)["train/images/000000.png"] != first["train/images/000000.png"]


@pytest.mark.parametrize("config", [SMALL, DIGITS], ids=["presence", "digits"])
def test_masks_agree_with_scenes(config, sources, tmp_path, generated):
    if config is SMALL:
        out = generated[0]
    else:
        out = tmp_path / "digits"
        scenes.generate(config, out)
        assert json.loads((out / "classes.json").read_text())["classes"][1:] == \
            [str(d) for d in range(10)]
    empty = full = 0
    for split in det.SPLITS:
        for i in range(getattr(config.counts, split)):
            scene = det.render_scene(config, sources, split, i)
            with Image.open(out / split / "masks" / f"{i:06d}.png") as im:
                assert im.mode == "L" and im.size == (config.resolution,) * 2
                mask = np.asarray(im)
            with Image.open(out / split / "images" / f"{i:06d}.png") as im:
                assert np.array_equal(np.asarray(im), scene.image)
            assert np.array_equal(mask, scenes.class_map(scene))
            inside = np.zeros_like(mask, bool)
            for x0, y0, x1, y1 in scene.boxes.astype(int):
                inside[y0:y1, x0:x1] = True
            assert not (mask > 0)[~inside].any()  # every labelled pixel lies in a digit's box
            if not len(scene.boxes):
                empty += 1
                assert not mask.any()
                continue
            full += 1
            allowed = {0, 1} if config.classes == "presence" else {0, *(scene.digits + 1).tolist()}
            assert set(np.unique(mask).tolist()) <= allowed
            for j, (m, digit) in enumerate(zip(scene.masks, scene.digits.tolist())):
                alone = m & ~scene.masks[j + 1:].any(0)  # not covered by a later digit
                want = 1 if config.classes == "presence" else digit + 1
                assert alone.any() and (mask[alone] == want).all()
    assert empty and full


def test_later_digit_wins_where_digits_overlap():
    a, b = np.zeros((2, 8, 8), bool)
    a[1:5, 1:5], b[3:7, 3:7] = True, True
    scene = det.Scene(image=np.zeros((8, 8), np.uint8), boxes=np.zeros((2, 4), np.float32),
                      labels=np.array([2, 7]), digits=np.array([2, 7]), masks=np.stack([a, b]),
                      sources=np.zeros(2, np.int64), fragments=np.zeros(0, np.int64))
    m = scenes.class_map(scene)
    assert m[3, 3] == 8 and m[1, 1] == 3 and m[6, 6] == 8 and m[0, 0] == 0


def test_no_test_digit_in_training_scenes(sources):
    pools = det.digit_pools(det._mnist()[1], SMALL)
    used = {}
    for split in det.SPLITS:
        drawn = [det.render_scene(SMALL, sources, split, i)
                 for i in range(getattr(SMALL.counts, split))]
        used[split] = set(np.concatenate([np.r_[s.sources, s.fragments] for s in drawn]).tolist())
        assert used[split] <= set(pools[split].tolist())
    assert not used["train"] & set(pools["test"].tolist())
    assert not used["train"] & set(pools["val"].tolist())


# ---- loader ---------------------------------------------------------------------------------


def test_loader_round_trip(generated):
    out, _ = generated
    splits = masks.load(out, resolution=96, channels=1, classes=1, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (16, 6, 6)
    assert splits.classes == 1 and splits.channels == 1 and splits.resolution == 96
    assert splits.train.x.shape == (16, 1, 96, 96) and splits.train.x.dtype.is_floating_point
    assert splits.train.y.shape == (16, 96, 96) and str(splits.train.y.dtype) == "torch.int64"
    with Image.open(out / "val/masks/000004.png") as im:
        assert np.array_equal(splits.val.y[4].numpy(), np.asarray(im))
    with Image.open(out / "val/images/000004.png") as im:
        raw = splits.val.x[4, 0].numpy() * splits.std + splits.mean
        assert np.allclose(raw, np.asarray(im) / 255.0, atol=1e-5)
    part = masks.load_split(out / "train", 96, 3, 1)
    assert part.x.shape == (16, 3, 96, 96) and 0 <= part.x.min() and part.x.max() <= 1
    assert part.files[0] == "000000.png" and len(part) == 16
    with pytest.raises(masks.DatasetError, match="classes.json: 1 foreground classes"):
        masks.load(out, 96, 1, classes=10, seed=0)


def _pair(folder, stem, size=(20, 12), ids=(0, 1), mode="L", image_suffix=".png"):
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    w, h = size
    Image.fromarray(np.full((h, w), 128, np.uint8)).save(folder / "images" / (stem + image_suffix))
    m = np.zeros((h, w), np.uint8)
    m[: h // 2] = ids[0]
    m[h // 2:] = ids[1]
    mask = Image.fromarray(m)
    if mode == "P":
        mask = mask.convert("P")
        mask.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)
        mask.frombytes(m.tobytes())  # palette indices = class ids, whatever the colours
    mask.save(folder / "masks" / f"{stem}.png")


def test_user_data_letterboxed_palette_and_ignore(tmp_path):
    _pair(tmp_path, "a", size=(40, 20), ids=(0, 2), mode="P", image_suffix=".jpg")
    _pair(tmp_path, "b", size=(20, 20), ids=(255, 1))
    data = masks.load_split(tmp_path, resolution=32, channels=1, classes=2)
    assert data.files == ["a.jpg", "b.png"]
    y = data.y.numpy()
    # 40x20 -> 32x16 centred: 8 rows of padding (ignore) above and below
    assert (y[0, :8] == masks.IGNORE).all() and (y[0, 24:] == masks.IGNORE).all()
    assert (y[0, 8:16] == 0).all() and (y[0, 16:24] == 2).all()
    assert (data.x[0, :, :8] == 0).all()
    assert (y[1, :16] == masks.IGNORE).all() and (y[1, 16:] == 1).all()


def _valid(tmp_path):
    for stem in ("a", "b", "c"):
        _pair(tmp_path, stem)
    return tmp_path


def _remove(path):
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def _corrupt(path):
    path.write_bytes(b"\x89PNG\r\n\x1a\n not a png at all")


def _truncated(path):
    noisy = np.random.default_rng(0).integers(0, 2, (12, 20)).astype(np.uint8)
    Image.fromarray(noisy).save(path)  # compressed data to cut into (zeros fit in a few bytes)
    path.write_bytes(path.read_bytes()[:80])


def _resize_mask(path):
    Image.fromarray(np.zeros((12, 19), np.uint8)).save(path)


def _rgb_mask(path):
    Image.fromarray(np.zeros((12, 20, 3), np.uint8)).save(path)


def _high_id(path):
    m = np.zeros((12, 20), np.uint8)
    m[5, 5] = 7
    Image.fromarray(m).save(path)


BAD = {  # name: (file to change, change, file the message names, text it holds)
    "mask size differs": ("masks/b.png", _resize_mask, "masks/b.png", "19x12"),
    "class id above": ("masks/c.png", _high_id, "masks/c.png", "class id 7 above the declared 1"),
    "image without mask": ("masks/b.png", _remove, "images/b.png", "no mask"),
    "mask without image": ("images/c.png", _remove, "masks/c.png", "no image"),
    "corrupt image": ("images/a.png", _corrupt, "images/a.png", "cannot read"),
    "corrupt mask": ("masks/c.png", _corrupt, "masks/c.png", "cannot read"),
    "truncated mask": ("masks/b.png", _truncated, "masks/b.png", "cannot read"),
    "rgb mask": ("masks/a.png", _rgb_mask, "masks/a.png", "mode 'RGB'"),
    "missing images/": ("images", _remove, "images", "no such folder"),
    "missing masks/": ("masks", _remove, "masks", "no such folder"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_inputs_name_the_file(case, tmp_path):
    folder = _valid(tmp_path)
    target, change, named, text = BAD[case]
    change(folder / target)
    with pytest.raises(masks.DatasetError) as err:
        masks.load_split(folder, resolution=16, channels=1, classes=1)
    message = str(err.value)
    assert isinstance(err.value, UserError)
    assert str(folder / named) in message and text in message
    assert "\n" not in message and one_line(err.value) == message


def test_more_bad_inputs(tmp_path):
    (tmp_path / "empty/images").mkdir(parents=True)
    (tmp_path / "empty/masks").mkdir()
    with pytest.raises(masks.DatasetError, match="empty/images: no images"):
        masks.load_split(tmp_path / "empty", 16, 1, 1)
    folder = _valid(tmp_path / "jpeg")
    Image.fromarray(np.zeros((12, 20), np.uint8)).save(folder / "masks/d.jpg")
    _pair(folder, "d")
    (folder / "masks/d.png").unlink()
    with pytest.raises(masks.DatasetError, match="masks/d.jpg: masks must be PNG"):
        masks.load_split(folder, 16, 1, 1)
    with pytest.raises(masks.DatasetError, match="nowhere: no such folder"):
        masks.load(tmp_path / "nowhere", 16, 1, 1, seed=0)
    root = tmp_path / "root"
    _valid(root / "train")
    _valid(root / "val")
    with pytest.raises(masks.DatasetError, match="root/test/images: no such folder"):
        masks.load(root, 16, 1, 1, seed=0)
    (root / "classes.json").write_text("{not json")
    with pytest.raises(masks.DatasetError, match="classes.json: cannot read"):
        masks.load(root, 16, 1, 1, seed=0)
