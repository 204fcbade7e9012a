"""Classical baselines, all computed from the same transmitted 60% frame as the networks see.

The transmitted frame is ``downscale(gt, scale)`` (Pillow antialiased bilinear, see
:mod:`sharpkd.data.degrade`).  Each baseline turns it back into a full-size HxWx3 uint8 image of the
ground truth's exact size:

``identity``
    bilinear upscale = ``degrade(gt, scale)``, the degraded input itself (the report's setup).
``bicubic``
    Pillow bicubic upscale of the same low-res frame.
``lanczos``
    Pillow Lanczos (a=3) upscale of the same low-res frame.
``unsharp``
    unsharp mask on the degraded (bilinear) input, per channel, in float64::

        out = round(clip(x + amount * (x - G_sigma * x), 0, 255))

    with ``G_sigma`` a Gaussian blur of standard deviation ``radius`` pixels
    (``scipy.ndimage.gaussian_filter``, reflect borders, truncated at 4 sigma).

Its two parameters should be chosen with :func:`tune_unsharp` on *training* images only, so the
baseline is tuned as fairly as the networks are trained, but never sees validation images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

from sharpkd.data.degrade import transmitted, upscale
from sharpkd.errors import SharpkdError
from sharpkd.evaluation.metrics import psnr

#: Unsharp-mask parameters used when none are given (a moderate mask).  The pipeline passes the
#: values :func:`tune_unsharp` finds on its own training split instead.
DEFAULT_UNSHARP_RADIUS = 1.5
DEFAULT_UNSHARP_AMOUNT = 0.75


def _check_unsharp_params(radius: float, amount: float) -> None:
    if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius >= 0):
        raise SharpkdError(f"unsharp radius must be a finite number >= 0 (Gaussian sigma in pixels), got {radius!r}")
    if not (isinstance(amount, (int, float)) and math.isfinite(amount) and amount >= 0):
        raise SharpkdError(f"unsharp amount must be a finite number >= 0, got {amount!r}")


def _blur(x: np.ndarray, radius: float) -> np.ndarray:
    """Per-channel Gaussian blur of a float64 HxWx3 array (sigma ``radius``; 0 -> unchanged)."""
    if radius == 0:
        return x
    return gaussian_filter(x, sigma=(radius, radius, 0), mode="reflect", truncate=4.0)


def _sharpen(x: np.ndarray, blurred: np.ndarray, amount: float) -> np.ndarray:
    return np.clip(np.rint(x + amount * (x - blurred)), 0, 255).astype(np.uint8)


def unsharp_mask(img: np.ndarray, radius: float, amount: float) -> np.ndarray:
    """``round(clip(x + amount * (x - G_radius * x)))`` on an HxWx3 uint8 image (see module doc)."""
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 image, got {img.dtype} {img.shape}")
    _check_unsharp_params(radius, amount)
    x = img.astype(np.float64)
    return _sharpen(x, _blur(x, radius), amount)


def _identity(low, size, radius, amount):
    return upscale(low, size, "bilinear")


def _bicubic(low, size, radius, amount):
    return upscale(low, size, "bicubic")


def _lanczos(low, size, radius, amount):
    return upscale(low, size, "lanczos")


def _unsharp(low, size, radius, amount):
    return unsharp_mask(upscale(low, size, "bilinear"), radius, amount)


#: name -> fn(low_res_frame, (width, height), unsharp_radius, unsharp_amount) -> HxWx3 uint8
BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "identity": _identity,
    "bicubic": _bicubic,
    "lanczos": _lanczos,
    "unsharp": _unsharp,
}


def baseline_outputs(
    gt: np.ndarray,
    scale: float = 0.6,
    unsharp_radius: float = DEFAULT_UNSHARP_RADIUS,
    unsharp_amount: float = DEFAULT_UNSHARP_AMOUNT,
    methods: Sequence[str] | None = None,
    link: dict | None = None,
) -> dict[str, np.ndarray]:
    """All (or the named) baselines for ground truth ``gt``, from one received low-res frame.

    ``link``: the codec keyword arguments of :func:`sharpkd.data.degrade.transmitted` (default: none,
    the report's).  Returns ``{name: HxWx3 uint8}`` in registry order (or ``methods`` order), each
    exactly ``gt``'s size.  ``identity`` equals ``degrade(gt, scale, **link)``.
    """
    if gt.dtype != np.uint8 or gt.ndim != 3 or gt.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 image, got {gt.dtype} {gt.shape}")
    names = list(BASELINES) if methods is None else list(methods)
    unknown = [m for m in names if m not in BASELINES]
    if unknown:
        raise SharpkdError(f"unknown baseline method(s) {unknown}; choose from {list(BASELINES)}")
    if "unsharp" in names:
        _check_unsharp_params(unsharp_radius, unsharp_amount)
    h, w = gt.shape[:2]
    low = transmitted(gt, scale, **(link or {}))
    return {m: BASELINES[m](low, (w, h), unsharp_radius, unsharp_amount) for m in names}


def unsharp_grid_scores(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    radii: Sequence[float],
    amounts: Sequence[float],
) -> dict[tuple[float, float], float]:
    """Mean PSNR (dB, over images) of the unsharp baseline for every (radius, amount) in the grid.

    ``pairs`` are ``(degraded, gt)`` uint8 images (degraded = ``degrade(gt, scale)``).  Each
    image is blurred once per radius; amounts reuse that blur (the mask is linear in amount).
    """
    radii, amounts = list(radii), list(amounts)
    if not radii or not amounts:
        raise SharpkdError(f"unsharp tuning needs non-empty grids, got radii={radii} amounts={amounts}")
    for r in radii:
        for a in amounts:
            _check_unsharp_params(r, a)
    sums = {(r, a): 0.0 for r in radii for a in amounts}
    n = 0
    for degraded, gt in tqdm(pairs, desc="tune unsharp", unit="img", disable=None):
        if degraded.shape != gt.shape:
            raise ValueError(f"degraded and ground-truth images differ in shape: {degraded.shape} vs {gt.shape}")
        x = degraded.astype(np.float64)
        for r in radii:
            blurred = _blur(x, r)
            for a in amounts:
                sums[(r, a)] += psnr(_sharpen(x, blurred, a), gt)
        n += 1
    if n == 0:
        raise SharpkdError("unsharp tuning got no (degraded, ground truth) pairs; pass training images")
    return {k: v / n for k, v in sums.items()}


def tune_unsharp(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    radii: Sequence[float],
    amounts: Sequence[float],
) -> tuple[float, float]:
    """Grid-search the unsharp (radius, amount) with the best mean PSNR on ``pairs``.

    Run it on TRAINING images only: the baseline then gets the same advantage as the trained
    networks (parameters fitted to data) without ever seeing validation images.  Ties go to the
    first grid point in (radius, amount) order, so the result is deterministic.
    """
    scores = unsharp_grid_scores(pairs, radii, amounts)
    return max(scores, key=scores.__getitem__)  # max() keeps the first maximum in grid order


__all__ = [
    "BASELINES",
    "DEFAULT_UNSHARP_AMOUNT",
    "DEFAULT_UNSHARP_RADIUS",
    "baseline_outputs",
    "tune_unsharp",
    "unsharp_grid_scores",
    "unsharp_mask",
]
