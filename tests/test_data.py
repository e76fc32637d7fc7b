"""Datasets: built-in digits, seeded splits, resolution, user data and its errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hwnas.data import DataError, Loader, draw_shifts, fit_resolution, load_dataset, random_shift


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", resolution=16, seed=0)


def test_digits_splits_are_fixed_stratified_and_disjoint(digits):
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1259, 179, 359)
    assert digits.train.x.shape[1:] == (1, 16, 16) and digits.classes == 10
    again = load_dataset("digits", resolution=16, seed=0)
    assert torch.equal(again.test.x, digits.test.x) and torch.equal(again.test.y, digits.test.y)
    other = load_dataset("digits", resolution=16, seed=1)
    assert not torch.equal(other.test.y, digits.test.y)
    assert set(np.bincount(digits.test.y.numpy())) <= {35, 36, 37}  # stratified
    # normalized with the training split's statistics
    assert abs(float(digits.train.x.mean())) < 1e-4 and abs(float(digits.train.x.std()) - 1) < 1e-3


def test_fit_resolution_pads_small_steps_and_resizes_large_ones():
    x = torch.ones(2, 1, 28, 28)
    padded = fit_resolution(x, 32)
    assert padded.shape[-2:] == (32, 32) and padded[0, 0, 0, 0] == 0 and padded[0, 0, 2, 2] == 1
    assert fit_resolution(torch.ones(1, 1, 8, 8), 32).shape[-2:] == (32, 32)
    assert fit_resolution(x, 14).shape[-2:] == (14, 14)


def test_loader_is_seeded_and_shift_keeps_shape(digits):
    a = [y for _, y in Loader(digits.train, 64, shuffle=True, max_shift=2, seed=3)]
    b = [y for _, y in Loader(digits.train, 64, shuffle=True, max_shift=2, seed=3)]
    assert all(torch.equal(u, v) for u, v in zip(a, b)) and len(a) == 20
    loader = Loader(digits.train, 64, shuffle=True, seed=3, drop_last=True)
    assert len(loader) == 1259 // 64
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    shifted = random_shift(x, 1, draw_shifts(1, 1, torch.Generator().manual_seed(0)))
    assert shifted.shape == x.shape


def test_npz_channels_last_and_uint8(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (40, 12, 12, 3), dtype=np.uint8)
    y = np.repeat([0, 1, 2, 3], 10)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    s = load_dataset(str(tmp_path / "d.npz"), resolution=12, seed=0)
    assert s.channels == 3 and s.classes == 4 and s.train.x.shape[1:] == (3, 12, 12)
    assert len(s.train) + len(s.val) + len(s.test) == 40


def test_image_folder(tmp_path):
    from PIL import Image

    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(5):
            Image.fromarray(np.full((10, 14), 40 * i, np.uint8)).save(tmp_path / c / f"{i}.png")
    s = load_dataset(str(tmp_path), resolution=8, seed=0, val_fraction=0.2, test_fraction=0.2)
    assert s.classes == 2 and s.channels == 1 and s.train.x.shape[1:] == (1, 8, 8)


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("make, message", [
    (lambda p: _npz(p / "a.npz", x=np.zeros((4, 8, 8))), "missing array 'y'"),
    (lambda p: _npz(p / "a.npz", x=np.zeros((4, 8, 8)), y=np.zeros(3, int)), "4 images but 3 labels"),
    (lambda p: _npz(p / "a.npz", x=np.zeros((4, 8, 8)), y=np.array([0, 1, 0.5, 1])), "integers"),
    (lambda p: _npz(p / "a.npz", x=np.zeros((4, 8, 8)), y=np.array([0, 2, 0, 2])), r"missing \[1\]"),
    (lambda p: _npz(p / "a.npz", x=np.zeros((0, 8, 8)), y=np.zeros(0, int)), "empty"),
    (lambda p: (p / "a.npz").write_bytes(b"not a zip") and str(p / "a.npz"), "cannot read"),
    (lambda p: str(p), "no class subfolders"),
    (lambda p: (p / "one").mkdir() or str(p), "has no images"),
    (lambda p: ((p / "one").mkdir(), (p / "one" / "x.png").write_bytes(b"junk"))
     and str(p), "x.png: cannot read image"),
    (lambda p: str(p / "nothing-here"), "no such dataset"),
])
def test_bad_data_is_a_clear_error_naming_the_path(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(DataError, match=message) as err:
        load_dataset(path, resolution=8)
    assert str(tmp_path) in str(err.value)
