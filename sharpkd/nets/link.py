"""How hard was the link: a small network that tells a received frame that went through a video
codec from one that was only scaled down and up.

The estimate picks between two experts of the same cost (:class:`sharpkd.app.sharpen.Sharpener`,
:data:`sharpkd.app.shipped.EXPERTS`): one trained
on clean pairs, sharper on frames no codec touched, and one trained on the link mixture, which does
not sharpen the codec's artefacts.  It looks at luma detail only -- ``d = 20 (Y - box3(Y))``, ``Y``
the BT.601 luma of the received frame in [0, 1] and ``box3`` its 3x3 mean -- so colour (a photo's
full chroma against a codec's 4:2:0) cannot be the cue: a clean frame from a camera's own 4:2:0
video must read as clean too.

    logit(patch) = w . mean_xy f(d) + b        f: five 3x3 convolutions with ReLU, three of stride 2
    p(coded | frame) = sigmoid(mean over the patches of logit(patch))

Which expert a frame gets (:class:`Picker`): the clean-pairs one where p(coded) is below the
threshold.  In a sequence (a video, a stream) the estimate runs on the first frame and every
:data:`EVERY`-th after it, and the choice holds until an estimate passes the threshold by
:data:`BAND` the other way, so frames near it do not switch experts back and forth.

The patches (:func:`patch_boxes`) are :data:`PATCH` pixels square on a fixed :data:`GRID` over the
frame, so the estimate costs the same on every frame size and the same frame always gives the same
estimate (its cost against an expert's, measured: ``experiments/link_estimate.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from sharpkd.errors import SharpkdError

FORMAT = "sharpkd-link-estimate-v1"
PATCH = 128
GRID = (3, 4)  # rows, columns of patches
LUMA = (0.299, 0.587, 0.114)
DETAIL_GAIN = 20.0
BAND = 0.15
EVERY = 30  # in a video or stream, frames per estimate (about a second at 30 fps)


def luma_detail(rgb: torch.Tensor) -> torch.Tensor:
    """``Nx3xHxW`` RGB in [0, 1] -> ``Nx1xHxW`` luma detail ``20 (Y - box3(Y))``."""
    y = LUMA[0] * rgb[:, 0:1] + LUMA[1] * rgb[:, 1:2] + LUMA[2] * rgb[:, 2:3]
    return DETAIL_GAIN * (y - nn.functional.avg_pool2d(y, 3, 1, 1, count_include_pad=False))


class LinkEstimator(nn.Module):
    """``Nx3xHxW`` received RGB in [0, 1] -> ``N`` logits of "went through a codec"."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        c = int(channels)
        if not 1 <= c <= 256:
            raise SharpkdError(f"link estimator channels must be 1..256, got {channels}")
        self.config = {"channels": c}
        self.features = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, c, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(2 * c, 1)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(luma_detail(rgb)).mean((2, 3))).squeeze(1)


class Picker:
    """:meth:`choose`: whether a frame gets the clean-pairs expert.  Alone (an image), each frame is
    estimated and judged by itself.  Between :meth:`start` and :meth:`end` (one video or stream) the
    estimate runs on the first frame and every ``every``-th after it, and the last choice holds until
    an estimate passes the threshold by ``band`` the other way."""

    def __init__(self, threshold: float, band: float = BAND, every: int = EVERY) -> None:
        if not 0 < threshold < 1 or not 0 <= band < 1 or int(every) < 1:
            raise SharpkdError(f"link estimate threshold must be in (0, 1), band in [0, 1) and every >= 1, got "
                               f"{threshold}, {band}, {every}")
        self.threshold, self.band, self.every = float(threshold), float(band), int(every)
        self.sequence, self.current, self.frame = False, None, 0

    def start(self) -> None:
        self.sequence, self.current, self.frame = True, None, 0

    def end(self) -> None:
        self.sequence, self.current, self.frame = False, None, 0

    def choose(self, estimate: Callable[[], float]) -> bool:
        """``True`` for the clean-pairs expert; calls ``estimate()`` (p(coded)) only when a choice is due."""
        if not self.sequence:
            return estimate() < self.threshold
        if self.current is None or self.frame % self.every == 0:
            p = estimate()
            self.current = (p < self.threshold if self.current is None
                            else p < self.threshold + (self.band if self.current else -self.band))
        self.frame += 1
        return self.current


def patch_boxes(height: int, width: int, grid: tuple[int, int] = GRID, patch: int = PATCH) -> list[tuple[int, int, int, int]]:
    """``(top, left, h, w)`` of the patches the estimate reads: a ``grid`` of ``patch``-square boxes
    spread evenly over the frame (smaller, and fewer, on frames smaller than the grid)."""
    ph, pw = min(patch, height), min(patch, width)
    rows, cols = grid

    def starts(size: int, p: int, n: int) -> list[int]:
        if n == 1 or size == p:
            return [(size - p) // 2]
        return sorted({round(i * (size - p) / (n - 1)) for i in range(n)})

    return [(t, l, ph, pw) for t in starts(height, ph, rows) for l in starts(width, pw, cols)]


@torch.inference_mode()
def coded_probability(model: LinkEstimator, rgb: np.ndarray) -> float:
    """p(the frame went through a codec) for one ``HxWx3`` uint8 (or uint16) received frame."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise SharpkdError(f"the link estimate needs an HxWx3 frame, got shape {rgb.shape}")
    scale = 65535.0 if rgb.dtype == np.uint16 else 255.0
    boxes = patch_boxes(*rgb.shape[:2])
    batch = np.stack([rgb[t:t + h, l:l + w] for t, l, h, w in boxes])
    x = torch.from_numpy(batch.astype(np.float32) / scale).permute(0, 3, 1, 2)
    return float(torch.sigmoid(model(x).mean()))


def save_estimator(model: LinkEstimator, path: str | os.PathLike, meta: dict | None = None) -> None:
    """Save ``model`` as safetensors (deterministic bytes), with ``config``, ``format`` and ``meta``."""
    from sharpkd.files import write_safetensors

    metadata = {str(k): str(v) for k, v in (meta or {}).items()}
    metadata.update(config=json.dumps(model.config, sort_keys=True), format=FORMAT)
    write_safetensors(path, {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, metadata)


def load_estimator(path: str | os.PathLike) -> tuple[LinkEstimator, dict[str, str]]:
    """Load a link estimator saved by :func:`save_estimator` (no pickle): ``(model in eval, metadata)``."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            if metadata.get("format") != FORMAT:
                raise SharpkdError(f"{path} is not a sharpkd link estimate (metadata format "
                                   f"{metadata.get('format')!r}, expected {FORMAT!r})")
            state = {k: f.get_tensor(k) for k in f.keys()}
        model = LinkEstimator(**json.loads(metadata.get("config", "{}")))
        model.load_state_dict(state, strict=True)
    except (OSError, SafetensorError, ValueError, TypeError, RuntimeError) as exc:
        raise SharpkdError(f"{path} is not a readable link estimate ({str(exc).splitlines()[0]})") from None
    return model.eval(), metadata
