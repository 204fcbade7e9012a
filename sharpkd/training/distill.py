"""Student distillation: the student, its loss and its validation on top of :func:`sharpkd.training.loop.fit`.

Validation scores the student the way it ships: a re-parameterized copy (multi-branch blocks
folded) run through :func:`sharpkd.inference.tiled.run_model` on the full validation images, scored
with :mod:`sharpkd.evaluation.metrics` (RGB uint8 PSNR and SSIM).  The best epoch by PSNR is kept.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from sharpkd.errors import SharpkdError
from sharpkd.inference.tiled import prepare, run_model
from sharpkd.training.losses import PrecomputedZoom, ZoomDistillation, build_loss, needs_teacher, needs_teacher_model
from sharpkd.evaluation.metrics import psnr, ssim
from sharpkd.nets.students import build_student
from sharpkd.nets.int8 import to_int8
from sharpkd.training.loop import Pairs, epoch_steps, fingerprint, fit, state_file

#: Validation window size: the whole image up to 2048 px a side, as ``sharpkd sharpen`` runs it.
VAL_TILE = 2048


@dataclass
class TrainData:
    """Training triplets (degraded, ground truth, teacher) of crops and full-size validation pairs.

    ``teacher_model`` (the adapted teacher itself) and ``scale`` (``degrade.scale``) are needed only
    by the ``l2_teacher_zoom`` term, which makes and labels new inputs during training; with
    ``zoom_pool`` (``(inputs, labels)`` from :func:`sharpkd.training.losses.label_zoomed`) that term
    reads labels computed once instead, and no teacher runs during training.
    """

    degraded: list[np.ndarray]
    gt: list[np.ndarray]
    teacher: list[np.ndarray] | None
    val_degraded: list[np.ndarray]
    val_gt: list[np.ndarray]
    val_names: list[str] = field(default_factory=list)
    teacher_model: torch.nn.Module | None = None
    scale: float = 0.6
    zoom_pool: tuple[list[np.ndarray], list[np.ndarray]] | None = None

    def __post_init__(self) -> None:
        if not self.val_degraded:
            raise SharpkdError("no validation images: check slice.val_fraction")
        self.pairs = Pairs(self.degraded, self.gt, self.teacher)  # checks the crops


def inference_copy(model: torch.nn.Module, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A copy of ``model`` in the form that ships: folded (``reparameterize``), eval, :func:`prepare`-d."""
    folded = copy.deepcopy(model)
    if hasattr(folded, "reparameterize"):
        folded.reparameterize()
    return prepare(folded, device)


def validation(data: TrainData, device: str | torch.device = "cpu",
               with_ssim: bool = True) -> Callable[[torch.nn.Module], dict]:
    """``validate(model) -> {"val_psnr", "val_ssim"}``: means over the full validation images.

    ``with_ssim=False`` leaves SSIM out (``{"val_psnr"}`` only): the best epoch, chosen by PSNR, is
    the same, and full-size SSIM is most of what validating costs on a CPU."""

    @torch.inference_mode()
    def validate(model: torch.nn.Module) -> dict:
        m = inference_copy(model, device)
        ps, ss = [], []
        for deg, gt in zip(data.val_degraded, data.val_gt):
            out = run_model(m, deg, tile=VAL_TILE, device=device)
            ps.append(psnr(out, gt))
            if with_ssim:
                ss.append(ssim(out, gt))
        return {"val_psnr": float(np.mean(ps))} | ({"val_ssim": float(np.mean(ss))} if with_ssim else {})

    return validate


def steps_per_epoch(params: dict, data: TrainData) -> int:
    """``train.steps_per_epoch`` (0 = one pass over the training crops' pixels)."""
    return epoch_steps(params["steps_per_epoch"], params["batch"], params["patch"], data.pairs)


