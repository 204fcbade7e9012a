"""Images <-> tensors, and the one padding rule: the only place that converts between them.

Images are numpy ``H x W x 3`` arrays of ``uint8`` (0..255) or ``uint16`` (0..65535) RGB.
Tensors are float32 ``N x 3 x H x W`` RGB in [0, 1].

* :func:`img2tensor` / :func:`imgs2tensor`: ``image / peak`` (peak 255 or 65535), as ``1 x 3 x H x W``
  or a stacked ``N x 3 x H x W`` batch.
* :func:`tensor2img`: ``round(clip(t, 0, 1) * peak)`` back to ``uint8`` (or ``uint16``),
  ``H x W x 3``; the exact inverse of :func:`img2tensor` on its outputs.
* :func:`pad_to` / :func:`pad_to_multiple` / :func:`crop_to`: networks that need sizes of a
  multiple (pixel-unshuffle, pooling, a U-Net's down-samplings) replicate-pad the bottom and
  right edges and crop their output back.  Written with ``torch.sym_max`` and ``index_select``
  when traced, so ``torch.export`` (ONNX) gets one graph for every size.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sharpkd.errors import SharpkdError

PEAKS = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def check_image(img: np.ndarray, what: str = "image") -> None:
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype not in PEAKS:
        desc = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise SharpkdError(f"{what}: expected an HxWx3 uint8 or uint16 RGB array, got {desc}")


def img2tensor(img: np.ndarray) -> torch.Tensor:
    """``H x W x 3`` uint8/uint16 -> float32 ``1 x 3 x H x W`` in [0, 1] (``img / peak``)."""
    check_image(img)
    return _as_float(np.ascontiguousarray(img)[None])


def imgs2tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """Same-size, same-dtype images -> float32 ``N x 3 x H x W`` batch in [0, 1]."""
    for i, img in enumerate(images):
        check_image(img, f"image {i}")
    return _as_float(np.stack(images))


def stacks2tensor(stacks: Sequence[np.ndarray]) -> torch.Tensor:
    """Same-size uint8 ``H x W x 3k`` stacks of ``k`` RGB frames (channels frame by frame) ->
    float32 ``N x 3k x H x W`` in [0, 1]: the input of a temporal student."""
    for i, a in enumerate(stacks):
        if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] % 3 or not a.shape[2]:
            desc = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
            raise SharpkdError(f"frame stack {i}: expected an HxWx3k uint8 array, got {desc}")
    return _as_float(np.stack(stacks))


def _as_float(batch: np.ndarray) -> torch.Tensor:
    peak = PEAKS[batch.dtype]
    t = torch.from_numpy(batch if batch.dtype == np.uint8 else batch.astype(np.float32))
    return t.permute(0, 3, 1, 2).float().div_(peak)


def tensor2img(t: torch.Tensor, dtype=np.uint8) -> np.ndarray:
    """float ``1 x 3 x H x W`` (or ``3 x H x W``) -> ``H x W x 3`` ``dtype`` image: ``round(clip(t) * peak)``."""
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise SharpkdError(f"tensor2img converts one image, got a batch of {t.shape[0]}")
        t = t[0]
    if t.ndim != 3 or t.shape[0] != 3:
        raise SharpkdError(f"tensor2img expects a 3 x H x W tensor, got shape {tuple(t.shape)}")
    dtype = np.dtype(dtype)
    q = t.detach().float().clamp(0, 1).mul_(PEAKS[dtype]).round_()
    # quantise in torch (vectorised, threaded), then one copy into H x W x 3 order
    q = q.to(torch.uint8 if dtype == np.uint8 else torch.int32).permute(1, 2, 0).contiguous().cpu().numpy()
    return q if dtype == np.uint8 else q.astype(dtype)


# ------------------------------------------------------------------------------------- padding


def _tracing() -> bool:
    """True under torch.compile / torch.export (ONNX): sizes are symbolic, so no size branches."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


def padded_size(size, multiple: int):
    """``size`` rounded up to a multiple of ``multiple``, and to at least two multiples.

    The floor of two blocks keeps every down-sampled dimension >= 2, which lets torch.export
    (ONNX) trace one graph valid for every size (it specialises dimensions equal to 1).
    """
    if isinstance(size, torch.Tensor):  # TorchScript tracing (the fixed-size runtime graphs): a constant
        size = int(size)
    return torch.sym_max((size + multiple - 1) // multiple, 2) * multiple


def pad_to(x: torch.Tensor, height, width) -> torch.Tensor:
    """Replicate-pad the bottom/right of ``N x C x H x W`` ``x`` to ``height x width`` (no copy when equal)."""
    h, w = x.shape[-2:]
    if not _tracing() and h == height and w == width:
        return x
    return F.pad(x, (0, width - w, 0, height - h), mode="replicate")


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """:func:`pad_to` the :func:`padded_size` of H and W."""
    h, w = x.shape[-2:]
    return pad_to(x, padded_size(h, multiple), padded_size(w, multiple))


def crop_to(y: torch.Tensor, height, width) -> torch.Tensor:
    """The top-left ``height x width`` of ``y`` (the inverse of :func:`pad_to`)."""
    if _tracing():
        # index_select instead of slicing: slicing makes torch.export guard on (padded >= size),
        # which it cannot prove symbolically.
        rows = torch.arange(height, device=y.device)
        cols = torch.arange(width, device=y.device)
        return y.index_select(-2, rows).index_select(-1, cols)
    if y.shape[-2:] == (height, width):
        return y
    return y[..., :height, :width]


__all__ = ["PEAKS", "check_image", "crop_to", "img2tensor", "imgs2tensor", "pad_to", "pad_to_multiple", "padded_size", "stacks2tensor", "tensor2img"]
