"""The one segmentation loader: VOC-style images + class-index masks, checked before use.

Generated scenes (``hwnas.tasks.segmentation.scenes``) and user data both come through here.
A split folder holds ``images/`` and ``masks/``; image ``images/<stem>.<ext>`` (any of
``hwnas.data.IMAGE_SUFFIXES``) pairs with ``masks/<stem>.png``. A root holds ``train/``, ``val/``
and ``test/`` split folders and, optionally, ``classes.json`` (``{"classes": [...]}``, the
background first), which must then agree with the declared class count.

- **Masks** are lossless PNGs, single-channel ``"L"`` or palette ``"P"`` (VOC's), whose pixel
  values are class ids: 0 background, 1..``classes`` the foreground classes. **255 is "ignore"**
  as in VOC (object boundaries, unlabelled regions): it is kept as ``IGNORE`` in ``y``, so the
  loss takes ``ignore_index=IGNORE`` and metrics skip those pixels. Any other id above
  ``classes`` is refused.
- **Any image size, letterboxed** (as ``hwnas.tasks.detection.coco``): each image is scaled by
  ``resolution / max(width, height)`` (bilinear) and centred on black; its mask the same way with
  NEAREST (class ids are never blended), the padding marked ``IGNORE`` (it is not part of the
  scene, so it counts neither as background nor in the metrics). Aspect is kept, as detection
  keeps it; a pair already at the resolution (every generated scene) passes through unchanged.
- **Validated first, whole.** Every problem is a ``DatasetError`` (a ``UserError``): one line
  naming the file. Refused: a missing ``images/`` or ``masks/`` folder, no images, an image
  without a mask or a mask without an image, two images with the same stem, a mask that is not a
  PNG, an unreadable or corrupt file, a mask that is not ``"L"``/``"P"``, a mask whose size
  differs from its image's, a class id above the declared ``classes`` (255 aside). Nothing is
  returned until every pair of a split has passed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hwnas.data import IMAGE_SUFFIXES, Splits, TensorData
from hwnas.errors import one_line
from hwnas.tasks.detection import coco
from hwnas.tasks.detection.coco import letterbox

SPLITS = ("train", "val", "test")
IGNORE = 255  # VOC's "void" label: not scored, not learned
MASK_MODES = ("L", "P")


class DatasetError(coco.DatasetError):
    """A segmentation dataset that cannot be used; one line naming the file. A subclass of the
    detection task's, so either task's handler catches it (both are ``UserError``)."""


@dataclass(frozen=True)
class SegmentationData:
    x: torch.Tensor  # float32 N,C,R,R in [0, 1] (letterboxed)
    y: torch.Tensor  # int64 N,R,R: 0 background, 1..classes, IGNORE
    files: list[str]  # image file names, in order (sorted by stem)
    classes: int  # foreground classes (mask ids 1..classes)
    resolution: int

    def __len__(self) -> int:
        return len(self.files)

    @property
    def channels(self) -> int:
        return int(self.x.shape[1])


def _files(folder: Path, what: str) -> dict[str, Path]:
    """stem -> file for the image files of ``folder`` (hidden and other files ignored)."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder (a split needs images/ and masks/ "
                           f"folders with the same file stems)")
    found: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or not f.is_file() or f.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if f.stem in found:
            raise DatasetError(f"{f}: two {what} named {f.stem!r} (also {found[f.stem].name})")
        found[f.stem] = f
    return found


def pairs(folder: str | Path) -> list[tuple[Path, Path]]:
    """(image, mask) files of a split folder, sorted by stem; pairing checked, nothing read."""
    folder = Path(folder)
    images = _files(folder / "images", "images")
    masks = _files(folder / "masks", "masks")
    if not images:
        raise DatasetError(f"{folder / 'images'}: no images ({', '.join(IMAGE_SUFFIXES)})")
    for stem, image in images.items():
        if stem not in masks:
            raise DatasetError(f"{image}: no mask for this image (expected "
                               f"{folder / 'masks' / (stem + '.png')})")
    for stem, mask in masks.items():
        if stem not in images:
            raise DatasetError(f"{mask}: no image for this mask (expected "
                               f"{folder / 'images' / stem}.<ext>)")
        if mask.suffix.lower() != ".png":
            # lossy or colour formats blend class ids at edges
            raise DatasetError(f"{mask}: masks must be PNG files of class ids, got "
                               f"{mask.suffix}")
    return [(images[s], masks[s]) for s in sorted(images)]


