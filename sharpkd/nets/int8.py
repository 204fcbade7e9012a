"""Make a float ``sharp`` student int8: fold it, calibrate its activation ranges, quantize.

The fake-quantization primitives it relies on are in :mod:`sharpkd.nets.quant`.
"""

from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn

from sharpkd.errors import SharpkdError
from sharpkd.nets.quant import calibrate
from sharpkd.nets.students import SharpNet


def to_int8(model: nn.Module, inputs: Iterable, first_bits: int = 7) -> nn.Module:
    """An int8 copy of the float ``sharp`` student ``model``: folded, its activation ranges
    calibrated on ``inputs`` (:func:`calibrate`), its first layer's weights on ``first_bits`` bits."""
    if not isinstance(model, SharpNet):
        raise SharpkdError(f"int8 is for the sharp student, not {getattr(model, 'arch', type(model).__name__)!r}")
    if model.int8:
        raise SharpkdError("this student is int8 already")
    folded = copy.deepcopy(model).reparameterize().eval()
    tops = calibrate(folded, folded.layers(), inputs)
    config = {k: v for k, v in model.config.items() if k != "int8"}
    out = SharpNet(**config, rep=False, int8={"first_bits": int(first_bits)})
    state = folded.state_dict() | {"act_max": torch.tensor(tops, dtype=torch.float32)}
    out.load_state_dict(state, strict=True)
    for p_out, p_in in zip(out.parameters(), folded.parameters()):
        p_out.requires_grad_(p_in.requires_grad)
    return out.to(next(model.parameters()).device).eval()



__all__ = ["to_int8"]
