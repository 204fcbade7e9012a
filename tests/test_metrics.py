import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from sharpkd.evaluation.metrics import (
    PSNR_CAP,
    SSIM_SETTINGS,
    psnr,
    psnr_torch,
    score,
    ssim,
    ssim_torch,
    summarize,
)


def _img(h=24, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _noisy(img, sigma, seed=1):
    noise = np.random.default_rng(seed).normal(0, sigma, img.shape)
    return np.clip(np.rint(img + noise), 0, 255).astype(np.uint8)


def _t(img):
    return torch.from_numpy(img).permute(2, 0, 1)[None].double() / 255


@pytest.mark.parametrize("shape", [(11, 11), (24, 32), (37, 23)])
def test_identical_images(shape):
    x = _img(*shape)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert psnr(x, x) == PSNR_CAP
    assert score(x, x) == {"psnr": PSNR_CAP, "ssim": pytest.approx(1.0, abs=1e-12)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ssim_matches_skimage_with_stated_settings(seed):
    a = _img(30, 41, seed)
    b = _noisy(a, 20, seed + 10)
    ref = structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=2
    )
    assert ssim(a, b) == pytest.approx(ref, rel=1e-12)
    assert SSIM_SETTINGS["sigma"] == 1.5 and SSIM_SETTINGS["data_range"] == 255
    assert SSIM_SETTINGS["gaussian_weights"] is True and SSIM_SETTINGS["use_sample_covariance"] is False


def test_psnr_hand_computation():
    a = np.zeros((4, 5, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 10  # one value off by 10 among 60: MSE = 100 / 60
    expected = 10 * math.log10(255**2 / (100 / 60))
    assert psnr(a, b) == pytest.approx(expected, rel=1e-12)
    # uint8 arithmetic must not wrap: 0 vs 255 everywhere is MSE 255^2 -> 0 dB
    assert psnr(a, np.full_like(a, 255)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "a_shape,b_shape,dtype",
    [((8, 8, 3), (8, 9, 3), np.uint8), ((12, 12, 3), (12, 12, 3), np.float32), ((12, 12), (12, 12), np.uint8)],
)
def test_bad_inputs_raise(a_shape, b_shape, dtype):
    a = np.zeros(a_shape, dtype)
    b = np.zeros(b_shape, np.uint8)
    with pytest.raises(ValueError, match="uint8|same shape"):
        psnr(a, b)
    with pytest.raises(ValueError, match="uint8|same shape"):
        ssim(a, b)


def test_ssim_too_small_raises():
    x = _img(10, 20)
    with pytest.raises(ValueError, match="11x11"):
        ssim(x, x)


@pytest.mark.parametrize("low,high", [(2, 5), (5, 15), (15, 40)])
def test_psnr_and_ssim_decrease_with_noise(low, high):
    x = _img(32, 32, 3)
    a, b = _noisy(x, low), _noisy(x, high)
    assert psnr(a, x) > psnr(b, x)
    assert ssim(a, x) > ssim(b, x)


@pytest.mark.parametrize("seed", [0, 1])
def test_torch_versions_match_numpy(seed):
    a = _img(23, 37, seed)
    b = _noisy(a, 12, seed + 5)
    c = _noisy(a, 30, seed + 6)
    x, y = torch.cat([_t(a), _t(a)]), torch.cat([_t(b), _t(c)])
    s = ssim_torch(x, y)
    p = psnr_torch(x, y)
    assert s.shape == (2,) and p.shape == (2,)
    assert s[0].item() == pytest.approx(ssim(a, b), abs=1e-10)
    assert s[1].item() == pytest.approx(ssim(a, c), abs=1e-10)
    assert p[0].item() == pytest.approx(psnr(a, b), abs=1e-9)
    assert p[1].item() == pytest.approx(psnr(a, c), abs=1e-9)
    # float32 training use: close, and identical inputs are capped / perfect
    assert ssim_torch(x.float(), y.float())[0].item() == pytest.approx(ssim(a, b), abs=1e-5)
    assert psnr_torch(x, x).tolist() == [PSNR_CAP, PSNR_CAP]


def test_ssim_torch_differentiable():
    x = _t(_img(16, 16)).requires_grad_(True)
    y = _t(_noisy(_img(16, 16), 20))
    (1 - ssim_torch(x, y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_torch_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        psnr_torch(torch.zeros(1, 3, 12, 12), torch.zeros(1, 3, 12, 13))
    with pytest.raises(ValueError, match="Nx3xHxW"):
        ssim_torch(torch.zeros(1, 1, 12, 12), torch.zeros(1, 1, 12, 12))


def test_summarize_means_counts_and_rounding():
    rows = [
        {"image": "a", "method": "identity", "psnr": 30.0, "ssim": 0.9},
        {"image": "b", "method": "identity", "psnr": 32.0, "ssim": 0.8},
        {"image": "a", "method": "student", "psnr": 33.12345, "ssim": 0.912345},
    ]
    s = summarize(rows)
    assert list(s) == ["identity", "student"]
    assert s["identity"] == {"psnr": pytest.approx(31.0), "ssim": pytest.approx(0.85), "n": 2}
    assert s["student"]["n"] == 1
    r = summarize(rows, rounded=True)
    assert r["student"] == {"psnr": 33.123, "ssim": 0.9123, "n": 1}


@pytest.mark.parametrize(
    "rows,match",
    [
        ([{"image": "a", "method": "m", "psnr": 1.0, "ssim": 0.5}] * 2, "duplicate"),
        ([{"image": "a", "method": "m", "psnr": float("inf"), "ssim": 0.5}], "non-finite"),
        ([{"image": "a", "method": "m", "psnr": 1.0}], "lacks"),
    ],
)
def test_summarize_rejects_bad_rows(rows, match):
    with pytest.raises(ValueError, match=match):
        summarize(rows)