def train_student(params: dict, data: TrainData, *, device: str = "cpu",
                  state_dir: str | os.PathLike | None = None,
                  on_epoch: Callable[[int, dict], None] | None = None,
                  on_step: Callable[[int], None] | None = None,
                  val_ssim: bool = True) -> tuple[torch.nn.Module, dict, list[dict]]:
    """Train the student described by ``params`` (the params.yaml ``train`` section) on ``data``.

    The student is built after ``torch.manual_seed(train.seed)``; the loss is
    :func:`sharpkd.training.losses.build_loss` of ``train.loss``.  With ``state_dir`` a resume state is kept
    there, named by a fingerprint of the params, the data and the code
    (:func:`sharpkd.training.loop.state_file`); the caller deletes it once its outputs are written.  Returns ``(model, best, history)`` from
    :func:`sharpkd.training.loop.fit` (best epoch by validation PSNR; ``val_ssim=False`` skips the SSIM
    of each validation, which does not change which epoch is best).

    With ``train.int8.steps > 0`` the best float student is then made int8
    (:func:`sharpkd.nets.int8.to_int8`, its ranges calibrated on the degraded training crops) and
    fine-tuned ``steps`` more steps through the rounding at ``train.int8.lr`` (one more epoch,
    numbered after the float ones, validated in its int8 form); that int8 student is returned.
    """
    uses_teacher = needs_teacher(params["loss"])
    if uses_teacher and data.teacher is None:
        raise SharpkdError("the loss uses the teacher (train.loss) but no teacher outputs were given")
    zoom = None
    if needs_teacher_model(params["loss"]) and data.zoom_pool is not None:
        zoom = PrecomputedZoom(*data.zoom_pool, params.get("zoom", 0.5)).to(device)
    elif needs_teacher_model(params["loss"]):
        if data.teacher_model is None:
            raise SharpkdError("train.loss.l2_teacher_zoom runs the teacher during training, but no teacher model was given")
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            raise SharpkdError("train.loss.l2_teacher_zoom trains in one process only (not under torchrun)")
        zoom = ZoomDistillation(data.teacher_model, params.get("zoom", 0.5), data.scale).to(device)
    torch.manual_seed(int(params["seed"]))
    model = build_student(params["arch"], **(params.get("arch_config") or {}))
    loss_fn = build_loss(params["loss"], params.get("vgg") or {}).to(device)
    pairs = data.pairs if uses_teacher else Pairs(data.degraded, data.gt, None)
    pool = [*data.zoom_pool[0], *data.zoom_pool[1]] if isinstance(zoom, PrecomputedZoom) else []
    fp = fingerprint({"train": params}, [*data.degraded, *data.gt, *(data.teacher or []), *data.val_degraded,
                                         *data.val_gt, *pool])
    state_path = state_file(state_dir, "student", fp) if state_dir is not None else None

    def loss(out: torch.Tensor, gt: torch.Tensor, t: torch.Tensor | None):
        total, terms = loss_fn(out, gt, t)
        if zoom is not None:
            terms["l2_teacher_zoom"] = zoom(model, gt)
            total = total + float(params["loss"]["l2_teacher_zoom"]) * terms["l2_teacher_zoom"]
            terms["l2_teacher_zoom"] = terms["l2_teacher_zoom"].detach()
        return total, terms

    epochs, per_epoch = int(params["epochs"]), steps_per_epoch(params, data)
    common = dict(batch=int(params["batch"]), patch=int(params["patch"]), seed=int(params["seed"]), device=device,
                  fingerprint=fp, validate=validation(data, device, val_ssim), on_step=on_step)
    model, best, history = fit(model, pairs, loss, lr=float(params["lr"]), epochs=epochs, steps_per_epoch=per_epoch,
                               state_path=state_path, on_epoch=on_epoch, desc=f"train {params['arch']}", **common)
    q = params.get("int8") or {}
    if int(q.get("steps", 0)) <= 0:
        return model, best, history
    # train.int8: the best float student made int8 (sharpkd.nets.quant: ranges calibrated on the training
    # inputs), then fine-tuned through the rounding; validated and kept as one more epoch
    model = to_int8(model, data.degraded, first_bits=int(q.get("first_bits", 7)))
    done = epochs * per_epoch

    def shifted(record: dict) -> dict:
        return record | {"epoch": record["epoch"] + epochs, "step": record["step"] + done}

    model, best, tuned = fit(model, pairs, loss, lr=float(q["lr"]), epochs=1, steps_per_epoch=int(q["steps"]),
                             state_path=state_file(state_dir, "student_int8", fp) if state_dir is not None else None,
                             on_epoch=(lambda e, r: on_epoch(e + epochs, shifted(r))) if on_epoch else None,
                             desc=f"int8 fine-tune {params['arch']}", **common)
    return model, shifted(best), history + [shifted(r) for r in tuned]


__all__ = ["TrainData", "inference_copy", "steps_per_epoch", "train_student", "validation"]
