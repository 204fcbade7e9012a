"""The one training loop: teacher adaptation and student distillation both run :func:`fit`.

What it owns, for every model it trains:

* **Sampling** (:func:`sample_batch`): the global batch of step ``k`` is ``batch`` random square
  patches (random horizontal flip and 90-degree rotation) drawn with
  ``numpy.random.default_rng([seed, k])``, aligned across the degraded input, the ground truth and
  (when given) the teacher's output.  Any stochastic layer is seeded from ``(seed, k)`` too, so the
  random state at a step is a function of the seed and the step and needs no saving.  With
  ``torchrun`` each of the ``W`` processes takes every ``W``-th sample of the same global batch,
  so data-parallel training sees the same data as one process (DDP averages the gradients).
* **Schedule**: AdamW (betas 0.9/0.999), cosine learning rate
  ``lr * (floor + (1 - floor) * (1 + cos(pi * s / S)) / 2)`` over the ``S`` steps, optional
  gradient-norm clipping.
* **Resume**: with ``state_path``, model, optimizer, scheduler, history and the running epoch sums
  are saved at every epoch end (and every ``checkpoint_every`` steps); a run started again with
  the same fingerprint continues from there and ends with the same weights as an uninterrupted
  run.  The state is a plain ``torch.save`` of tensors and containers, read with
  ``weights_only=True``.  Callers keep it outside the pipeline's outputs
  (:func:`state_file`) and delete it once their outputs are written.
* **AMP**: bf16 autocast on CUDA; fp32 on CPU (deterministic there).
* **Validation**: an optional ``validate(model) -> {"val_psnr", ...}`` after every epoch; the
  weights of the epoch with the best ``val_psnr`` are the result.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.distributed as dist

from sharpkd.tensors import imgs2tensor, stacks2tensor
from sharpkd.errors import SharpkdError
from sharpkd.files import atomic_path

log = logging.getLogger("sharpkd.training.loop")

STATE_FORMAT = "sharpkd-train-state/2"

LossFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], "tuple[torch.Tensor, dict]"]


@dataclass
class Pairs:
    """Aligned training crops: degraded input, ground truth and (optionally) the teacher's output.

    A degraded input may stack ``k`` received frames on its channels (``H x W x 3k``, the current
    frame first): the input of a temporal student (``frames`` of :class:`sharpkd.nets.students.SharpNet`)."""

    degraded: list[np.ndarray]
    gt: list[np.ndarray]
    teacher: list[np.ndarray] | None = None

    def __post_init__(self) -> None:
        if not self.gt:
            raise SharpkdError("no training crops: check the slice stage output")
        if len(self.degraded) != len(self.gt) or (self.teacher is not None and len(self.teacher) != len(self.gt)):
            raise SharpkdError("degraded, ground-truth and teacher crops differ in number")
        for i, g in enumerate(self.gt):
            others = [self.degraded[i]] + ([self.teacher[i]] if self.teacher is not None else [])
            for j, a in enumerate([g, *others]):
                stack = j == 1 and isinstance(a, np.ndarray) and a.ndim == 3 and a.shape[2] % 3 == 0 and a.shape[2] > 3
                if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 3 or (a.shape[2] != 3 and not stack):
                    raise SharpkdError(f"training crop {i}: expected HxWx3 uint8 arrays, got "
                                       f"{getattr(a, 'dtype', type(a))} {getattr(a, 'shape', '')}")
                if a.shape[:2] != g.shape[:2]:
                    raise SharpkdError(f"training crop {i}: sizes differ ({a.shape} vs ground truth {g.shape})")


def patch_size(pairs: Pairs, patch: int) -> int | None:
    """The square patch side that training samples: ``patch``, or the largest square that fits every
    crop when ``patch`` exceeds one; None for ``patch`` 0 (whole crops)."""
    return min(patch, *(min(im.shape[:2]) for im in pairs.gt)) if patch > 0 else None


def sample_batch(pairs: Pairs, step: int, seed: int, batch: int, patch: int,
                 rank: int = 0, world: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The slice of global batch ``step`` that belongs to ``rank`` (see the module docstring)."""
    rng = np.random.default_rng([seed, step])
    p = patch_size(pairs, patch)
    idx = rng.integers(0, len(pairs.gt), size=batch)
    items = []
    for i in idx:
        h, w = pairs.gt[i].shape[:2]
        ph, pw = (p, p) if p else (h, w)
        y, x = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        flip, rot = bool(rng.integers(0, 2)), int(rng.integers(0, 4))
        items.append((int(i), y, x, ph, pw, flip, rot))
    if p is None and len({(it[3], it[4]) for it in items}) > 1:
        raise SharpkdError("training crops differ in size: set a patch size > 0")

    def take(images: list[np.ndarray]) -> torch.Tensor:
        out: list[np.ndarray] = []
        for i, y, x, ph, pw, flip, rot in items[rank::world]:
            a = images[i][y:y + ph, x:x + pw]
            if flip:
                a = a[:, ::-1]
            out.append(np.ascontiguousarray(np.rot90(a, rot)))
        return imgs2tensor(out) if out[0].shape[2] == 3 else stacks2tensor(out)

    return take(pairs.degraded), take(pairs.gt), (take(pairs.teacher) if pairs.teacher is not None else None)


