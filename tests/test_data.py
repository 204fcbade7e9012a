"""Resize, slice, split and degrade: exact sizes, full coverage, no leakage, determinism."""

import hashlib

import numpy as np
import pytest

from sharpkd.data.prepare import (grid_boxes, group_of, report_size, resize_image, slice_image, spaced_boxes,
                          split_sources)
from sharpkd.data.degrade import degrade, low_size
from sharpkd.errors import SharpkdError
from sharpkd.data.shards import read_split, write_split


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
        assert {k.split("@")[0] for k in crops} == {"x.png"}


@pytest.mark.parametrize("h,w,rows,cols", [(1080, 1920, 5, 6), (720, 1280, 5, 6), (1920, 1080, 5, 6), (128, 232, 3, 2),
                                           (300, 300, 1, 1)])
def test_spaced_crops_have_the_asked_size_and_span_the_image(h, w, rows, cols):
    boxes = spaced_boxes(h, w, rows, cols, 128, 232)
    assert len(boxes) == len(set(boxes)) == (rows * cols if (h, w) != (128, 232) else 1)
    assert all(b - t == 128 and r - l == 232 and t >= 0 and l >= 0 and b <= h and r <= w for t, l, b, r in boxes)
    if rows > 1 and cols > 1:  # first and last crops touch the image's edges
        assert boxes[0][:2] == (0, 0) and boxes[-1][2:] == (h, w)
    img = rand_img(h, w)
    crops = slice_image("x.png", img, rows, cols, 16, 128, 232)
    assert len(crops) == len(boxes)
    if len(boxes) > 1:
        t, l, b, r = boxes[1]
        assert np.array_equal(crops["x.png@r0c1"], img[t:b, l:r])


def test_spaced_crop_of_one_is_centred_and_too_large_is_refused():
    assert spaced_boxes(100, 200, 1, 1, 50, 100) == [(25, 50, 75, 150)]
    with pytest.raises(SharpkdError, match="tiny.png.*smaller than one"):
        slice_image("tiny.png", rand_img(100, 200), 2, 2, 16, 128, 232)
    with pytest.raises(SharpkdError, match="min_size"):
        slice_image("x.png", rand_img(100, 200), 2, 2, 16, 8, 100)


@pytest.mark.parametrize("value,expected", [([], None), (None, None), ([464, 256], (464, 256))])
def test_report_size(value, expected):
    assert report_size(value) == expected


@pytest.mark.parametrize("bad", [[464], [464, 0], "464x256", [464.0, 256], [True, 256]])
def test_report_size_rejects_bad_values(bad):
    with pytest.raises(SharpkdError, match="report_size"):
        report_size(bad)


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


def test_split_names_lists_the_splits_with_shards(tmp_path):
    from sharpkd.data.shards import split_names, write_split

    assert split_names(tmp_path) == []
    write_split(tmp_path, "val_report", {"a": rand_img(4, 4)})
    write_split(tmp_path, "train", {"a": rand_img(4, 4)}, max_bytes=1)
    write_split(tmp_path, "train", {"a": rand_img(4, 4), "b": rand_img(4, 4)}, max_bytes=1)
    assert split_names(tmp_path) == ["train", "val_report"]
