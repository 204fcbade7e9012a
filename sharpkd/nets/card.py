"""Model cards: what a trained student is, what it was trained on, and how it scored.

* :func:`student_card` is written by the train stage beside the weights
  (``models/<profile>/student.json``) and into the weights' metadata.
* :func:`shipped_card` extends it for the student shipped inside the package
  (``tools/ship.py``): the evaluation summary of the run and what identifies the run (the git
  revision, the weights' md5 as ``dvc.lock`` records it, the stage's params).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from sharpkd.nets.cost import model_cost
from sharpkd.errors import SharpkdError


def student_card(params: dict, model: torch.nn.Module, *, profile: str, train_crops: int, val_images: int,
                 best: dict, steps_per_epoch: int, processes: int, device: str) -> dict:
    """The card of a student trained with the params.yaml ``train`` section ``params``."""
    return {
        "arch": params["arch"],
        "arch_config": params.get("arch_config") or {},
        **model_cost(model),
        "data": {"profile": profile, "train_crops": train_crops, "val_images": val_images,
                 "degradation": "bilinear down to degrade.scale, bilinear up (see params.yaml)"},
        "validation": {"psnr": round(best["val_psnr"], 4), "ssim": round(best["val_ssim"], 5),
                       "best_epoch": best["epoch"], "metric": "RGB uint8, full validation images"},
        "training": {k: params[k] for k in ("epochs", "batch", "patch", "lr", "seed")}
                    | {"steps_per_epoch": steps_per_epoch, "loss": params["loss"], "processes": processes,
                       "device": device}
                    | ({"int8": params["int8"]} if int((params.get("int8") or {}).get("steps", 0)) > 0 else {}),
    }


def md5_file(path: str | Path) -> str:
    """MD5 of a file, as DVC records it in ``dvc.lock``."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def shipped_card(card: dict, evaluation: dict, settings: dict, lock: dict, weights: str | Path, *, profile: str,
                 revision: str) -> dict:
    """``card`` plus the run's evaluation (``eval.json`` and its settings file) and provenance.

    ``lock`` is the parsed ``dvc.lock``; the weights must be the train output it records
    (same md5), or the card would describe another model.
    """
    stage = (lock.get("stages") or {}).get("train")
    if not stage:
        raise SharpkdError("dvc.lock has no train stage: run `dvc repro` first")
    recorded = next((o.get("md5") for o in stage.get("outs", []) if str(o.get("path", "")).endswith("student.safetensors")),
                    None)
    md5 = md5_file(weights)
    if md5 != recorded:
        raise SharpkdError(f"{weights} (md5 {md5}) is not the student dvc.lock records ({recorded}); "
                           "run `dvc repro` (or `dvc checkout`) first")
    return card | {
        "evaluation": evaluation | {"settings": settings},
        "provenance": {"profile": profile, "git_revision": revision, "dvc_lock_student_md5": md5,
                       "dvc_lock_train_params": stage.get("params", {})},
    }


__all__ = ["md5_file", "shipped_card", "student_card"]
