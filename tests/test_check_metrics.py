"""tools/check_metrics.py: a rerun's metrics against the committed ones, within the stated tolerance."""

from tools.check_metrics import compare

OLD = {"methods": {"student": {"psnr": 30.0, "ssim": 0.9}}, "student": {"parameters": 5804},
       "student_gain_over_input": {"psnr_db": 1.5, "ssim": 0.01}, "gain_over_input_db": 2.0}


def test_within_tolerance_passes():
    new = {"methods": {"student": {"psnr": 30.09, "ssim": 0.9019}}, "student": {"parameters": 5804},
           "student_gain_over_input": {"psnr_db": 1.41, "ssim": 0.0081}, "gain_over_input_db": 2.05}
    assert compare(OLD, new, 0.1, 0.002) == []


def test_outside_tolerance_missing_and_counts_fail():
    new = {"methods": {"student": {"psnr": 30.2, "ssim": 0.9}}, "student": {"parameters": 5805},
           "student_gain_over_input": {"psnr_db": 1.5}, "extra": 1}
    problems = compare(OLD, new, 0.1, 0.002)
    assert any(p.startswith("methods.student.psnr: committed 30, rerun 30.2") for p in problems)
    assert any(p.startswith("student.parameters") for p in problems)  # counts are exact
    assert "student_gain_over_input.ssim: missing in the rerun" in problems
    assert "gain_over_input_db: missing in the rerun" in problems
    assert "extra: not in the committed file" in problems
