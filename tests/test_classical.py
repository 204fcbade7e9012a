import numpy as np
import pytest

from sharpkd.evaluation.classical import BASELINES, baseline_outputs, tune_unsharp, unsharp_grid_scores, unsharp_mask
from sharpkd.data.degrade import degrade
from sharpkd.errors import SharpkdError
from sharpkd.evaluation.metrics import psnr


def _random(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _smooth(h=48, w=64):
    """Natural-ish synthetic image: sum of sinusoids plus a few sharp-edged rectangles."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for c in range(3):
        v = 128 + 40 * np.sin(x / (3.0 + c)) + 30 * np.cos(y / (4.0 + c) + x / 9.0)
        v[h // 4 : h // 2, w // 5 : w // 2] += 50
        v[(2 * h) // 3 :, (3 * w) // 5 :] -= 60
        chans.append(v)
    return np.clip(np.rint(np.stack(chans, axis=2)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("h,w", [(23, 37), (48, 64), (31, 31)])
def test_baselines_keep_exact_size(h, w):
    gt = _random(h, w)
    out = baseline_outputs(gt)
    assert list(out) == list(BASELINES) == ["identity", "bicubic", "lanczos", "unsharp"]
    for name, img in out.items():
        assert img.shape == gt.shape and img.dtype == np.uint8, name


@pytest.mark.parametrize("scale", [0.6, 0.5])
def test_identity_equals_degrade(scale):
    gt = _random(37, 23, 1)
    assert np.array_equal(baseline_outputs(gt, scale=scale)["identity"], degrade(gt, scale))


@pytest.mark.parametrize("name", ["bicubic", "lanczos", "unsharp"])
def test_other_baselines_differ_from_identity(name):
    out = baseline_outputs(_smooth())
    assert not np.array_equal(out[name], out["identity"])


def test_sharper_upsamplers_beat_bilinear_on_smooth_image():
    # Sinusoids at 3-6 px periods are attenuated by bilinear interpolation much more than by
    # bicubic/Lanczos kernels; this holds with a wide margin on this image.
    gt = _smooth()
    out = baseline_outputs(gt)
    base = psnr(out["identity"], gt)
    assert psnr(out["bicubic"], gt) > base
    assert psnr(out["lanczos"], gt) > base


@pytest.mark.parametrize("radius", [0.5, 1.0, 2.0])
def test_unsharp_amount_zero_is_identity(radius):
    gt = _random(23, 37, 2)
    out = baseline_outputs(gt, unsharp_radius=radius, unsharp_amount=0.0)
    assert np.array_equal(out["unsharp"], out["identity"])


def test_unsharp_formula():
    x = np.zeros((9, 9, 3), np.uint8)
    x[4, 4] = 100
    out = unsharp_mask(x, radius=1.0, amount=1.0)
    # centre: 100 + (100 - G*x) > 100; flat constant image is unchanged
    assert out[4, 4, 0] > 100 and out[0, 0, 0] == 0
    flat = np.full((9, 9, 3), 77, np.uint8)
    assert np.array_equal(unsharp_mask(flat, 1.5, 2.0), flat)


@pytest.mark.parametrize("radius,amount", [(-1.0, 0.5), (1.0, -0.1), (float("nan"), 1.0)])
def test_unsharp_rejects_bad_params(radius, amount):
    with pytest.raises(SharpkdError, match="unsharp"):
        baseline_outputs(_random(16, 16), unsharp_radius=radius, unsharp_amount=amount)


def test_unknown_method_raises():
    with pytest.raises(SharpkdError, match="unknown baseline"):
        baseline_outputs(_random(16, 16), methods=["identity", "nope"])


@pytest.mark.parametrize("radii,amounts", [([0.5, 1.0], [0.0, 0.5, 1.0]), ([1.5], [0.25, 2.0])])
def test_tune_unsharp_returns_grid_values(radii, amounts):
    pairs = [(degrade(g, 0.6), g) for g in (_smooth(), _smooth(40, 40))]
    r, a = tune_unsharp(pairs, radii, amounts)
    assert r in radii and a in amounts
    scores = unsharp_grid_scores(pairs, radii, amounts)
    assert set(scores) == {(x, y) for x in radii for y in amounts}
    assert scores[(r, a)] == max(scores.values())


def test_tune_unsharp_sharpening_helps_blurred_input():
    pairs = [(degrade(_smooth(), 0.6), _smooth())]
    r, a = tune_unsharp(pairs, [1.0], [0.0, 0.5])
    assert a == 0.5  # some sharpening beats none on a bilinear-blurred image with edges


def test_tune_unsharp_empty_inputs_raise():
    with pytest.raises(SharpkdError, match="no .*pairs"):
        tune_unsharp([], [1.0], [0.5])
    with pytest.raises(SharpkdError, match="non-empty"):
        tune_unsharp([(_smooth(), _smooth())], [], [0.5])
