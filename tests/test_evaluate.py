"""sharpkd.evaluation.evaluate: every method row from one place, numbers in eval.json, settings beside it."""

import numpy as np
import pytest

from sharpkd.evaluation.classical import baseline_outputs
from sharpkd.data.degrade import degrade
from sharpkd.evaluation.evaluate import METHOD_ORDER, evaluate, settings, summary


def images(n=2, seed=0):
    rng = np.random.default_rng(seed)
    return [np.kron(rng.integers(0, 256, (8, 10, 3)).astype(np.uint8), np.ones((4, 4, 1), np.uint8)) for _ in range(n)]


def test_rows_cover_every_method_and_image_and_the_summary_holds_numbers_only():
    gts = images()
    deg = [degrade(g) for g in gts]
    rows, outputs = evaluate(["a", "b"], gts, deg, {"teacher": gts, "student": deg}, scale=0.6, unsharp=(1.0, 0.5))
    assert [r["method"] for r in rows[:6]] == [m for m in METHOD_ORDER if m != "teacher_as_is"]
    assert len(rows) == 2 * 6 and set(outputs) == {"a", "b"}
    assert np.array_equal(outputs["a"]["lanczos"], baseline_outputs(gts[0], 0.6)["lanczos"])
    result = summary(rows)
    assert result["methods"]["teacher"]["psnr"] == 100.0  # the ground truth itself: the cap
    assert result["methods"]["student"] == result["methods"]["identity"]
    assert result["student_gain_over_input"] == {"psnr_db": 0.0, "ssim": 0.0}
    assert result["n_images"] == 2

    def numbers(obj):
        return all(numbers(v) if isinstance(v, dict) else isinstance(v, (int, float)) for v in obj.values())

    assert numbers(result)


def test_a_degraded_input_that_is_not_degrade_of_the_ground_truth_is_caught():
    gts = images(1)
    with pytest.raises(AssertionError, match="differs from degrade"):
        evaluate(["a"], gts, gts, {"student": gts}, scale=0.6, unsharp=(1.0, 0.5))


def test_settings_say_how_it_was_measured():
    info = settings(scale=0.6, unsharp=(2.0, 0.5), sizes={"1920x1080", "1280x720"}, student_arch="sharp",
                    teacher={"arch": "VDSR", "kind": "vdsr"}, report_size="464x256")
    assert info["sizes"] == ["1280x720", "1920x1080"] and info["unsharp"]["radius"] == 2.0
    assert info["ssim_settings"]["sigma"] == 1.5 and "reference" not in info["ssim_settings"]
