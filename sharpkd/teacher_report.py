"""The teacher's validation report and quality gate.

A teacher only helps distillation if it is better than what it is given: the stage fails when
the teacher does not beat the degraded input on the validation images, unless the user says
``allow_worse_than_input: true``.
"""

from __future__ import annotations

import numpy as np

from .classical import baseline_outputs
from .errors import SharpkdError
from .metrics import SSIM_SETTINGS, psnr, ssim

CLASSICAL = ("bicubic", "lanczos")


def mean_scores(outputs: list[np.ndarray], gts: list[np.ndarray]) -> dict:
    """Mean RGB PSNR / SSIM (sharpkd.metrics) over image pairs."""
    return {"psnr": round(float(np.mean([psnr(o, g) for o, g in zip(outputs, gts)])), 4),
            "ssim": round(float(np.mean([ssim(o, g) for o, g in zip(outputs, gts)])), 5)}


def teacher_report(val_gt, val_degraded, before, after, *, scale: float, adapted: bool, allow_worse: bool) -> dict:
    """Scores of the teacher before/after adaptation beside the degraded input and the
    classical re-upsamplings of the same 60% frame, on full validation images; applies the gate."""
    rows = {"identity": mean_scores(val_degraded, val_gt)}
    base = [baseline_outputs(g, scale=scale) for g in val_gt]
    for m in CLASSICAL:
        rows[m] = mean_scores([b[m] for b in base], val_gt)
    best = max(CLASSICAL, key=lambda m: rows[m]["psnr"])
    rows["teacher_as_is"] = mean_scores(before, val_gt)
    if adapted:
        rows["teacher_adapted"] = mean_scores(after, val_gt)
    final = rows["teacher_adapted" if adapted else "teacher_as_is"]
    report = rows | {
        "best_classical": {"method": best} | rows[best],
        "gain_over_input_db": round(final["psnr"] - rows["identity"]["psnr"], 4),
        "gain_over_best_classical_db": round(final["psnr"] - rows[best]["psnr"], 4),
        "val_images": len(val_gt),
        "ssim_settings": {k: v for k, v in SSIM_SETTINGS.items() if k != "reference"},
    }
    if final["psnr"] <= rows["identity"]["psnr"] and not allow_worse:
        raise SharpkdError(
            f"the teacher is not better than the degraded input on the {len(val_gt)} validation images "
            f"(PSNR {final['psnr']:.3f} dB vs {rows['identity']['psnr']:.3f} dB): distilling it would teach the "
            "student to be worse. Adapt it longer (teacher.adapt.steps), pick another teacher, or set "
            "teacher.allow_worse_than_input: true to continue anyway.")
    return report
