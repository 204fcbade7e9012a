"""Train the link estimate (:class:`sharpkd.nets.link.LinkEstimator`) on received training crops.

Each crop's label is whether its link had a codec (``degrade.json``'s ``train_crops``: ``none`` is
clean, every other link coded).  Loss: binary cross-entropy on the crop's logit,

    L = mean_i [ softplus(z_i) - y_i z_i ],    z_i = logit(window_i), y_i = 1 for a coded crop,

over ``batch`` crops drawn with replacement, each cut to one ``window``-square window (the batch
shares a random offset); Adam under a one-cycle schedule peaking at ``lr``.  Deterministic: the
draws come from ``numpy.random.default_rng(seed)`` and the weights from ``torch.manual_seed(seed)``,
so the same crops, settings and thread count give the same weights.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from sharpkd.errors import SharpkdError
from sharpkd.nets.link import LinkEstimator

DEFAULTS = {"steps": 5000, "batch": 32, "window": 128, "lr": 2e-3, "seed": 0, "channels": 16}


def train_estimator(crops: np.ndarray, coded: np.ndarray, *, steps: int = DEFAULTS["steps"],
                    batch: int = DEFAULTS["batch"], window: int = DEFAULTS["window"], lr: float = DEFAULTS["lr"],
                    seed: int = DEFAULTS["seed"], channels: int = DEFAULTS["channels"],
                    log: Callable[[int, float], None] | None = None, progress: bool = False) -> LinkEstimator:
    """Train on ``crops`` (``NxHxWx3`` uint8, one size) labelled by ``coded`` (``N`` bools)."""
    from tqdm import tqdm

    crops, coded = np.asarray(crops), np.asarray(coded, dtype=bool)
    if crops.ndim != 4 or crops.shape[3] != 3 or crops.dtype != np.uint8:
        raise SharpkdError(f"link estimate training needs NxHxWx3 uint8 crops, got {crops.dtype} {crops.shape}")
    if len(coded) != len(crops):
        raise SharpkdError(f"{len(crops)} crops but {len(coded)} labels")
    if coded.all() or not coded.any():
        raise SharpkdError("link estimate training needs both clean and coded crops (degrade.train_links with "
                           "'none' and at least one codec link)")
    h, w = crops.shape[1:3]
    if min(h, w) < 8:
        raise SharpkdError(f"crops of {w}x{h} are too small for the link estimate")
    win_h, win_w = min(window, h), min(window, w)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = LinkEstimator(channels)
    opt = torch.optim.Adam(model.parameters(), lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    x_all = torch.from_numpy(crops).permute(0, 3, 1, 2)
    y_all = torch.from_numpy(coded.astype(np.float32))
    model.train()
    for step in tqdm(range(steps), desc="link estimate", disable=not progress):
        idx = torch.from_numpy(rng.integers(0, len(crops), batch))
        top, left = int(rng.integers(0, h - win_h + 1)), int(rng.integers(0, w - win_w + 1))
        xb = x_all[idx, :, top:top + win_h, left:left + win_w].float() / 255
        loss = nn.functional.binary_cross_entropy_with_logits(model(xb), y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        if log is not None:
            log(step, float(loss))
    return model.eval()
