"""Run an image-to-image network on images of any size with bounded memory.

:func:`tiled_apply` pads an image (reflect) to a multiple of ``multiple_of``, and either runs the
network on the whole padded image (when it fits in one ``tile``) or on overlapping
``tile`` x ``tile`` windows that are blended back with a smooth weight window.

Blend window (per axis, per tile edge that lies inside the image; edges on the image border get
full weight): with ``m = overlap // 4`` and ``r = overlap - 2*m``, the outermost ``m`` pixels get
weight 0, the next ``r`` pixels a linear ramp ``(i + 0.5) / r``, the rest weight 1.  Two tiles
that overlap by exactly ``overlap`` therefore get complementary ramps (they sum to 1); larger
overlaps (the last tile of a row is shifted back to end at the border) are handled by dividing
by the summed weights.  Because the ``m`` pixels next to an interior tile edge carry no weight, a
purely local network whose receptive-field radius is at most ``overlap // 4`` gives exactly
(up to float rounding) the whole-image result.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .errors import SharpkdError

__all__ = ["tiled_apply", "pad_to_multiple", "tile_starts", "blend_window", "num_tiles"]


def pad_to_multiple(x: torch.Tensor, multiple_of: int) -> torch.Tensor:
    """Pad ``x`` (NxCxHxW) at the bottom/right so H and W are multiples of ``multiple_of``.

    Reflect padding where the image is large enough (reflect allows at most size-1 pixels),
    replicate padding for the rest (1-pixel or tiny images).
    """
    h, w = x.shape[-2:]
    ph = (-h) % multiple_of
    pw = (-w) % multiple_of
    if ph == 0 and pw == 0:
        return x
    rh, rw = min(ph, h - 1), min(pw, w - 1)
    if rh or rw:
        x = F.pad(x, (0, rw, 0, rh), mode="reflect")
    if ph - rh or pw - rw:
        x = F.pad(x, (0, pw - rw, 0, ph - rh), mode="replicate")
    return x


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``min(tile, size)`` covering ``[0, size)``.

    Consecutive tiles overlap by at least ``overlap``; the last one ends exactly at ``size``.
    """
    t = min(tile, size)
    if t >= size:
        return [0]
    step = t - overlap
    starts = list(range(0, size - t, step))
    starts.append(size - t)
    return starts


def blend_window(length: int, overlap: int, left: bool, right: bool) -> torch.Tensor:
    """1-D blend weights for a tile of ``length`` pixels (see the module docstring).

    ``left``/``right`` say whether that tile edge is inside the image (gets the ramp) or on the
    image border (keeps weight 1).
    """
    w = torch.ones(length, dtype=torch.float32)
    m = overlap // 4
    r = overlap - 2 * m
    ramp = (torch.arange(r, dtype=torch.float32) + 0.5) / max(r, 1)
    if left:
        w[:m] = 0
        w[m : m + r] = torch.minimum(w[m : m + r], ramp)
    if right:
        w[length - m :] = 0
        w[length - m - r : length - m] = torch.minimum(w[length - m - r : length - m], ramp.flip(0))
    return w


