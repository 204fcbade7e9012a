"""Honest evaluation: every validation image at full size, every method side by side.

Rows: ``identity`` (the degraded input itself), the classical re-upsamplings of the same 60%
frame (``bicubic``, ``lanczos``), an ``unsharp`` mask tuned on training images only, the
``teacher`` and the ``student``.  Scores: RGB PSNR and SSIM with :data:`sharpkd.metrics.SSIM_SETTINGS`,
per image and as the mean over images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from .classical import baseline_outputs
from .imageio import save_png
from .metrics import SSIM_SETTINGS, score, summarize
from .models import count_macs, count_params
from .report import comparison_grid
from .teacher import infer

METHOD_ORDER = ("identity", "bicubic", "lanczos", "unsharp", "teacher", "student")


def restore(model: torch.nn.Module, images: Sequence[np.ndarray], *, device: str = "cpu", tile: int = 1024,
            overlap: int = 32) -> list[np.ndarray]:
    """Run a student (or any image-to-image model on [0, 1] RGB) on full images, tiled to bound memory."""
    return infer(model, list(images), tile=tile, overlap=overlap, device=device, desc="student")


def evaluate(names: Sequence[str], gts: Sequence[np.ndarray], degraded: Sequence[np.ndarray],
             teacher: Sequence[np.ndarray] | None, student: Sequence[np.ndarray], *, scale: float,
             unsharp: tuple[float, float]) -> tuple[list[dict], dict[str, dict[str, np.ndarray]]]:
    """Score every method on every image. Returns (per-image rows, {image: {method: output}})."""
    rows, outputs = [], {}
    for i, name in enumerate(names):
        outs = baseline_outputs(gts[i], scale=scale, unsharp_radius=unsharp[0], unsharp_amount=unsharp[1])
        if not np.array_equal(outs["identity"], degraded[i]):
            raise AssertionError(f"{name}: the degraded input differs from degrade(ground truth)")
        if teacher is not None:
            outs["teacher"] = teacher[i]
        outs["student"] = student[i]
        outputs[name] = outs
        for method in METHOD_ORDER:
            if method in outs:
                rows.append({"image": name, "method": method} | score(outs[method], gts[i]))
    return rows, outputs


def summary_json(rows: list[dict], *, unsharp: tuple[float, float], model: torch.nn.Module, arch: str,
                 scale: float) -> dict:
    """The committed metrics: mean PSNR/SSIM per method plus the settings that produced them."""
    summ = summarize(rows, rounded=True)
    summ = {m: summ[m] for m in METHOD_ORDER if m in summ}
    ident = summ["identity"]
    return {
        "methods": summ,
        "student_gain_over_input": {"psnr_db": round(summ["student"]["psnr"] - ident["psnr"], 4),
                                    "ssim": round(summ["student"]["ssim"] - ident["ssim"], 5)},
        "n_images": len({r["image"] for r in rows}),
        "degradation": {"scale": scale, "down": "bilinear (antialiased, Pillow)", "up": "bilinear"},
        "unsharp": {"radius": unsharp[0], "amount": unsharp[1], "tuned_on": "training crops"},
        "student": {"arch": arch, "parameters": count_params(model), "macs_per_1080p_frame": count_macs(model, 1080, 1920)},
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

