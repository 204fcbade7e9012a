"""Resize, slice, split and degrade: exact sizes, full coverage, no leakage, determinism."""

import hashlib

import numpy as np
import pytest

from sharpkd.data import grid_boxes, group_of, resize_image, slice_image, source_of, split_sources
from sharpkd.degrade import degrade, low_size
from sharpkd.errors import SharpkdError
from sharpkd.shards import read_split, write_split


def rand_img(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("h,w", [(37, 23), (64, 48), (1, 1), (255, 257), (128, 232)])
@pytest.mark.parametrize("scale", [0.6, 0.5, 0.33])
def test_degrade_keeps_exact_size_and_is_deterministic(h, w, scale):
    img = rand_img(h, w)
    a, b = degrade(img, scale), degrade(img.copy(), scale)
    assert a.shape == img.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)


def test_degrade_loses_detail_but_keeps_flat_images():
    flat = np.full((40, 30, 3), 77, np.uint8)
    assert np.array_equal(degrade(flat), flat)
    noisy = rand_img(40, 30)
    assert not np.array_equal(degrade(noisy), noisy)


def test_low_size_rounds_and_rejects_bad_scale():
    assert low_size(464, 256, 0.6) == (278, 154)
    assert low_size(1, 1, 0.6) == (1, 1)
    with pytest.raises(ValueError):
        low_size(10, 10, 0)


@pytest.mark.parametrize("h,w,rows,cols", [(256, 464, 2, 2), (37, 23, 3, 2), (1080, 1920, 5, 5), (7, 7, 7, 7)])
def test_slices_cover_the_image_exactly_once(h, w, rows, cols):
    cover = np.zeros((h, w), int)
    for t, l, b, r in grid_boxes(h, w, rows, cols):
        cover[t:b, l:r] += 1
    assert (cover == 1).all()
    img = rand_img(h, w)
    if min(h // rows, w // cols) >= 1:
        crops = slice_image("x.png", img, rows, cols, min_size=1)
        assert len(crops) == rows * cols
        assert sum(c.shape[0] * c.shape[1] for c in crops.values()) == h * w
        assert {source_of(k) for k in crops} == {"x.png"}


def test_slice_rejects_images_smaller_than_a_crop():
    with pytest.raises(SharpkdError, match="smaller"):
        slice_image("tiny.png", rand_img(20, 20), 2, 2, min_size=16)


def test_resize_fixed_and_none():
    img = rand_img(300, 451)
    assert resize_image(img, "fixed", 464, 256).shape == (256, 464, 3)
    assert resize_image(img, "none") is img
    with pytest.raises(SharpkdError):
        resize_image(img, "stretch")


PATTERN = r"(GOPR\d+_\d+)|(motorcycle)_(?:left|right)"


@pytest.mark.parametrize("name,group", [
    ("kd_GOPR0384_11_00-000002.jpg", "GOPR0384_11"),
    ("kd_GOPR0384_11_05-004001.jpg", "GOPR0384_11"),
    ("motorcycle_left.png", "motorcycle"),
    ("astronaut.png", "astronaut.png"),
])
def test_groups(name, group):
    assert group_of(name, PATTERN) == group


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_split_leaks_no_source_and_no_group(seed):
    names = [f"kd_GOPR{s:04d}_11_00-{f:06d}.jpg" for s in range(5) for f in range(6)] + [f"photo{i}.jpg" for i in range(20)]
    split = split_sources(names, 0.2, seed, PATTERN)
    assert set(split.train).isdisjoint(split.val)
    assert sorted(split.train + split.val) == sorted(names)
    train_groups = {split.groups[n] for n in split.train}
    assert train_groups.isdisjoint({split.groups[n] for n in split.val})
    assert len(split.val) >= 10
    assert split_sources(names, 0.2, seed, PATTERN) == split  # seeded


def test_split_needs_two_groups():
    with pytest.raises(SharpkdError, match="at least 2"):
        split_sources(["motorcycle_left.png", "motorcycle_right.png"], 0.5, 0, PATTERN)


def test_shards_round_trip_and_same_bytes(tmp_path):
    imgs = {f"im{i}": rand_img(10 + i, 7, i) for i in range(5)}
    files = write_split(tmp_path, "train", imgs, max_bytes=600)
    assert len(files) > 1
    back = read_split(tmp_path, "train")
    assert list(back) == sorted(imgs) and all(np.array_equal(back[k], imgs[k]) for k in imgs)
    digest = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    again = write_split(tmp_path, "train", dict(reversed(list(imgs.items()))), max_bytes=600)
    assert [hashlib.sha256(f.read_bytes()).hexdigest() for f in again] == digest
    with pytest.raises(SharpkdError, match="lacks"):
        read_split(tmp_path, "train", ["nope"])
    with pytest.raises(SharpkdError, match="no shards"):
        read_split(tmp_path, "val")
