"""What a model costs: parameters and multiply-accumulates per frame, counted in one place.

:func:`model_cost` is what the model card, ``eval.json``, ``teacher.json`` and ``sharpkd bench``
report.  A student is counted in the form that runs: its multi-branch training blocks folded
(``reparameterize()`` on a copy), so the counts describe the shipped weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    """Number of parameters of ``model`` as it is."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, height: int, width: int) -> int:
    """Exact multiply-accumulates of Conv2d, ConvTranspose2d and Linear layers for one frame.

    Runs a copy of the model on the ``meta`` device (no memory, no compute) with forward hooks:
    Conv2d ``= numel(out) * (C_in / groups) * kh * kw``; ConvTranspose2d
    ``= numel(in) * (C_out / groups) * kh * kw``; Linear ``= numel(in) * out_features``.
    Counts the model in its current form (multi-branch or re-parameterized).
    """
    meta_model = copy.deepcopy(model).to("meta").eval()
    if getattr(meta_model, "int8", None) is not None:  # an int8 student (sharpkd.nets.quant): the same convs,
        meta_model.int8 = None  # counted through the float forward (the meta device has no rounding ops)
    total = 0

    def hook(mod: nn.Module, inputs, output) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            total += output.numel() * (mod.in_channels // mod.groups) * kh * kw
        elif isinstance(mod, nn.ConvTranspose2d):
            kh, kw = mod.kernel_size
            total += inputs[0].numel() * (mod.out_channels // mod.groups) * kh * kw
        elif isinstance(mod, nn.Linear):
            total += inputs[0].numel() * mod.out_features

    handles = [
        m.register_forward_hook(hook)
        for m in meta_model.modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
    ]
    try:
        with torch.no_grad():
            meta_model(torch.empty(1, 3 * getattr(meta_model, "frames", 1), height, width, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return int(total)


def model_cost(model: nn.Module) -> dict[str, int]:
    """``{"parameters", "macs_per_1080p_frame"}`` of ``model`` in inference form (students folded).

    ``macs_per_1080p_frame`` is left out for an architecture the meta device cannot run.
    """
    if hasattr(model, "reparameterize"):
        model = copy.deepcopy(model).reparameterize()
    out = {"parameters": count_params(model)}
    try:
        out["macs_per_1080p_frame"] = count_macs(model, 1080, 1920)
    except Exception:  # noqa: BLE001 - e.g. a spandrel architecture with data-dependent shapes
        pass
    return out


__all__ = ["count_macs", "count_params", "model_cost"]
