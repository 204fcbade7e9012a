"""The teacher's quality gate and report."""

import numpy as np
import pytest

from sharpkd.classical import baseline_outputs
from sharpkd.degrade import degrade
from sharpkd.errors import SharpkdError
from sharpkd.teacher_report import teacher_report


def images(n=2, seed=0):
    rng = np.random.default_rng(seed)
    base = [rng.integers(0, 256, (12, 16, 3)).astype(np.uint8) for _ in range(n)]
    return [np.kron(b, np.ones((4, 4, 1), np.uint8)) for b in base]  # 48x64, some structure


def test_a_teacher_worse_than_the_input_fails_the_stage():
    gts = images()
    deg = [degrade(g) for g in gts]
    worse = [np.clip(d.astype(int) + 40, 0, 255).astype(np.uint8) for d in deg]
    with pytest.raises(SharpkdError, match="not better than the degraded input"):
        teacher_report(gts, deg, worse, worse, scale=0.6, adapted=True, allow_worse=False)
    report = teacher_report(gts, deg, worse, worse, scale=0.6, adapted=True, allow_worse=True)
    assert report["gain_over_input_db"] < 0


def test_report_rows_and_gains():
    gts = images()
    deg = [degrade(g) for g in gts]
    lanczos = [baseline_outputs(g, 0.6)["lanczos"] for g in gts]
    report = teacher_report(gts, deg, deg, gts, scale=0.6, adapted=True, allow_worse=False)
    assert report["teacher_adapted"]["psnr"] == 100.0  # a perfect teacher
    assert report["teacher_as_is"] == report["identity"]
    assert report["best_classical"]["method"] in ("bicubic", "lanczos")
    assert report["gain_over_input_db"] == pytest.approx(100.0 - report["identity"]["psnr"], abs=1e-3)
    assert report["val_images"] == 2
    as_is = teacher_report(gts, deg, lanczos, lanczos, scale=0.6, adapted=False, allow_worse=False)
    assert "teacher_adapted" not in as_is
