"""Data preparation: resize, slice into crops, split by source image.

Everything here is a pure function of its inputs and params (seeded where random), so the
data stages write the same bytes for the same params.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from PIL import Image


from sharpkd.errors import SharpkdError

RESIZE_MODES = ("fixed", "none")


def resize_image(img: np.ndarray, mode: str = "fixed", width: int = 464, height: int = 256) -> np.ndarray:
    """Resize an HxWx3 uint8 image for the pipeline.

    ``fixed``: to exactly ``width`` x ``height`` (the report's 464x256; aspect ratio is not kept,
    as in the report) with Pillow's Lanczos filter, which is antialiased when shrinking.
    ``none``: keep the native size.
    """
    if mode == "none":
        return img
    if mode != "fixed":
        raise SharpkdError(f"resize.mode must be one of {RESIZE_MODES}, got {mode!r}")
    if width < 1 or height < 1:
        raise SharpkdError(f"resize.width/height must be positive, got {width}x{height}")
    if img.shape[1] == width and img.shape[0] == height:
        return img
    return np.asarray(Image.fromarray(img).resize((width, height), Image.LANCZOS))


def grid_boxes(height: int, width: int, rows: int, cols: int) -> list[tuple[int, int, int, int]]:
    """Boxes (top, left, bottom, right) of a rows x cols grid that tile the image exactly.

    Boundaries are ``round(i * size / n)``, so crops differ by at most one pixel and every pixel
    belongs to exactly one crop, odd sizes included.
    """
    if rows < 1 or cols < 1:
        raise SharpkdError(f"slice.rows/cols must be >= 1, got {rows}x{cols}")
    if height < rows or width < cols:
        raise SharpkdError(f"a {width}x{height} image is too small for a {rows}x{cols} grid")
    ys = [round(i * height / rows) for i in range(rows + 1)]
    xs = [round(j * width / cols) for j in range(cols + 1)]
    return [(ys[i], xs[j], ys[i + 1], xs[j + 1]) for i in range(rows) for j in range(cols)]


def spaced_boxes(height: int, width: int, rows: int, cols: int, crop_height: int,
                 crop_width: int) -> list[tuple[int, int, int, int]]:
    """Boxes (top, left, bottom, right) of rows x cols crops of exactly ``crop_height`` x
    ``crop_width``, evenly spaced from edge to edge: tops ``round(i * (height - crop_height) / (rows - 1))``
    (centred when ``rows`` is 1), lefts likewise, row-major.  Crops overlap when the image is too
    small to hold them side by side and leave gaps when it is larger, so images of any size give
    rows x cols same-size crops (the report's 232x128 quadrants from 1920x1080 frames); positions
    that coincide (an image hardly larger than a crop) are taken once.
    """
    if rows < 1 or cols < 1:
        raise SharpkdError(f"slice.rows/cols must be >= 1, got {rows}x{cols}")
    if crop_height < 1 or crop_width < 1:
        raise SharpkdError(f"slice.crop_height/crop_width must be positive, got {crop_width}x{crop_height}")
    if height < crop_height or width < crop_width:
        raise SharpkdError(f"a {width}x{height} image is smaller than one {crop_width}x{crop_height} crop")

    def starts(size: int, crop: int, n: int) -> list[int]:  # unique: no crop is taken twice
        return [(size - crop) // 2] if n == 1 else sorted({round(i * (size - crop) / (n - 1)) for i in range(n)})

    return [(t, l, t + crop_height, l + crop_width)
            for t in starts(height, crop_height, rows) for l in starts(width, crop_width, cols)]


def crop_boxes(name: str, height: int, width: int, rows: int = 2, cols: int = 2, min_size: int = 16,
               crop_height: int = 0, crop_width: int = 0) -> dict[str, tuple[int, int, int, int]]:
    """The crops :func:`slice_image` cuts from a ``height`` x ``width`` image named ``name``:
    ``{"<name>@r<i>c<j>": (top, left, bottom, right)}``, from its size alone (the same checks and
    errors), so a stage can plan the crops of images it has not read yet."""
    if crop_height or crop_width:
        if min(crop_height, crop_width) < min_size:
            raise SharpkdError(f"slice.crop_height/crop_width {crop_width}x{crop_height} is below min_size {min_size}")
        try:
            boxes = spaced_boxes(height, width, rows, cols, crop_height, crop_width)
        except SharpkdError as exc:
            raise SharpkdError(f"{name}: {exc}") from None
    else:
        if height // rows < min_size or width // cols < min_size:
            raise SharpkdError(f"{name}: {width}x{height} is smaller than a {rows}x{cols} grid of {min_size}px crops")
        boxes = grid_boxes(height, width, rows, cols)
    tops, lefts = sorted({b[0] for b in boxes}), sorted({b[1] for b in boxes})
    return {f"{name}@r{tops.index(t)}c{lefts.index(l)}": (t, l, b, r) for t, l, b, r in boxes}


def slice_image(name: str, img: np.ndarray, rows: int = 2, cols: int = 2, min_size: int = 16,
                crop_height: int = 0, crop_width: int = 0) -> dict[str, np.ndarray]:
    """Crop ``img`` into rows x cols crops: ``{"<name>@r<i>c<j>": crop}``.

    With ``crop_height``/``crop_width`` 0 the crops are the cells of a grid that tiles the image
    (:func:`grid_boxes`, the report's quadrants for 2x2); otherwise they are fixed-size crops
    evenly spaced over the image (:func:`spaced_boxes`).  Raises SharpkdError if a crop would be
    smaller than ``min_size`` on a side or the image cannot hold one fixed-size crop (the caller
    skips and counts such images).  The boxes: :func:`crop_boxes`.
    """
    h, w = img.shape[:2]
    boxes = crop_boxes(name, h, w, rows, cols, min_size, crop_height, crop_width)
    return {key: np.ascontiguousarray(img[t:b, l:r]) for key, (t, l, b, r) in boxes.items()}


def group_of(name: str, pattern: str) -> str:
    """The group key of a source image: the first non-empty capture group of ``pattern``
    (``re.search``), or the name itself when the pattern does not match.

    Near-duplicate images (consecutive video frames of one scene, a stereo pair) share a group
    and therefore a split.
    """
    if pattern:
        m = re.search(pattern, name)
        if m:
            for g in m.groups() or (m.group(0),):
                if g:
                    return g
    return name


@dataclass(frozen=True)
class Split:
    train: list[str]
    val: list[str]
    groups: dict[str, str]

    def as_dict(self) -> dict:
        return {"train": self.train, "val": self.val, "groups": self.groups,
                "n_train": len(self.train), "n_val": len(self.val),
                "n_groups_train": len({self.groups[n] for n in self.train}),
                "n_groups_val": len({self.groups[n] for n in self.val})}


def split_sources(names: list[str], val_fraction: float, seed: int, group_pattern: str = "") -> Split:
    """Split source images into train/validation by group, seeded.

    Groups are shuffled with ``numpy.random.default_rng(seed)`` and moved to validation until it
    holds at least ``round(val_fraction * len(names))`` images (at least one group, and at least
    one group stays in training).  All images of a group land on the same side, so no crop and
    no near-duplicate of a validation image is ever trained on.
    """
    if not 0 < val_fraction < 1:
        raise SharpkdError(f"slice.val_fraction must be in (0, 1), got {val_fraction}")
    names = sorted(set(names))
    groups = {n: group_of(n, group_pattern) for n in names}
    keys = sorted(set(groups.values()))
    if len(keys) < 2:
        raise SharpkdError(f"need at least 2 independent source images (groups) to split, got {len(keys)}: {keys}")
    order = [keys[i] for i in np.random.default_rng(seed).permutation(len(keys))]
    target = max(1, round(val_fraction * len(names)))
    val_groups: set[str] = set()
    count = 0
    for key in order[:-1]:
        if count >= target:
            break
        val_groups.add(key)
        count += sum(1 for n in names if groups[n] == key)
    val = [n for n in names if groups[n] in val_groups]
    train = [n for n in names if groups[n] not in val_groups]
    return Split(train=train, val=val, groups=groups)


def report_size(value) -> tuple[int, int] | None:
    """``slice.report_size``: ``[width, height]`` (the report's ``[464, 256]``) or empty/None for none."""
    if not value:
        return None
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise SharpkdError(f"slice.report_size must be [width, height] in pixels or [], got {value!r}")
    return int(value[0]), int(value[1])
