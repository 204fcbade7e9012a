"""Run an image-to-image model on an image: the one function every caller uses.

:func:`run_model` is what the evaluate stage, the student's validation during training, the
teacher stage, ``sharpkd sharpen``, ``sharpkd bench`` and the ONNX parity test call, so the
numbers in ``eval.json`` measure the code path that ships.  :func:`prepare` puts a model in the
form it runs in (eval mode, on the device, channels_last weights).

Tiling: an image larger than ``tile`` on a side is cut, along that side, into the fewest equal
windows of at most ``tile`` pixels (``tile`` rounded down to the model's ``multiple_of``) that
overlap by at least ``overlap`` pixels, evenly spaced from edge to edge (:func:`windows`), so
little is computed twice and a batch of windows stacks.  Each window runs through the model and only its
*core* is kept: the boundary between two neighbouring windows is the middle of their overlap, so
every kept pixel lies at least ``overlap // 2`` pixels from an interior window edge.  A purely
local network whose receptive-field radius is at most ``overlap // 2`` therefore gives the
whole-image result (up to float rounding).

Memory: windows are converted from the integer image one batch at a time (:mod:`sharpkd.tensors`)
and their cores written straight into an integer output array, so beyond the input and output
images a call holds ``batch`` windows of float tensors, whatever the image size.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from sharpkd.tensors import check_image, imgs2tensor, tensor2img
from sharpkd.errors import SharpkdError

__all__ = ["DEFAULT_TILE", "PRECISIONS", "SelfEnsemble", "prepare", "resume_key", "run_model", "run_many", "window_cores", "windows"]

#: Window size of ``sharpkd sharpen`` and ``sharpkd bench``: a 1920x1080 frame runs whole.
DEFAULT_TILE = 2048
#: ``run_model(precision=...)``: the autocast dtype on CUDA (``None``: float32, no autocast).
PRECISIONS = {"auto": torch.bfloat16, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


class SelfEnsemble(torch.nn.Module):
    """Geometric self-ensemble ("x8", as in EDSR): the mean of ``model`` over the 8 flips and
    rotations of its input, each output turned back: ``y = 1/8 sum_g g^-1(model(g(x)))``.

    Costs 8 forward passes; for a model that is already equivariant it changes nothing (tested).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.multiple_of = getattr(model, "multiple_of", 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for flip in (False, True):
            xf = x.flip(-1) if flip else x
            for k in range(4):
                y = torch.rot90(self.model(torch.rot90(xf, k, (-2, -1))), -k, (-2, -1))
                y = y.flip(-1) if flip else y
                total = y.float() if total is None else total + y.float()
        return total / 8


def prepare(model: torch.nn.Module, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Eval mode, on ``device``, channels_last weights (oneDNN and cuDNN prefer NHWC); in place."""
    return model.eval().to(device).to(memory_format=torch.channels_last)


def windows(size: int, tile: int, overlap: int, multiple_of: int = 1) -> tuple[list[int], int]:
    """``(starts, length)``: the fewest equal windows of at most ``tile`` pixels that cover
    ``[0, size)`` with neighbours overlapping by at least ``overlap``, evenly spaced from edge to edge.

    ``length`` is a multiple of ``multiple_of`` unless the whole side fits in one window.
    """
    if size <= tile:
        return [0], size
    n = math.ceil((size - overlap) / (tile - overlap))
    length = math.ceil((size + (n - 1) * overlap) / n)
    while True:
        length = min(tile, math.ceil(length / multiple_of) * multiple_of)
        starts = [round(i * (size - length) / (n - 1)) for i in range(n)]
        if all(a + length - b >= overlap for a, b in zip(starts, starts[1:])) or length == tile:
            return starts, length
        length += 1


def window_cores(starts: Sequence[int], length: int, size: int) -> list[tuple[int, int]]:
    """The ``[begin, end)`` range each window keeps: cut at the middle of every overlap."""
    cuts = [0] + [(starts[i + 1] + starts[i] + length) // 2 for i in range(len(starts) - 1)] + [size]
    return list(zip(cuts[:-1], cuts[1:]))


def _check_args(tile: int, overlap: int, multiple_of: int, batch: int) -> None:
    if tile < multiple_of or tile < 1:
        raise SharpkdError(f"tile ({tile}) must be at least {max(multiple_of, 1)} pixels for this model")
    if overlap < 0 or 2 * overlap > (tile // multiple_of) * multiple_of:
        raise SharpkdError(f"overlap ({overlap}) must be >= 0 and at most half the tile ({tile})")
    if batch < 1:
        raise SharpkdError(f"batch must be >= 1, got {batch}")


@torch.inference_mode()
def run_model(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    tile: int = DEFAULT_TILE,
    overlap: int = 32,
    device: str | torch.device = "cpu",
    batch: int = 1,
    strength: float = 1.0,
    precision: str = "auto",
) -> np.ndarray:
    """Restore one ``H x W x 3`` uint8 or uint16 RGB image; returns the same dtype and size.

    ``model`` maps float ``N x 3 x h x w`` RGB in [0, 1] to the same shape (a student or a
    teacher, already :func:`prepare`-d for ``device``); it runs under ``torch.inference_mode``
    on channels_last input, with bf16 autocast on CUDA.  A student compiled for another runtime
    (:class:`sharpkd.inference.runtimes.CompiledStudent`, 8-bit images only) runs each uint8 window itself;
    its ``strength`` blend is computed on the uint8 output.  ``strength`` blends input ``x`` and model
    output ``m`` before rounding: ``clip(x + strength * (m - x), 0, 1)`` (1 = the model output).
    ``precision`` (:data:`PRECISIONS`) sets that autocast on CUDA: ``auto`` and ``bf16`` bf16,
    ``fp16`` float16, ``fp32`` none; the CPU runs float32 whatever it says.
    See the module docstring for the tiling.
    """
    if precision not in PRECISIONS:
        raise SharpkdError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    check_image(image)
    device = torch.device(device)
    cuda = device.type == "cuda"
    multiple_of = max(1, int(getattr(model, "multiple_of", 1)))
    _check_args(tile, overlap, multiple_of, batch)
    h, w = image.shape[:2]
    t = (tile // multiple_of) * multiple_of
    ys, th = windows(h, t, overlap, multiple_of)
    xs, tw = windows(w, t, overlap, multiple_of)
    ycore = dict(zip(ys, window_cores(ys, th, h)))
    xcore = dict(zip(xs, window_cores(xs, tw, w)))
    boxes = [(y0, x0) for y0 in ys for x0 in xs]
    out = np.empty_like(image)
    compiled = getattr(model, "run_uint8", None)
    if compiled is not None:  # a student compiled for another runtime (sharpkd.inference.runtimes): uint8 windows in and out
        if image.dtype != np.uint8:
            raise SharpkdError(f"runtime {model.runtime} takes 8-bit images; use runtime torch for {image.dtype}")
        for y0, x0 in boxes:
            win = image[y0 : y0 + th, x0 : x0 + tw]
            y = compiled(win)
            if strength != 1.0:
                f = win.astype(np.float32)
                y = np.clip(np.rint(f + strength * (y - f)), 0, 255).astype(np.uint8)
            (a, b), (c, d) = ycore[y0], xcore[x0]
            out[a:b, c:d] = y[a - y0 : b - y0, c - x0 : d - x0]
        return out
    for k in range(0, len(boxes), batch):
        chunk = boxes[k : k + batch]
        x = imgs2tensor([image[y0 : y0 + th, x0 : x0 + tw] for y0, x0 in chunk])
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type="cuda", dtype=PRECISIONS[precision] or torch.bfloat16,
                            enabled=cuda and PRECISIONS[precision] is not None):
            y = model(x)
        y = y.float()
        if y.shape != x.shape:
            raise SharpkdError(f"the model changed the image shape from {tuple(x.shape)} to {tuple(y.shape)}")
        if strength != 1.0:
            y = x + strength * (y - x)
        for j, (y0, x0) in enumerate(chunk):
            (a, b), (c, d) = ycore[y0], xcore[x0]
            out[a:b, c:d] = tensor2img(y[j, :, a - y0 : b - y0, c - x0 : d - x0], image.dtype)
    return out


def resume_key(model: torch.nn.Module, **settings) -> str:
    """SHA-256 naming what :func:`run_many` computes with ``model``: its structure (``repr``), every
    byte of its weights and buffers, the ``settings`` (tile, overlap, device ...), the torch
    version and the code that runs it (this module and :mod:`sharpkd.tensors`).  Outputs saved
    under one key are reused only by a call that would compute the same bytes."""
    h = hashlib.sha256(repr(model).encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(torch.__version__.encode())
    for module in (__file__, Path(__file__).parents[1] / "tensors.py"):
        h.update(Path(module).read_bytes())
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.detach().cpu().reshape(-1).clone().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _saved_output(path: Path, image: np.ndarray) -> np.ndarray | None:
    """The output saved at ``path`` if it is readable and shaped like ``image``, else None."""
    try:
        out = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None  # missing, or cut short by a kill mid-write elsewhere: recomputed
    return out if out.shape == image.shape and out.dtype == image.dtype else None


def run_many(model: torch.nn.Module, images: Iterable[np.ndarray], *, desc: str = "model", progress: bool = True,
             resume_dir: str | os.PathLike | None = None, part: tuple[int, int] = (0, 1),
             **kwargs) -> list[np.ndarray]:
    """:func:`run_model` on each image (keyword arguments passed on), with a progress bar.

    ``part`` ``(rank, world)``: only the images ``rank, rank + world, rank + 2 * world ...``
    are run and their outputs returned (one process's share of a sharded run; every output is a
    function of its image alone, so the shares put back together are the one-process result,
    :func:`sharpkd.training.distributed.gather_parts`).

    ``resume_dir`` (a folder the caller names by :func:`resume_key`): each output is also saved
    there as ``<sha256 of the input>.npy`` (written to a temporary name, then renamed) and an
    output already saved is read back instead of computed, so a run interrupted after hours of
    teacher inference resumes where it stopped, with the same bytes.  Unreadable files are
    recomputed.
    """
    rank, world = part
    if not 0 <= rank < world:
        raise SharpkdError(f"part {part}: rank must be in [0, world)")
    images = list(images)[rank::world]
    folder = None if resume_dir is None else Path(resume_dir)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    bar = tqdm(images, desc=desc, unit="img", disable=not progress or len(images) < 2)
    outs = []
    for img in bar:
        if folder is None:
            outs.append(run_model(model, img, **kwargs))
            continue
        digest = hashlib.sha256(f"{img.shape}{img.dtype}".encode())
        digest.update(np.ascontiguousarray(img).data)
        path = folder / f"{digest.hexdigest()}.npy"
        out = _saved_output(path, img)
        if out is None:
            out = run_model(model, img, **kwargs)
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
            np.save(tmp, out, allow_pickle=False)
            os.replace(tmp, path)
        outs.append(out)
    return outs
