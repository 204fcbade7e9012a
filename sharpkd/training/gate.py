"""The teacher's quality gate.

A teacher only helps distillation if it is better than what it is given: the teacher stage fails
when the teacher does not beat the degraded input (mean RGB PSNR over the full validation images,
read from the pipeline's shards), unless the user sets ``teacher.allow_worse_than_input: true``.
Scoring every method, the teacher included, is the evaluate stage's job; the gate only decides.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from sharpkd.errors import SharpkdError
from sharpkd.evaluation.metrics import psnr


def teacher_gain(gts: Sequence[np.ndarray], degraded: Sequence[np.ndarray], teacher: Sequence[np.ndarray], *,
                 allow_worse: bool) -> float:
    """Mean PSNR of ``teacher`` minus that of ``degraded`` against ``gts`` (dB); raises
    :class:`SharpkdError` when it is not positive and ``allow_worse`` is false."""
    if not gts or not (len(gts) == len(degraded) == len(teacher)):
        raise SharpkdError(f"the teacher gate needs the same, non-zero number of images "
                           f"(got {len(gts)} ground truth, {len(degraded)} degraded, {len(teacher)} teacher)")
    ours = float(np.mean([psnr(t, g) for t, g in zip(teacher, gts)]))
    base = float(np.mean([psnr(d, g) for d, g in zip(degraded, gts)]))
    if ours <= base and not allow_worse:
        raise SharpkdError(
            f"the teacher is not better than the degraded input on the {len(gts)} validation images "
            f"(PSNR {ours:.3f} dB vs {base:.3f} dB): distilling it would teach the student to be worse. "
            "Adapt it longer (teacher.adapt.steps), pick another teacher, or set "
            "teacher.allow_worse_than_input: true to continue anyway.")
    return ours - base


__all__ = ["teacher_gain"]
