"""Honest evaluation: every validation image at full size, every method side by side.

The evaluate stage is the only place that scores methods.  Rows (:data:`METHOD_ORDER`):
``identity`` (the degraded input itself), the classical re-upsamplings of the same 60% frame
(``bicubic``, ``lanczos``), an ``unsharp`` mask tuned on training images only, the teacher before
adaptation (``teacher_as_is``, when it was adapted), the ``teacher`` and the ``student``, the
student run by :func:`sharpkd.inference.tiled.run_model` exactly as ``sharpkd sharpen`` runs it.
Scores: RGB PSNR and SSIM with :data:`sharpkd.evaluation.metrics.SSIM_SETTINGS`, per image and as the mean
over images.

Two files come out of a run: :func:`summary` (``eval.json``, declared as DVC metrics: numbers
worth diffing) and :func:`settings` (``eval_settings.json``: how they were measured).  The stage
scores the primary set (``degrade.codec``) and each extra link set (``degrade.val_links``) the
same way; ``eval.json`` keeps the latter under ``links.<spec>`` with the primary set's keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from sharpkd.evaluation.classical import baseline_outputs
from sharpkd.images import save_png
from sharpkd.evaluation.metrics import SSIM_SETTINGS, score, summarize
from sharpkd.evaluation.figures import comparison_grid

METHOD_ORDER = ("identity", "bicubic", "lanczos", "unsharp", "teacher_as_is", "teacher", "student")


def evaluate(names: Sequence[str], gts: Sequence[np.ndarray], degraded: Sequence[np.ndarray],
             networks: Mapping[str, Sequence[np.ndarray]], *, scale: float,
             unsharp: tuple[float, float], link: dict | None = None) -> tuple[list[dict], dict[str, dict[str, np.ndarray]]]:
    """Score every method on every image. ``networks`` maps method names (``teacher``, ``student``,
    ...) to their outputs, in ``names`` order. Returns (per-image rows, {image: {method: output}})."""
    rows, outputs = [], {}
    for i, name in enumerate(names):
        outs = baseline_outputs(gts[i], scale=scale, unsharp_radius=unsharp[0], unsharp_amount=unsharp[1], link=link)
        if not np.array_equal(outs["identity"], degraded[i]):
            raise AssertionError(f"{name}: the degraded input differs from degrade(ground truth)")
        outs |= {method: images[i] for method, images in networks.items()}
        outputs[name] = outs
        for method in METHOD_ORDER:
            if method in outs:
                rows.append({"image": name, "method": method} | score(outs[method], gts[i]))
    return rows, outputs


def summary(rows: list[dict]) -> dict:
    """Mean PSNR/SSIM per method (3 and 4 decimals) and the student's gain over the input."""
    summ = summarize(rows, rounded=True)
    methods = {m: {"psnr": summ[m]["psnr"], "ssim": summ[m]["ssim"]} for m in METHOD_ORDER if m in summ}
    out = {"methods": methods, "n_images": len({r["image"] for r in rows})}
    if "student" in methods:
        out["student_gain_over_input"] = {"psnr_db": round(methods["student"]["psnr"] - methods["identity"]["psnr"], 4),
                                          "ssim": round(methods["student"]["ssim"] - methods["identity"]["ssim"], 5)}
    return out


def settings(*, scale: float, unsharp: tuple[float, float], sizes: Sequence[str], student_arch: str,
             teacher: Mapping, report_size: str | None, link: Mapping | None = None,
             val_links: Sequence[str] = (), train_links: Sequence[str] = ()) -> dict:
    """How ``eval.json`` was measured (not a metrics file: nothing here is worth diffing).
    ``val_links``: the extra link sets (``eval.json`` ``links``); ``train_links``: the training mixture."""
    return {
        "degradation": {"scale": scale, "down": "bilinear (antialiased, Pillow)", "up": "bilinear"}
                       | dict(link or {"codec": "none"}),
        "unsharp": {"radius": unsharp[0], "amount": unsharp[1], "tuned_on": "training crops"},
        "sizes": sorted(sizes),
        "report_protocol_size": report_size,
        "val_links": list(val_links),
        "train_links": list(train_links),
        "student": {"arch": student_arch},
        "teacher": dict(teacher),
        "ssim_settings": {k: v for k, v in SSIM_SETTINGS.items() if k != "reference"},
        "psnr": "RGB, all pixels and channels, data_range 255",
    }


def write_outputs(outputs: Mapping[str, Mapping[str, np.ndarray]], out_dir: str | Path,
                  methods: Sequence[str] = ("teacher", "student")) -> None:
    """Restored images as PNG: ``<out_dir>/<method>/<image>.png``."""
    for name, outs in outputs.items():
        for m in methods:
            if m in outs:
                save_png(Path(out_dir) / m / f"{Path(name).stem}.png", outs[m])


def grid(outputs: Mapping[str, Mapping[str, np.ndarray]], gts: Mapping[str, np.ndarray], count: int) -> np.ndarray:
    """Comparison grid of the first ``count`` images: degraded | teacher | student | ground truth."""
    rows = []
    for name in list(outputs)[:count]:
        o = outputs[name]
        cols = {"degraded": o["identity"]}
        if "teacher" in o:
            cols["teacher"] = o["teacher"]
        cols |= {"student": o["student"], "ground truth": gts[name]}
        rows.append((name, cols))
    # full-size frames are shown 480 px wide with a x3 zoom of 160 px of original pixels
    width = min(480, max(r[1]["degraded"].shape[1] for r in rows))
    return comparison_grid(rows, col_width=width)
