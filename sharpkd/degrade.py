"""The report's degradation: bilinear downscale to ``scale``, bilinear upscale back.

Both resamplings use Pillow's ``Image.BILINEAR``.  Pillow's bilinear filter is *antialiased*
when it shrinks (its support widens with the scale factor, like ``cv2.INTER_AREA`` rather
than ``cv2.INTER_LINEAR``), so the 60% image carries little aliasing; upscaling is plain
bilinear interpolation.  The output always has exactly the input's size, odd sizes included.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_FILTERS = {
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS,
    "nearest": Image.NEAREST,
}


def low_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """Size of the transmitted low-resolution frame: rounded, at least 1x1."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    return max(1, round(width * scale)), max(1, round(height * scale))


def downscale(img: np.ndarray, scale: float) -> np.ndarray:
    """Bilinear (antialiased) downscale of an HxWx3 uint8 image to ``scale`` of its size."""
    h, w = img.shape[:2]
    return np.asarray(Image.fromarray(img).resize(low_size(w, h, scale), Image.BILINEAR))


def upscale(img: np.ndarray, size: tuple[int, int], method: str = "bilinear") -> np.ndarray:
    """Resize an HxWx3 uint8 image to ``size`` = (width, height) with ``method``."""
    try:
        flt = _FILTERS[method]
    except KeyError:
        raise ValueError(f"unknown resampling method {method!r}; choose from {sorted(_FILTERS)}") from None
    return np.asarray(Image.fromarray(img).resize(size, flt))


def degrade(img: np.ndarray, scale: float = 0.6, up: str = "bilinear") -> np.ndarray:
    """Downscale ``img`` to ``scale`` with bilinear and scale it back to its exact size with ``up``.

    ``up="bilinear"`` is the report's degradation; ``bicubic``/``lanczos`` give the classical
    re-upsampling baselines from the same transmitted frame.
    """
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 image, got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    return upscale(downscale(img, scale), (w, h), up)
