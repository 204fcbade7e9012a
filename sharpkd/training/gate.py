"""The teacher's quality gate.

A teacher only helps distillation if it is better than what it is given: the teacher stage fails
when the teacher does not beat the degraded input (mean RGB PSNR over the full validation images,
read from the pipeline's shards), unless the user sets ``teacher.allow_worse_than_input: true``.

A teacher meant for a lossy link must also beat what a classical method makes of the same
transmitted frame: :func:`lanczos_margins` is the teacher's mean PSNR minus Lanczos's on the full
validation images of every link set (the primary one and each of ``degrade.val_links``), and with
``teacher.gate: lanczos`` the stage fails unless every margin is positive.
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


def lanczos_margins(gts: Sequence[np.ndarray], teacher: dict[str, Sequence[np.ndarray]],
                    lanczos: dict[str, Sequence[np.ndarray]], *, require: bool) -> dict[str, float]:
    """``{link: mean PSNR of teacher[link] - mean PSNR of lanczos[link]}`` against ``gts`` (dB), one
    entry per link set; raises :class:`SharpkdError` naming the links where the margin is not
    positive when ``require`` (``teacher.gate: lanczos``)."""
    if set(teacher) != set(lanczos) or not teacher:
        raise SharpkdError(f"the Lanczos gate needs the same link sets for the teacher and Lanczos "
                           f"(got {sorted(teacher)} and {sorted(lanczos)})")
    margins = {}
    for link in teacher:
        if not gts or not (len(gts) == len(teacher[link]) == len(lanczos[link])):
            raise SharpkdError(f"the Lanczos gate needs the same, non-zero number of images on link {link} "
                               f"(got {len(gts)} ground truth, {len(teacher[link])} teacher, "
                               f"{len(lanczos[link])} Lanczos)")
        ours = float(np.mean([psnr(t, g) for t, g in zip(teacher[link], gts)]))
        base = float(np.mean([psnr(x, g) for x, g in zip(lanczos[link], gts)]))
        margins[link] = ours - base
    losing = {k: v for k, v in margins.items() if v <= 0}
    if require and losing:
        listed = ", ".join(f"{k} ({v:+.3f} dB)" for k, v in losing.items())
        raise SharpkdError(
            f"teacher.gate is lanczos and the teacher does not beat Lanczos from the transmitted frame on "
            f"{len(losing)} of {len(margins)} link set(s) of the {len(gts)} validation images: {listed}. "
            "Adapt it on those links (degrade.train_links), longer (teacher.adapt.steps), or set "
            "teacher.gate: input to gate on the degraded input only.")
    return margins


__all__ = ["lanczos_margins", "teacher_gain"]
