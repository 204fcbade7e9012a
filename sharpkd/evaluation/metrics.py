"""Image-quality metrics: RGB PSNR and SSIM, with the exact settings stated.

The numpy functions (:func:`psnr`, :func:`ssim`, :func:`score`) are the reference used for every
number that is reported.  :func:`psnr_torch` / :func:`ssim_torch` compute the same quantities on
``Nx3xHxW`` float tensors in ``[0, 1]`` for training-time validation; on ``uint8 / 255`` inputs
they agree with the numpy reference to float rounding (tested in float64).

PSNR (RGB, all pixels and channels, ``data_range`` 255)::

    MSE  = mean((a - b)^2)              over H, W and the 3 channels, in float64
    PSNR = 10 * log10(255^2 / MSE)      capped at PSNR_CAP (identical images -> PSNR_CAP)

SSIM (Wang et al. 2004), computed by ``skimage.metrics.structural_similarity`` with
:data:`SSIM_SETTINGS`: per channel, Gaussian-weighted local statistics (sigma 1.5, 11-tap window
truncated at 3.5 sigma, population covariance)::

    SSIM(x, y) = (2 mu_x mu_y + C1)(2 cov_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(var_x + var_y + C2))
    C1 = (0.01 * 255)^2,  C2 = (0.03 * 255)^2

averaged over the map after dropping a 5-pixel border (where the window leaves the image), then
averaged over R, G, B.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
from skimage.metrics import structural_similarity

#: Upper bound on PSNR in dB.  JSON cannot hold ``inf``, so identical images score this value;
#: 100 dB corresponds to an MSE of 6.5e-6 on the 0..255 scale, far beyond any 8-bit difference
#: (a single pixel off by 1 in a 1920x1080 frame is ~ 81 dB).
PSNR_CAP = 100.0

#: Exact SSIM settings (keyword arguments of skimage.metrics.structural_similarity, applied to
#: HxWx3 uint8 RGB images).  Exported so that metrics JSON and the README can state them.
SSIM_SETTINGS: dict = {
    "function": "skimage.metrics.structural_similarity",
    "gaussian_weights": True,
    "sigma": 1.5,
    "use_sample_covariance": False,
    "data_range": 255,
    "channel_axis": 2,
    "K1": 0.01,
    "K2": 0.03,
    "input": "RGB uint8 HxWx3, per-channel SSIM averaged over R, G, B",
    "reference": "Wang, Bovik, Sheikh, Simoncelli 2004, IEEE TIP 13:600-612",
}

_SKIMAGE_KWARGS = {
    k: SSIM_SETTINGS[k]
    for k in ("gaussian_weights", "sigma", "use_sample_covariance", "data_range", "channel_axis", "K1", "K2")
}

# Gaussian window used by skimage for SSIM_SETTINGS: radius int(3.5 * sigma + 0.5) = 5 (11 taps).
_SSIM_TRUNCATE = 3.5
_SSIM_RADIUS = int(_SSIM_TRUNCATE * SSIM_SETTINGS["sigma"] + 0.5)


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    for name, x in (("first", a), ("second", b)):
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 3 or x.shape[2] != 3:
            desc = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
            raise ValueError(f"metrics expect HxWx3 uint8 RGB images; the {name} image is {desc}")
    if a.shape != b.shape:
        raise ValueError(
            f"images to compare must have the same shape, got {a.shape} and {b.shape} "
            "(restored output and ground truth must be the same size)"
        )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """RGB PSNR in dB between two HxWx3 uint8 images: ``10*log10(255^2/MSE)``, capped at PSNR_CAP."""
    _check_pair(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return PSNR_CAP
    return min(PSNR_CAP, 10.0 * math.log10(255.0**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM between two HxWx3 uint8 images with :data:`SSIM_SETTINGS` (images must be >= 11x11)."""
    _check_pair(a, b)
    if min(a.shape[:2]) < 2 * _SSIM_RADIUS + 1:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {a.shape[1]}x{a.shape[0]}")
    return float(structural_similarity(a, b, **_SKIMAGE_KWARGS))


