"""Distillation training of a student: resumable, seeded, validated at full size every epoch.

Sampling is a pure function of ``(seed, global step)``: the global batch of step ``k`` is drawn
from ``numpy.random.default_rng([seed, k])``.  Resuming from a checkpoint taken after step ``k``
therefore replays exactly the batches an uninterrupted run would have seen, and with
``torchrun`` each of the ``W`` processes takes every ``W``-th sample of the same global batch,
so data-parallel training sees the same data as one process (gradients are averaged by DDP).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from .errors import SharpkdError
from .fsutil import atomic_path
from .losses import build_loss, needs_teacher
from .metrics import psnr, ssim
from .models import build_student

log = logging.getLogger("sharpkd.train")


@dataclass
class TrainData:
    """Training triplets (degraded, ground truth, teacher) of crops and full-size validation pairs."""

    degraded: list[np.ndarray]
    gt: list[np.ndarray]
    teacher: list[np.ndarray] | None
    val_degraded: list[np.ndarray]
    val_gt: list[np.ndarray]
    val_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.degraded:
            raise SharpkdError("no training crops: check the slice stage output")
        if not self.val_degraded:
            raise SharpkdError("no validation images: check slice.val_fraction")
        if len(self.degraded) != len(self.gt) or (self.teacher is not None and len(self.teacher) != len(self.gt)):
            raise SharpkdError("degraded, ground-truth and teacher crops differ in number")


def to_tensor(batch: list[np.ndarray]) -> torch.Tensor:
    """uint8 NHWC list -> float NCHW in [0, 1]."""
    return torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().div_(255)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float 1x3xHxW in [0, 1] -> uint8 HxWx3 (rounded, clipped)."""
    return x[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()


def patch_size(data: TrainData, patch: int) -> int | None:
    """The square patch side that training samples: ``patch``, or the largest square that fits every
    crop when ``patch`` exceeds one; None for ``patch`` 0 (whole crops)."""
    return min(patch, *(min(im.shape[:2]) for im in data.gt)) if patch > 0 else None


def sample_batch(data: TrainData, step: int, seed: int, batch: int, patch: int,
                 rank: int = 0, world: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The slice of global batch ``step`` that belongs to ``rank``: random crops of ``patch``
    pixels (or the largest square that fits every crop), random flips and 90° rotations."""
    rng = np.random.default_rng([seed, step])
    n = len(data.gt)
    p = patch_size(data, patch)
    idx = rng.integers(0, n, size=batch)
    items = []
    for i in idx:
        h, w = data.gt[i].shape[:2]
        ph, pw = (p, p) if p else (h, w)
        y, x = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        flip, rot = bool(rng.integers(0, 2)), int(rng.integers(0, 4))
        items.append((int(i), y, x, ph, pw, flip, rot))
    if p is None and len({(it[3], it[4]) for it in items}) > 1:
        raise SharpkdError("training crops differ in size: set train.patch > 0")

    def take(images: list[np.ndarray]) -> torch.Tensor:
        out = []
        for i, y, x, ph, pw, flip, rot in items[rank::world]:
            a = images[i][y:y + ph, x:x + pw]
            if flip:
                a = a[:, ::-1]
            out.append(np.ascontiguousarray(np.rot90(a, rot)))
        return to_tensor(out)

    return take(data.degraded), take(data.gt), (take(data.teacher) if data.teacher is not None else None)


@torch.inference_mode()
def validate(model: torch.nn.Module, data: TrainData, device: str) -> dict:
    """Mean PSNR/SSIM (sharpkd.metrics, RGB uint8) of the student on the full validation images."""
    model.eval()
    ps, ss = [], []
    for deg, gt in zip(data.val_degraded, data.val_gt):
        out = to_uint8(model(to_tensor([deg]).to(device)))
        ps.append(psnr(out, gt))
        ss.append(ssim(out, gt))
    model.train()
    return {"val_psnr": float(np.mean(ps)), "val_ssim": float(np.mean(ss))}


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state()}


def save_state(path: Path, step: int, model, optimizer, scheduler, best: dict, history: list, fingerprint: str) -> None:
    """Resume checkpoint: plain tensors and containers, readable with ``torch.load(weights_only=True)``."""
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "best": best,
        "history": json.dumps(history),
        "fingerprint": fingerprint,
        "rng": _rng_state(),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path, fingerprint: str) -> dict | None:
    """The resume checkpoint at ``path`` if it belongs to this exact run (same params and data)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt checkpoint is ignored, not trusted
        log.warning("ignoring unreadable resume checkpoint %s (%s)", path, exc)
        return None
    if state.get("fingerprint") != fingerprint:
        log.info("resume checkpoint %s belongs to other params or data: starting afresh", path)
        return None
    return state


def fingerprint(params: dict, data: TrainData) -> str:
    """Identifies a run: its params and the exact training/validation data."""
    import hashlib

    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for group in (data.degraded, data.gt, data.teacher or [], data.val_degraded, data.val_gt):
        for a in group:
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
    return h.hexdigest()


def epoch_steps(params: dict, data: TrainData) -> int:
    """``train.steps_per_epoch``, or for 0 the steps of one pass over the training crops: as many
    patch pixels as the crops hold, ``ceil(sum(H * W) / (batch * patch^2))``."""
    steps = int(params["steps_per_epoch"])
    if steps < 0:
        raise SharpkdError(f"train.steps_per_epoch must be >= 0 (0 = one pass over the crops), got {steps}")
    if steps:
        return steps
    batch, p = int(params["batch"]), patch_size(data, int(params["patch"]))
    pixels = sum(im.shape[0] * im.shape[1] for im in data.gt)
    per_step = batch * (p * p if p else data.gt[0].shape[0] * data.gt[0].shape[1])
    return max(1, math.ceil(pixels / per_step))


def train(params: dict, data: TrainData, *, device: str = "cpu", state_path: str | os.PathLike | None = None,
          on_epoch: Callable[[int, dict], None] | None = None,
          on_step: Callable[[int], None] | None = None) -> tuple[torch.nn.Module, dict, list[dict]]:
    """Train the student described by ``params`` (the ``train`` section) on ``data``.

    Returns ``(best_model, best_metrics, history)`` where best is chosen by validation PSNR.
    ``on_epoch(epoch, metrics)`` is called after each epoch's validation (rank 0 only), and
    for the epochs restored from a resume checkpoint, in order;
    ``on_step(step)`` after each optimiser step (tests use it to interrupt a run).
    Under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in DistributedDataParallel.
    """
    seed = int(params["seed"])
    epochs, steps_per_epoch = int(params["epochs"]), epoch_steps(params, data)
    total = epochs * steps_per_epoch
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    rank = dist.get_rank() if world > 1 else 0
    if params["batch"] % world:
        raise SharpkdError(f"train.batch={params['batch']} must be divisible by the {world} processes")

    torch.manual_seed(seed)
    model = build_student(params["arch"], **(params.get("arch_config") or {})).to(device)
    loss_fn = build_loss(params["loss"], params.get("vgg") or {}).to(device)
    uses_teacher = needs_teacher(params["loss"])
    if uses_teacher and data.teacher is None:
        raise SharpkdError("the loss uses the teacher but no teacher outputs were given")
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(params["lr"]), weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / max(total, 1))))

    fp = fingerprint(params, data)
    state_path = Path(state_path) if state_path else None
    state = load_state(state_path, fp) if state_path else None
    step, best, history = 0, {"val_psnr": -1.0}, []
    best_weights = copy.deepcopy(model.state_dict())
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        step, history = int(state["step"]), json.loads(state["history"])
        best = dict(state["best"]["metrics"])
        best_weights = state["best"]["weights"]
        log.info("resuming from step %d of %d (%s)", step, total, state_path)
        if on_epoch and rank == 0:
            for past in history:  # replay, so a logger sees every epoch exactly once per run
                on_epoch(int(past["epoch"]), past)

    ddp = model
    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(model)
    use_amp = device.startswith("cuda")
    model.train()

    from tqdm import tqdm

    bar = tqdm(total=total, initial=step, desc=f"train {params['arch']}", unit="step", disable=rank != 0 or None)
    sums: dict[str, float] = {}
    t0 = time.time()
    while step < total:
        x, y, t = sample_batch(data, step, seed, int(params["batch"]), int(params["patch"]), rank, world)
        x, y = x.to(device), y.to(device)
        t = t.to(device) if (t is not None and uses_teacher) else None
        with torch.autocast(device_type="cuda" if use_amp else "cpu", dtype=torch.bfloat16, enabled=use_amp):
            out = ddp(x)
        total_loss, terms = loss_fn(out.float(), y, t)
        optimizer.zero_grad(set_to_none=True)
        total_loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        value = float(total_loss.detach())
        sums["loss"] = sums.get("loss", 0.0) + value
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}")
        if step % steps_per_epoch == 0:
            epoch = step // steps_per_epoch
            # checkpoints are taken at epoch ends, so ``sums`` always covers a whole epoch
            metrics = {f"train_{k}": v / steps_per_epoch for k, v in sums.items()}
            sums = {}
            if rank == 0:
                metrics |= validate(model, data, device)
                metrics |= {"epoch": epoch, "step": step, "lr": scheduler.get_last_lr()[0],
                            "seconds": round(time.time() - t0, 2)}
                history.append(metrics)
                if metrics["val_psnr"] > best["val_psnr"]:
                    best = {k: metrics[k] for k in ("val_psnr", "val_ssim", "epoch")}
                    best_weights = copy.deepcopy(model.state_dict())
                if on_epoch:
                    on_epoch(epoch, metrics)
                if state_path:
                    save_state(state_path, step, model, optimizer, scheduler,
                               {"metrics": best, "weights": best_weights}, history, fp)
        if on_step:
            on_step(step)
    bar.close()
    model.load_state_dict(best_weights)
    model.eval()
    return model, best, history