def _check_args(x: torch.Tensor, tile: int, overlap: int, multiple_of: int, batch: int) -> None:
    if x.ndim != 4:
        raise SharpkdError(f"tiled_apply expects an NxCxHxW tensor, got shape {tuple(x.shape)}")
    if multiple_of < 1:
        raise SharpkdError(f"multiple_of must be >= 1, got {multiple_of}")
    if tile < multiple_of:
        raise SharpkdError(f"tile ({tile}) must be at least multiple_of ({multiple_of}); raise `tile`")
    if overlap < 0 or 2 * overlap > (tile // multiple_of) * multiple_of:
        raise SharpkdError(
            f"overlap ({overlap}) must be >= 0 and at most half the tile ({tile}); lower `overlap` or raise `tile`"
        )
    if batch < 1:
        raise SharpkdError(f"batch must be >= 1, got {batch}")


def tiled_apply(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tile: int = 512,
    overlap: int = 32,
    multiple_of: int = 8,
    batch: int = 1,
    *,
    device: torch.device | str | None = None,
    progress: bool = False,
    desc: str = "tiles",
) -> torch.Tensor:
    """Apply ``fn`` (Bx C xhxw -> same shape) to ``x`` (NxCxHxW float) tile by tile.

    Each image of ``x`` is processed on its own: reflect-padded to a multiple of ``multiple_of``;
    if the padded image fits in ``tile`` x ``tile`` it goes through ``fn`` whole, otherwise it is
    cut into overlapping tiles of ``tile`` (rounded down to ``multiple_of``) pixels per side
    (less along a side shorter than that), run ``batch`` tiles at a time, and blended with
    :func:`blend_window`.  The padding is cropped off.  ``fn`` runs on ``device`` (default:
    ``x.device``); the result is float32 on ``x.device``.  Peak memory of ``fn`` is bounded by
    ``batch`` tiles; the accumulators take 4 floats per pixel of one image.
    """
    _check_args(x, tile, overlap, multiple_of, batch)
    device = torch.device(device) if device is not None else x.device
    tile = (tile // multiple_of) * multiple_of
    return torch.cat(
        [
            _tiled_one(fn, x[i : i + 1], tile, overlap, multiple_of, batch, device, progress, desc)
            for i in range(x.shape[0])
        ],
        dim=0,
    )


def _run(fn, t: torch.Tensor, device: torch.device) -> torch.Tensor:
    y = fn(t.to(device))
    if y.shape != t.shape:
        raise SharpkdError(f"the network changed the tile shape from {tuple(t.shape)} to {tuple(y.shape)}")
    return y


def _tiled_one(fn, x, tile, overlap, multiple_of, batch, device, progress, desc) -> torch.Tensor:
    h, w = x.shape[-2:]
    xp = pad_to_multiple(x, multiple_of)
    hp, wp = xp.shape[-2:]
    if hp <= tile and wp <= tile:
        return _run(fn, xp, device).to(x.device, torch.float32)[..., :h, :w]

    th, tw = min(tile, hp), min(tile, wp)
    ys, xs = tile_starts(hp, tile, overlap), tile_starts(wp, tile, overlap)
    boxes = [(y0, x0) for y0 in ys for x0 in xs]
    out = torch.zeros((1, x.shape[1], hp, wp), dtype=torch.float32, device=x.device)
    wsum = torch.zeros((1, 1, hp, wp), dtype=torch.float32, device=x.device)
    bar = tqdm(total=len(boxes), desc=desc, unit="tile", disable=not progress, leave=False)
    try:
        for k in range(0, len(boxes), batch):
            chunk = boxes[k : k + batch]
            tiles = torch.cat([xp[..., y0 : y0 + th, x0 : x0 + tw] for y0, x0 in chunk], dim=0)
            res = _run(fn, tiles, device).to(x.device, torch.float32)
            for j, (y0, x0) in enumerate(chunk):
                wy = blend_window(th, overlap, y0 > 0, y0 + th < hp).to(x.device)
                wx = blend_window(tw, overlap, x0 > 0, x0 + tw < wp).to(x.device)
                wt = wy[:, None] * wx[None, :]
                out[..., y0 : y0 + th, x0 : x0 + tw] += res[j : j + 1] * wt
                wsum[..., y0 : y0 + th, x0 : x0 + tw] += wt
            bar.update(len(chunk))
    finally:
        bar.close()
    assert float(wsum.min()) > 0, "blend weights must cover every pixel"
    return (out / wsum)[..., :h, :w]


def num_tiles(height: int, width: int, tile: int = 512, overlap: int = 32, multiple_of: int = 8) -> int:
    """How many tiles :func:`tiled_apply` runs for one ``height`` x ``width`` image."""
    tile = (tile // multiple_of) * multiple_of
    hp = math.ceil(height / multiple_of) * multiple_of
    wp = math.ceil(width / multiple_of) * multiple_of
    if hp <= tile and wp <= tile:
        return 1
    return len(tile_starts(hp, tile, overlap)) * len(tile_starts(wp, tile, overlap))
