"""The one detection loader: a COCO ``instances.json`` + its images folder, checked before use.

Generated scenes (``hwnas.tasks.detection.scenes``) and user data both come through here.

- **Validated first, whole.** ``read_instances`` parses and checks every entry before any pixel
  is read, and ``load_coco`` checks that every image file exists before decoding one. Each
  problem is a ``DatasetError`` (a ``UserError``): one line naming the file and the entry, e.g.
  ``instances.json: annotations[17] (id 42): box [10, 5, 300, 20] extends outside image 3 (96x96)``.
  Refused: malformed JSON, missing keys or wrong types (pydantic), duplicate ids, an annotation
  whose image or category does not exist, a box with zero or negative size or outside its image
  (beyond ``BOX_TOLERANCE`` pixels), crowd annotations (``iscrowd: 1``: there are no ignore
  regions here), no annotations at all, a missing or unreadable image file, and a file whose
  size is not the ``width``/``height`` its entry says.
- **Any image size, letterboxed.** Each image is scaled by ``resolution / max(width, height)``
  (bilinear), centred on a black square of side ``resolution`` and its boxes scaled and shifted
  the same way, so user photos of any shape keep their aspect; an image already at the
  resolution (every generated scene) passes through unchanged, boxes exact.
- **Labels** are 0-based: label ``k`` is the k-th category in increasing COCO id.
- Images stay ``uint8`` (N,C,R,R; a quarter of the memory of float32): divide by 255 when
  batching. Images with no annotation are kept (empty scenes: boxes of shape (0, 4)).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hwnas.errors import UserError

BOX_TOLERANCE = 1e-3  # pixels a box may pass its image's edge by (float rounding in exports)


class DatasetError(UserError):
    """A detection dataset that cannot be used; one line naming the file and the entry."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class CocoImage(_Entry):
    id: int
    file_name: str = Field(min_length=1)
    width: int = Field(gt=0)
    height: int = Field(gt=0)


class CocoAnnotation(_Entry):
    id: int
    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]  # x, y, width, height in pixels
    iscrowd: int = 0

    @field_validator("bbox", mode="before")
    @classmethod
    def _four(cls, v):
        if not isinstance(v, (list, tuple)) or len(v) != 4:
            raise ValueError(f"must be [x, y, width, height], got {json.dumps(v)}")
        return v


class CocoCategory(_Entry):
    id: int
    name: str


class CocoInstances(_Entry):
    images: list[CocoImage]
    annotations: list[CocoAnnotation]
    categories: list[CocoCategory] = Field(min_length=1)


@dataclass(frozen=True)
class DetectionData:
    images: torch.Tensor  # uint8 N,C,R,R (letterboxed)
    targets: list[dict[str, torch.Tensor]]  # per image: boxes float32 [K,4] xyxy, labels int64 [K]
    image_ids: list[int]
    files: list[str]
    categories: list[str]  # names; label k is categories[k]
    category_ids: list[int]  # the COCO id of each label
    resolution: int

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _where(raw: dict, loc: tuple) -> str:
    """``annotations[17] (id 42): bbox`` from a pydantic error location."""
    if not loc:
        return "top level"
    if len(loc) == 1:
        return str(loc[0])
    section, index, rest = loc[0], loc[1], loc[2:]
    entry = f"{section}[{index}]"
    try:
        entry += f" (id {raw[section][index]['id']})"
    except (KeyError, IndexError, TypeError):
        pass
    field = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in rest).replace(".[", "[")
    return f"{entry}: {field}" if field else entry


def _schema_error(path: Path, raw, err: ValidationError) -> DatasetError:
    first = err.errors()[0]
    loc = tuple(first["loc"])
    if first["type"] == "missing" and isinstance(loc[-1], str):
        where = _where(raw, loc[:-1])
        return DatasetError(f"{path}: {where + ': ' if loc[:-1] else ''}missing key '{loc[-1]}'")
    return DatasetError(f"{path}: {_where(raw, loc)}: {first['msg']}")


def _duplicates(path: Path, section: str, ids: list[int]) -> None:
    seen: dict[int, int] = {}
    for i, id_ in enumerate(ids):
        if id_ in seen:
            raise DatasetError(f"{path}: {section}[{i}] (id {id_}): duplicate id "
                               f"(also {section}[{seen[id_]}])")
        seen[id_] = i


