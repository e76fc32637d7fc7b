"""Deterministic segmentation scenes: the detection task's scenes with a class per pixel.

Each scene is ``hwnas.tasks.detection.scenes.render_scene``'s (same photographs, digits, clutter,
noise and held-out pools, so no test digit or background is seen in training); its per-digit ink
masks (alpha >= ``INK_THRESHOLD``) are painted into one class map in pasting order, so where two
digits overlap the later one, drawn on top, wins. Clutter (strokes, arcs, blobs, digit fragments)
is background: segmenting it is the task's hard part, as finding digits among it is detection's.

Written VOC-style (read back by ``hwnas.tasks.segmentation.masks``)::

    out/classes.json            {"classes": ["background", "digit"]} or background + "0".."9"
    out/<split>/images/<id>.png the scene, as detection writes it ("L", or "RGB" for channels 3)
    out/<split>/masks/<id>.png  "L" uint8: 0 background, k class id (presence: 1; digits: d + 1)
    out/stats.json              per split: scenes, empty share, foreground pixel share + spread
    out/contact_sheet.png       training scenes with their masks overlaid in colour

``<id>`` is the scene's index, ``{i:06d}``. The same config gives byte-identical files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from hwnas.files import atomic_dir, write_json
from hwnas.tasks.detection import scenes as det
from hwnas.tasks.detection.scenes import SPLITS, Scene, SceneConfig, Sources

# overlay colours, class id k -> PALETTE[(k - 1) % 10]: tab10, distinct on gray photographs
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


class SegmentationScenes(SceneConfig):
    """The detection generator's knobs, unchanged (extra keys forbidden, frozen): a subclass so
    that ``render_scene`` takes it as it is. ``classes: presence`` gives one foreground class
    (``digit``), ``classes: digits`` ten (``0``..``9``)."""

    def class_names(self) -> list[str]:
        """Mask id ``k`` is ``class_names()[k]``; id 0 is the background."""
        return ["background"] + [c["name"] for c in self.categories()]

    @property
    def foreground_classes(self) -> int:
        """The ``classes`` argument of ``masks.load``: foreground ids are 1..this."""
        return len(self.categories())


def class_map(scene: Scene) -> np.ndarray:
    """uint8 H,W: 0 background, ``label + 1`` on each digit's ink; later digits overwrite
    earlier ones (they are drawn over them)."""
    out = np.zeros(scene.image.shape[:2], np.uint8)
    for mask, label in zip(scene.masks, scene.labels.tolist()):
        out[mask] = label + 1
    return out


def render(config: SegmentationScenes, sources: Sources, split: str,
           index: int) -> tuple[np.ndarray, np.ndarray]:
    """Scene ``index`` of ``split``: its image (uint8 H,W or H,W,3) and class map (uint8 H,W)."""
    scene = det.render_scene(config, sources, split, index)
    return scene.image, class_map(scene)


def _spread(v: np.ndarray) -> dict | None:
    if not len(v):
        return None
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
            "median": float(np.median(v)), "max": float(v.max())}


def split_stats(maps: list[np.ndarray], names: list[str]) -> dict:
    """Scenes, empty share, per-scene foreground pixel share (mean and spread) and each class's
    share of all pixels (for class weights)."""
    fg = np.array([float((m > 0).mean()) for m in maps])
    pixels = (np.sum([np.bincount(m.ravel(), minlength=len(names)) for m in maps], axis=0)
              if maps else np.zeros(len(names), np.int64))
    total = max(1, int(pixels.sum()))
    return {"scenes": len(maps),
            "empty_share": float((fg == 0).mean()) if len(maps) else 0.0,
            "foreground_share": _spread(fg),
            "class_pixel_share": {n: float(c) / total for n, c in zip(names, pixels.tolist())}}


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """uint8 H,W,3: the image in RGB with each class's pixels blended towards its colour."""
    rgb = np.asarray(Image.fromarray(image).convert("RGB"), np.float32)
    colours = np.array([(0, 0, 0), *PALETTE], np.float32)
    ids = np.where(mask > 0, (mask.astype(np.int64) - 1) % len(PALETTE) + 1, 0)
    a = np.where(mask > 0, alpha, 0.0)[..., None]
    return np.rint(rgb * (1 - a) + colours[ids] * a).astype(np.uint8)


def contact_sheet(images: list[np.ndarray], maps: list[np.ndarray], path: str | Path,
                  cols: int = 6, zoom: int = 2) -> None:
    """A grid PNG of scenes with their masks overlaid in colour."""
    h, w = images[0].shape[:2]
    rows = -(-len(images) // cols)
    sheet = Image.new("RGB", (cols * (w * zoom + 4), rows * (h * zoom + 4)), "white")
    for i, (image, mask) in enumerate(zip(images, maps)):
        tile = Image.fromarray(overlay(image, mask)).resize((w * zoom, h * zoom), Image.NEAREST)
        sheet.paste(tile, ((i % cols) * (w * zoom + 4) + 2, (i // cols) * (h * zoom + 4) + 2))
    sheet.save(path, format="PNG")


def generate(config: SegmentationScenes, out: str | Path, sheet_scenes: int = 24) -> dict:
    """Write every split under ``out`` (replaced whole, atomically) and return the statistics
    (also written to ``out/stats.json``)."""
    sources = det.load_sources(config)
    names = config.class_names()
    stats = {}
    with atomic_dir(out) as tmp:
        write_json(tmp / "classes.json", {"classes": names})
        for split in SPLITS:
            images_dir, masks_dir = tmp / split / "images", tmp / split / "masks"
            images_dir.mkdir(parents=True)
            masks_dir.mkdir()
            maps, shown = [], []
            for i in range(getattr(config.counts, split)):
                image, mask = render(config, sources, split, i)
                Image.fromarray(image).save(images_dir / f"{i:06d}.png", format="PNG")
                Image.fromarray(mask).save(masks_dir / f"{i:06d}.png", format="PNG")
                maps.append(mask)
                if split == "train" and i < sheet_scenes:
                    shown.append(image)
            stats[split] = split_stats(maps, names)
            if split == "train" and shown:
                contact_sheet(shown, maps[:len(shown)], tmp / "contact_sheet.png")
        write_json(tmp / "stats.json", stats)
    return stats