def epoch_steps(steps_per_epoch: int, batch: int, patch: int, pairs: Pairs) -> int:
    """``steps_per_epoch``, or for 0 the steps of one pass over the training crops: as many patch
    pixels as the crops hold, ``ceil(sum(H * W) / (batch * patch^2))``."""
    steps = int(steps_per_epoch)
    if steps < 0:
        raise SharpkdError(f"steps_per_epoch must be >= 0 (0 = one pass over the crops), got {steps}")
    if steps:
        return steps
    p = patch_size(pairs, int(patch))
    pixels = sum(im.shape[0] * im.shape[1] for im in pairs.gt)
    per_step = int(batch) * (p * p if p else pairs.gt[0].shape[0] * pairs.gt[0].shape[1])
    return max(1, math.ceil(pixels / per_step))


def cosine(total: int, floor: float = 0.0) -> Callable[[int], float]:
    """LR factor ``floor + (1 - floor) * (1 + cos(pi * min(s, total) / total)) / 2`` (closed form: exact on resume)."""
    return lambda s: floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(s, total) / max(total, 1)))


# ----------------------------------------------------------------------------------- identity


def code_version() -> str:
    """SHA-256 of the package's Python sources: a resume state written by other code is not resumed."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def fingerprint(config: dict, arrays: Iterable[np.ndarray]) -> str:
    """Identifies a run: its settings, every byte of its data and the code version."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    h.update(code_version().encode())
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def state_file(state_dir: str | os.PathLike, name: str, fp: str) -> Path:
    """``<state_dir>/<name>-<fingerprint prefix>.pt``; older states of ``name`` are removed."""
    state_dir = Path(state_dir)
    path = state_dir / f"{name}-{fp[:16]}.pt"
    for old in state_dir.glob(f"{name}-*.pt"):
        if old != path:
            old.unlink(missing_ok=True)
    return path


def _load_state(path: Path | None, fp: str) -> dict | None:
    if path is None or not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt state is ignored, not trusted
        log.warning("ignoring unreadable resume state %s (%s)", path, str(exc).splitlines()[0] if str(exc) else exc)
        return None
    if state.get("format") != STATE_FORMAT or state.get("fingerprint") != fp:
        log.info("resume state %s belongs to other settings, data or code: starting afresh", path)
        return None
    return state


# --------------------------------------------------------------------------------------- loop


