"""Scores of methods on a video clip, frame by frame: PSNR and temporal error.

:class:`ClipScores` takes, for each frame in order, the ground truth and every method's output
(HxWx3 uint8, the ground truth's size) and keeps running sums only, so a clip of any length
costs two frames per method of memory.  Per method it reports:

``psnr``
    the mean over frames of the RGB PSNR (:func:`sharpkd.evaluation.metrics.psnr`, data range
    255, all pixels and channels); ``psnr_min``: the worst frame.
``temporal_error``
    how far the output's frame-to-frame change is from the ground truth's, on the 0..255 scale::

        TE = 1/(T-1) * sum_{t=1..T-1} mean_{pixels, channels} |(o_t - o_{t-1}) - (g_t - g_{t-1})|

    with ``o_t`` the output and ``g_t`` the ground truth of frame ``t``.  Since
    ``(o_t - o_{t-1}) - (g_t - g_{t-1}) = e_t - e_{t-1}`` for the error ``e_t = o_t - g_t``, it is
    the flicker of the error: 0 when the error is the same in every frame, whatever its size.
``frames_below_reference``
    with a ``reference`` method named (the received frame, say): in how many frames the method's
    PSNR is below the reference's.
``motion_ratio``
    the output's frame-to-frame change over the ground truth's::

        MR = sum_t mean|o_t - o_{t-1}| / sum_t mean|g_t - g_{t-1}|

    (1 = it changes as much as the true scene does; above 1 = it adds change, e.g. flicker).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from sharpkd.evaluation.metrics import psnr

TEMPORAL_ERROR = "TE = mean over t>=1 of mean |(o_t - o_{t-1}) - (g_t - g_{t-1})| (0..255 scale)"
MOTION_RATIO = "MR = sum_t mean|o_t - o_{t-1}| / sum_t mean|g_t - g_{t-1}|"


class ClipScores:
    """Running PSNR and temporal scores of every method over one clip (see the module docstring)."""

    def __init__(self) -> None:
        self.psnr: dict[str, list[float]] = {}
        self.te: dict[str, float] = {}
        self.motion: dict[str, float] = {}
        self.gt_motion = 0.0
        self.prev: tuple[np.ndarray, dict[str, np.ndarray]] | None = None
        self.frames = 0

    def add(self, gt: np.ndarray, outputs: Mapping[str, np.ndarray]) -> None:
        """Score frame ``gt``'s ``outputs`` (method -> image); every frame must have the same methods."""
        if self.prev is not None and set(outputs) != set(self.prev[1]):
            raise ValueError(f"frame {self.frames}: methods {sorted(outputs)} differ from {sorted(self.prev[1])}")
        for m, out in outputs.items():
            self.psnr.setdefault(m, []).append(psnr(out, gt))
        g = gt.astype(np.int16)
        outs = {m: o.astype(np.int16) for m, o in outputs.items()}
        if self.prev is not None:
            pg, po = self.prev
            dg = g - pg
            self.gt_motion += float(np.abs(dg).mean())
            for m, o in outs.items():
                do = o - po[m]
                self.motion[m] = self.motion.get(m, 0.0) + float(np.abs(do).mean())
                self.te[m] = self.te.get(m, 0.0) + float(np.abs(do - dg).mean())
        self.prev = (g, outs)
        self.frames += 1

    def result(self, digits: int = 4, reference: str | None = None) -> dict:
        """``{method: {"psnr", "psnr_min", "temporal_error", "motion_ratio"}}`` (temporal ones
        ``None`` for a clip of one frame), plus ``frames_below_reference`` when ``reference`` names
        one of the methods."""
        pairs = self.frames - 1
        if reference is not None and reference not in self.psnr:
            raise ValueError(f"reference {reference!r} is not one of the methods {sorted(self.psnr)}")
        out = {}
        for m, values in self.psnr.items():
            out[m] = {"psnr": round(float(np.mean(values)), digits), "psnr_min": round(float(np.min(values)), digits),
                      "temporal_error": round(self.te[m] / pairs, digits) if pairs else None,
                      "motion_ratio": round(self.motion[m] / self.gt_motion, digits)
                      if pairs and self.gt_motion > 0 else None}
            if reference is not None:
                out[m]["frames_below_reference"] = int(sum(v < r for v, r in zip(values, self.psnr[reference])))
        return out


def mean_over_clips(results: list[Mapping[str, Mapping[str, float | None]]], digits: int = 4) -> dict:
    """The mean of each method's scores over clips (each clip weighs the same; the methods every clip has)."""
    methods = [m for m in results[0] if all(m in r for r in results)] if results else []
    out = {}
    for m in methods:
        out[m] = {}
        for k in results[0][m]:
            vals = [r[m][k] for r in results]
            out[m][k] = None if any(v is None for v in vals) else round(float(np.mean(vals)), digits)
    return out
