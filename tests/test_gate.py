"""The teacher's quality gate."""

import numpy as np
import pytest

from sharpkd.data.degrade import degrade
from sharpkd.errors import SharpkdError
from sharpkd.evaluation.classical import baseline_outputs
from sharpkd.training.gate import lanczos_margins, teacher_gain


def images(n=2, seed=0):
    rng = np.random.default_rng(seed)
    base = [rng.integers(0, 256, (12, 16, 3)).astype(np.uint8) for _ in range(n)]
    return [np.kron(b, np.ones((4, 4, 1), np.uint8)) for b in base]  # 48x64, some structure


def test_a_teacher_worse_than_the_input_fails_unless_allowed():
    gts = images()
    deg = [degrade(g) for g in gts]
    worse = [np.clip(d.astype(int) + 40, 0, 255).astype(np.uint8) for d in deg]
    with pytest.raises(SharpkdError, match="not better than the degraded input.*allow_worse_than_input"):
        teacher_gain(gts, deg, worse, allow_worse=False)
    assert teacher_gain(gts, deg, worse, allow_worse=True) < 0
    with pytest.raises(SharpkdError, match="not better"):
        teacher_gain(gts, deg, deg, allow_worse=False)  # equal is not better


def test_gain_is_the_mean_psnr_difference():
    gts = images()
    deg = [degrade(g) for g in gts]
    mse = [np.mean((d.astype(float) - g) ** 2) for d, g in zip(deg, gts)]
    want = 100.0 - np.mean([10 * np.log10(255**2 / m) for m in mse])  # a perfect teacher scores the 100 dB cap
    assert teacher_gain(gts, deg, gts, allow_worse=False) == pytest.approx(want, abs=1e-9)


def test_mismatched_inputs_are_an_error():
    gts = images()
    with pytest.raises(SharpkdError, match="same, non-zero number"):
        teacher_gain(gts, gts[:1], gts, allow_worse=False)


def test_lanczos_margins_are_mean_psnr_differences_and_the_gate_names_the_losing_links():
    gts = images()
    lanczos = {"none": [baseline_outputs(g, methods=["lanczos"])["lanczos"] for g in gts]}
    lanczos["jpeg:50"] = [baseline_outputs(g, methods=["lanczos"], link={"codec": "jpeg", "jpeg_quality": 50})["lanczos"]
                          for g in gts]
    teacher = {"none": gts, "jpeg:50": lanczos["jpeg:50"]}  # perfect on one link, equal to Lanczos on the other
    m = lanczos_margins(gts, teacher, lanczos, require=False)
    assert m["jpeg:50"] == 0.0 and m["none"] > 0
    with pytest.raises(SharpkdError, match=r"does not beat Lanczos .* 1 of 2 link set\(s\).*jpeg:50 \(\+0.000 dB\)"):
        lanczos_margins(gts, teacher, lanczos, require=True)
    assert lanczos_margins(gts, {"none": gts}, {"none": lanczos["none"]}, require=True)["none"] > 0
    with pytest.raises(SharpkdError, match="same link sets"):
        lanczos_margins(gts, {"none": gts}, lanczos, require=False)
    with pytest.raises(SharpkdError, match="same, non-zero number of images on link none"):
        lanczos_margins(gts, {"none": gts[:1]}, {"none": lanczos["none"]}, require=False)