def fit(
    model: torch.nn.Module,
    pairs: Pairs,
    loss_fn: LossFn,
    *,
    lr: float,
    epochs: int,
    steps_per_epoch: int,
    batch: int,
    patch: int,
    seed: int,
    weight_decay: float = 0.0,
    grad_clip: float = 0.0,
    lr_floor: float = 0.0,
    device: str | torch.device = "cpu",
    state_path: str | os.PathLike | None = None,
    fingerprint: str = "",
    checkpoint_every: int = 0,
    validate: Callable[[torch.nn.Module], dict] | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    desc: str = "train",
    progress: bool = True,
) -> tuple[torch.nn.Module, dict, list[dict]]:
    """Train ``model`` in place on ``pairs`` with ``loss_fn(out, gt, teacher) -> (loss, {term: value})``.

    Runs ``epochs * steps_per_epoch`` steps (see the module docstring).  Returns
    ``(model, best, history)``: ``history`` has one record per epoch (``epoch``, ``step``,
    ``train_loss`` and ``train_<term>`` means over the epoch, plus what ``validate`` returns);
    ``best`` is the record of the epoch whose weights the model ends with (the best ``val_psnr``
    with ``validate``, else the last).  ``on_epoch(epoch, record)`` is called on rank 0 after each
    epoch, and first for the epochs restored from a resume state; ``on_step(step)`` after each
    optimiser step.  The model ends in eval mode.
    """
    if epochs < 1 or steps_per_epoch < 1 or batch < 1 or lr <= 0 or checkpoint_every < 0:
        raise SharpkdError(f"training needs epochs >= 1, steps per epoch >= 1, batch >= 1, lr > 0 and "
                           f"checkpoint_every >= 0; got epochs={epochs} steps={steps_per_epoch} batch={batch} "
                           f"lr={lr} checkpoint_every={checkpoint_every}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    total = epochs * steps_per_epoch
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    rank = dist.get_rank() if world > 1 else 0
    if batch % world:
        raise SharpkdError(f"batch {batch} must be divisible by the {world} processes")

    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=float(lr), betas=(0.9, 0.999), weight_decay=float(weight_decay))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine(total, lr_floor))

    state_path = Path(state_path) if state_path else None
    state = _load_state(state_path, fingerprint)
    step, history, sums, best, best_weights = 0, [], {}, {}, None
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, history, sums = int(state["step"]), json.loads(state["history"]), json.loads(state["sums"])
        best = json.loads(state["best"])
        best_weights = state.get("best_weights")
        log.info("resuming %s from step %d of %d (%s)", desc, step, total, state_path)
        if on_epoch and rank == 0:
            for past in history:  # replayed, so a logger sees every epoch exactly once per run
                on_epoch(int(past["epoch"]), past)

    def save_state() -> None:
        if state_path is None or rank != 0:
            return
        st = {"format": STATE_FORMAT, "fingerprint": fingerprint, "step": step,
              "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
              "history": json.dumps(history), "sums": json.dumps(sums), "best": json.dumps(best)}
        if best_weights is not None:
            st["best_weights"] = best_weights
        with atomic_path(state_path) as tmp:
            torch.save(st, tmp)

    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    model.train()
    if cuda:
        model.to(memory_format=torch.channels_last)
    from tqdm import tqdm

    bar = tqdm(total=total, initial=step, desc=desc, unit="step", disable=rank != 0 or not progress or None)
    rng_devices = [device.index if device.index is not None else torch.cuda.current_device()] if cuda else []
    try:
        with torch.random.fork_rng(devices=rng_devices):
            while step < total:
                torch.manual_seed(int(np.random.default_rng([seed, step, 1]).integers(0, 2**62)))
                x, y, t = sample_batch(pairs, step, seed, batch, patch, rank, world)
                x, y = x.to(device), y.to(device)
                t = t.to(device) if t is not None else None
                if cuda:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda):
                    out = ddp(x)
                loss, terms = loss_fn(out.float(), y, t)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, grad_clip)
                optimizer.step()
                scheduler.step()
                step += 1
                value = float(loss.detach())
                for k, v in {"loss": value, **{k: float(v) for k, v in terms.items()}}.items():
                    sums[k] = sums.get(k, 0.0) + v
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}")
                if step % steps_per_epoch == 0:
                    record = {"epoch": step // steps_per_epoch, "step": step}
                    record |= {f"train_{k}": v / steps_per_epoch for k, v in sums.items()}
                    sums = {}
                    if rank == 0:
                        if validate is not None:
                            record |= validate(model)
                            model.train()
                        history.append(record)
                        if validate is None or record["val_psnr"] > best.get("val_psnr", -math.inf):
                            best = dict(record)
                            if validate is not None:
                                best_weights = copy.deepcopy(model.state_dict())
                        if on_epoch:
                            on_epoch(record["epoch"], record)
                    save_state()
                elif checkpoint_every and step % checkpoint_every == 0:
                    save_state()
                if on_step:
                    on_step(step)
    finally:
        bar.close()
    if best_weights is not None:
        model.load_state_dict(best_weights)
    model.eval()
    return model, best, history


__all__ = ["Pairs", "code_version", "cosine", "epoch_steps", "fingerprint", "fit", "patch_size", "sample_batch",
           "state_file"]