def score(restored: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """``{"psnr": psnr(restored, gt), "ssim": ssim(restored, gt)}``."""
    return {"psnr": psnr(restored, gt), "ssim": ssim(restored, gt)}


def summarize(rows: Iterable[Mapping], rounded: bool = False) -> dict[str, dict]:
    """Mean PSNR/SSIM per method over images.

    ``rows`` are dicts with keys ``image``, ``method``, ``psnr``, ``ssim`` (one per image and
    method).  Returns ``{method: {"psnr": mean, "ssim": mean, "n": count}}`` with methods in order
    of first appearance.  The PSNR mean is the mean of per-image PSNRs (not PSNR of the pooled
    MSE).  ``rounded=True`` rounds PSNR to 3 and SSIM to 4 decimals (for JSON); keep raw values
    for CSV.  A repeated (image, method) pair or a non-finite value raises ValueError.
    """
    seen: set[tuple[str, str]] = set()
    acc: dict[str, list[list[float]]] = {}
    for i, row in enumerate(rows):
        missing = {"image", "method", "psnr", "ssim"} - set(row)
        if missing:
            raise ValueError(f"score row {i} lacks {sorted(missing)}: {dict(row)}")
        key = (str(row["image"]), str(row["method"]))
        if key in seen:
            raise ValueError(f"duplicate score row for image {key[0]!r}, method {key[1]!r}")
        seen.add(key)
        p, s = float(row["psnr"]), float(row["ssim"])
        if not (math.isfinite(p) and math.isfinite(s)):
            raise ValueError(f"non-finite score for image {key[0]!r}, method {key[1]!r}: psnr={p}, ssim={s}")
        acc.setdefault(key[1], [[], []])
        acc[key[1]][0].append(p)
        acc[key[1]][1].append(s)
    out = {}
    for method, (ps, ss) in acc.items():
        mp, ms = float(np.mean(ps)), float(np.mean(ss))
        if rounded:
            mp, ms = round(mp, 3), round(ms, 4)
        out[method] = {"psnr": mp, "ssim": ms, "n": len(ps)}
    return out


# ---------------------------------------------------------------------------------------------
# torch versions (training-time validation)


def _check_tensor_pair(x, y) -> None:
    if x.shape != y.shape:
        raise ValueError(f"tensors to compare must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected Nx3xHxW tensors, got shape {tuple(x.shape)}")
    if not (x.is_floating_point() and y.is_floating_point()):
        raise ValueError(f"expected float tensors in [0, 1], got {x.dtype} and {y.dtype}")


def psnr_torch(x, y):
    """Per-image RGB PSNR (dB) of Nx3xHxW float tensors in [0, 1]; returns a tensor of shape (N,).

    ``10*log10(1/MSE)`` with the MSE over C, H, W, capped at PSNR_CAP.  Equals :func:`psnr` on
    ``uint8 / 255`` inputs.  No quantisation is applied (training outputs are continuous).
    """
    import torch

    _check_tensor_pair(x, y)
    mse = (x - y).pow(2).flatten(1).mean(dim=1)
    val = 10.0 * torch.log10(1.0 / mse)  # mse == 0 -> inf -> capped below
    return torch.clamp(val, max=PSNR_CAP)


def _gaussian_window(dtype, device):
    import torch

    sigma = SSIM_SETTINGS["sigma"]
    t = torch.arange(-_SSIM_RADIUS, _SSIM_RADIUS + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    return (g / g.sum()).to(dtype=dtype, device=device)


def ssim_torch(x, y):
    """Per-image SSIM of Nx3xHxW float tensors in [0, 1] with :data:`SSIM_SETTINGS`; shape (N,).

    Same formula as :func:`ssim` (data range 1 instead of 255, which is the same on ``uint8/255``
    inputs): separable 11-tap Gaussian (sigma 1.5), evaluated only where the window lies inside the
    image ('valid' convolution, identical to skimage's filter-then-crop-5-pixels), mean over the
    map and channels.  Differentiable, so it can also serve as a loss (``1 - ssim_torch``).
    """
    import torch.nn.functional as F

    _check_tensor_pair(x, y)
    n, c, h, w = x.shape
    k = 2 * _SSIM_RADIUS + 1
    if h < k or w < k:
        raise ValueError(f"SSIM needs images of at least {k}x{k} pixels, got {w}x{h}")
    g = _gaussian_window(x.dtype, x.device)
    gh = g.view(1, 1, 1, k).expand(c, 1, 1, k)
    gv = g.view(1, 1, k, 1).expand(c, 1, k, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, gh, groups=c), gv, groups=c)

    c1 = (SSIM_SETTINGS["K1"] * 1.0) ** 2
    c2 = (SSIM_SETTINGS["K2"] * 1.0) ** 2
    ux, uy = blur(x), blur(y)
    vx = blur(x * x) - ux * ux
    vy = blur(y * y) - uy * uy
    vxy = blur(x * y) - ux * uy
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(dim=1)