def _open(path: Path):
    """A fully decoded PIL image, or a DatasetError naming the file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not later
            return im.copy()
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, zlib errors...
        raise DatasetError(f"{path}: cannot read image: {one_line(err)}") from None


def letterbox_mask(mask: np.ndarray, resolution: int) -> np.ndarray:
    """A class map (uint8 H,W) placed as ``coco.letterbox`` places its image: NEAREST scaling,
    the padding ``IGNORE``."""
    from PIL import Image

    h, w = mask.shape
    scale = resolution / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) != (w, h):
        mask = np.asarray(Image.fromarray(mask).resize((nw, nh), Image.NEAREST))
    dx, dy = (resolution - nw) // 2, (resolution - nh) // 2
    out = np.full((resolution, resolution), IGNORE, np.uint8)
    out[dy:dy + nh, dx:dx + nw] = mask
    return out


def read_pair(image_path: Path, mask_path: Path, resolution: int, channels: int,
              classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One checked pair, letterboxed: image uint8 R,R,C and mask uint8 R,R."""
    image, mask = _open(image_path), _open(mask_path)
    if mask.mode not in MASK_MODES:
        raise DatasetError(f"{mask_path}: mask mode {mask.mode!r}; masks must be single-channel "
                           f"('L') or palette ('P') PNGs whose values are class ids")
    if mask.size != image.size:
        raise DatasetError(f"{mask_path}: mask is {mask.size[0]}x{mask.size[1]}, its image "
                           f"{image_path.name} is {image.size[0]}x{image.size[1]}")
    ids = np.asarray(mask, np.uint8)  # a "P" image's array is its palette indices
    bad = np.unique(ids[(ids > classes) & (ids != IGNORE)])
    if len(bad):
        raise DatasetError(f"{mask_path}: class id {int(bad[-1])} above the declared {classes} "
                           f"foreground class{'es' if classes != 1 else ''} (ids 0..{classes}, "
                           f"{IGNORE} = ignore)")
    array, *_ = letterbox(image.convert("L" if channels == 1 else "RGB"), resolution)
    return array, letterbox_mask(ids, resolution)


def load_split(folder: str | Path, resolution: int = 96, channels: int = 1,
               classes: int = 1) -> SegmentationData:
    """A split folder (``images/`` + ``masks/``), every pair checked before anything is
    returned; ``classes`` counts the foreground classes (mask ids 0..classes, and ``IGNORE``)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if classes < 1:
        raise ValueError(f"classes (foreground) must be at least 1, got {classes}")
    files = pairs(folder)
    x = np.empty((len(files), resolution, resolution, channels), np.uint8)
    y = np.empty((len(files), resolution, resolution), np.uint8)
    for i, (image_path, mask_path) in enumerate(files):
        x[i], y[i] = read_pair(image_path, mask_path, resolution, channels, classes)
    return SegmentationData(
        x=torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0),
        y=torch.from_numpy(y.astype(np.int64)),
        files=[image.name for image, _ in files], classes=classes, resolution=resolution)


def read_classes(root: str | Path) -> list[str] | None:
    """The class names of ``root/classes.json`` (background first), or None without one."""
    path = Path(root) / "classes.json"
    if not path.exists():
        return None
    try:
        names = json.loads(path.read_text()).get("classes")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as err:
        raise DatasetError(f"{path}: cannot read: {one_line(err)}") from None
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str)
                                                               for n in names):
        raise DatasetError(f"{path}: expected {{\"classes\": [\"background\", ...]}} with at "
                           f"least two names")
    return names


def load(folder: str | Path, resolution: int = 96, channels: int = 1, classes: int = 1,
         seed: int = 0) -> Splits:
    """``folder/train``, ``folder/val`` and ``folder/test``, each checked whole before any is
    returned, as the generic ``Loader`` batches them: ``x`` normalized with the training split's
    mean and std (as detection), ``y`` the masks (int64 N,R,R). ``Splits.classes`` is
    ``classes``, the foreground classes (the head's ``classes``; its logits have one more,
    background). ``seed`` is unused: the split is the folders'."""
    del seed
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder (a root with train/, val/ and test/ "
                           f"folders, each images/ + masks/; hwnas.tasks.segmentation.scenes "
                           f"writes one)")
    names = read_classes(root)
    if names is not None and len(names) - 1 != classes:
        raise DatasetError(f"{root / 'classes.json'}: {len(names) - 1} foreground classes "
                           f"({', '.join(names[1:12])}{', ...' if len(names) > 12 else ''}), "
                           f"the task declares {classes}")
    parts = {s: load_split(root / s, resolution, channels, classes) for s in SPLITS}
    mean, std = float(parts["train"].x.mean()), float(parts["train"].x.std()) or 1.0
    data = {s: TensorData((p.x - mean) / std, p.y) for s, p in parts.items()}
    return Splits(name=str(root), **data, classes=classes, channels=channels,
                  resolution=resolution, mean=mean, std=std)