def read_instances(path: str | Path) -> CocoInstances:
    """Parse and check a COCO instances file (no image is read)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: not valid JSON: {err.msg} at line {err.lineno} "
                           f"column {err.colno}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read: {err}") from None
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: expected a JSON object with images, annotations and "
                           f"categories, got a {type(raw).__name__}")
    try:
        coco = CocoInstances.model_validate(raw)
    except ValidationError as err:
        raise _schema_error(path, raw, err) from None
    _duplicates(path, "images", [im.id for im in coco.images])
    _duplicates(path, "categories", [c.id for c in coco.categories])
    _duplicates(path, "annotations", [a.id for a in coco.annotations])
    images = {im.id: im for im in coco.images}
    category_ids = sorted(c.id for c in coco.categories)
    for i, a in enumerate(coco.annotations):
        entry = f"{path}: annotations[{i}] (id {a.id})"
        box = "[" + ", ".join(_num(v) for v in a.bbox) + "]"
        if a.image_id not in images:
            raise DatasetError(f"{entry}: image_id {a.image_id} is not in images")
        if a.category_id not in category_ids:
            raise DatasetError(f"{entry}: category_id {a.category_id} is not in categories "
                               f"(ids {', '.join(map(str, category_ids[:12]))}"
                               f"{', ...' if len(category_ids) > 12 else ''})")
        if a.iscrowd:
            raise DatasetError(f"{entry}: iscrowd {a.iscrowd} (crowd regions are not supported; "
                               f"give one box per object)")
        x, y, w, h = a.bbox
        if w <= 0 or h <= 0:
            raise DatasetError(f"{entry}: box {box} has zero or negative size "
                               f"(width {_num(w)}, height {_num(h)})")
        im = images[a.image_id]
        if (x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + w > im.width + BOX_TOLERANCE
                or y + h > im.height + BOX_TOLERANCE):
            raise DatasetError(f"{entry}: box {box} extends outside image {im.id} "
                               f"({im.width}x{im.height})")
    if not coco.annotations:
        raise DatasetError(f"{path}: no annotations (a detection dataset needs at least one box)")
    return coco


def letterbox(image, resolution: int) -> tuple[np.ndarray, float, float, int, int]:
    """A PIL image scaled to fit ``resolution`` (longer side) and centred on black; returns the
    array (R,R,C uint8) and the transform: x' = x * sx + dx, y' = y * sy + dy."""
    from PIL import Image

    w, h = image.size
    scale = resolution / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), Image.BILINEAR)
    dx, dy = (resolution - nw) // 2, (resolution - nh) // 2
    out = np.zeros((resolution, resolution, len(image.getbands())), np.uint8)
    out[dy:dy + nh, dx:dx + nw] = np.asarray(image).reshape(nh, nw, -1)
    return out, nw / w, nh / h, dx, dy


def load_coco(instances: str | Path, images_dir: str | Path | None = None, resolution: int = 96,
              channels: int = 1) -> DetectionData:
    """Images and targets of a COCO dataset, letterboxed to ``resolution`` (``channels`` 1:
    grayscale, 3: RGB). ``images_dir`` defaults to ``images/`` beside the instances file."""
    from PIL import Image, UnidentifiedImageError

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    instances = Path(instances)
    images_dir = Path(images_dir) if images_dir is not None else instances.parent / "images"
    coco = read_instances(instances)
    for i, im in enumerate(coco.images):
        if not (images_dir / im.file_name).is_file():
            raise DatasetError(f"{instances}: images[{i}] (id {im.id}): file "
                               f"{images_dir / im.file_name} not found")
    category_ids = sorted(c.id for c in coco.categories)
    names = {c.id: c.name for c in coco.categories}
    label_of = {cid: k for k, cid in enumerate(category_ids)}
    per_image: dict[int, list] = {im.id: [] for im in coco.images}
    for a in coco.annotations:
        per_image[a.image_id].append(a)
    arrays, targets = [], []
    for i, im in enumerate(coco.images):
        file = images_dir / im.file_name
        try:
            with Image.open(file) as opened:
                pil = opened.convert("L" if channels == 1 else "RGB")
        except (OSError, UnidentifiedImageError) as err:
            raise DatasetError(f"{instances}: images[{i}] (id {im.id}): cannot read {file}: "
                               f"{err}") from None
        if pil.size != (im.width, im.height):
            raise DatasetError(f"{instances}: images[{i}] (id {im.id}): {file} is "
                               f"{pil.size[0]}x{pil.size[1]}, the entry says "
                               f"{im.width}x{im.height}")
        array, sx, sy, dx, dy = letterbox(pil, resolution)
        arrays.append(array)
        anns = per_image[im.id]
        xywh = np.array([a.bbox for a in anns], np.float64).reshape(-1, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        xyxy = np.clip(xyxy, 0, [im.width, im.height, im.width, im.height])
        xyxy = xyxy * [sx, sy, sx, sy] + [dx, dy, dx, dy]
        targets.append({"boxes": torch.tensor(xyxy, dtype=torch.float32),
                        "labels": torch.tensor([label_of[a.category_id] for a in anns],
                                               dtype=torch.int64)})
    images = torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).copy())
    return DetectionData(images=images, targets=targets, image_ids=[im.id for im in coco.images],
                         files=[im.file_name for im in coco.images],
                         categories=[names[c] for c in category_ids], category_ids=category_ids,
                         resolution=resolution)


def load_split(folder: str | Path, resolution: int = 96, channels: int = 1) -> DetectionData:
    """A split folder as the scene generator writes it: ``instances.json`` + ``images/``."""
    return load_coco(Path(folder) / "instances.json", Path(folder) / "images", resolution, channels)
