"""Int8 students: fake quantization written in plain PyTorch, the reference of the int8 runtime.

A student in int8 form (``SharpNet(int8={"first_bits": 7})``, built by :func:`to_int8`) rounds,
in front of every convolution ``i`` of its folded form,

* the input to 256 levels on ``[0, top_i]``: ``q(z) = clamp(round(z / d_i), 0, 255) * d_i`` with
  ``d_i = top_i / 255``.  The first input is the frame itself (``top_0 = 1``: step 1/255, exact on
  a uint8 frame); the others are ReLU outputs and ``top_i`` is the largest value seen on the
  calibration inputs (:func:`calibrate`), kept in the student's ``act_max`` buffer (saved with
  the weights);
* the weights to a symmetric grid per output channel: ``q(w) = clamp(round(w / e), -2^(b-1),
  2^(b-1) - 1) * e`` with ``e = max|w_channel| / (2^(b-1) - 1)``, ``b = 8`` bits, and ``b =
  first_bits`` (7 by default) for the first convolution: AVX2 without VNNI sums pairs of uint8 x
  int8 products in 16 bits, and 8-bit weights on a uint8 frame saturate there.

The residual add and the final clamp stay in float.  Gradients pass straight through the
rounding (``torch.fake_quantize_*``: zero outside the range), so the pipeline's loop fine-tunes
an int8 student like a float one (``train.int8``).  Exported by :mod:`sharpkd.inference.runtimes`, the
rounding becomes ONNX QuantizeLinear/DequantizeLinear pairs that OpenVINO runs as int8
convolutions where oneDNN sums their products exactly (VNNI, AMX), and as FakeQuantize ops in
float32 with float32 convolutions elsewhere (:func:`sharpkd.inference.runtimes.int8_route`: AVX2 and
AVX-512 without VNNI saturate the body's 8-bit weights too); the module itself, run by PyTorch,
is what that graph is tested against (``tests/test_quant.py``: within 2 uint8 levels).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import nn

from sharpkd.tensors import img2tensor
from sharpkd.errors import SharpkdError


def fake_quant_activation(z: torch.Tensor, top: float) -> torch.Tensor:
    """``z`` rounded to 256 levels on ``[0, top]`` (uint8, zero point 0)."""
    return torch.fake_quantize_per_tensor_affine(z, float(top) / 255.0, 0, 0, 255)


def fake_quant_weight(w: torch.Tensor, bits: int = 8, axis: int = 0) -> torch.Tensor:
    """``w`` on a symmetric ``bits``-bit grid per channel along ``axis`` (the output channels:
    0 for Conv2d, 1 for ConvTranspose2d).  Below 8 bits the weight is snapped to the coarser grid
    first, then through the 8-bit op (ONNX has 8-bit ranges only), gradients straight through."""
    if not 2 <= bits <= 8:
        raise SharpkdError(f"int8 weights take 2 to 8 bits, got {bits}")
    top = 2 ** (bits - 1) - 1
    dims = [d for d in range(w.ndim) if d != axis]
    scale = (w.detach().abs().amax(dim=dims).clamp_min(1e-12) / top).float()
    if top < 127:
        shape = [1] * w.ndim
        shape[axis] = -1
        s = scale.view(shape)
        snapped = torch.round(w / s).clamp(-top - 1, top) * s
        w = w + (snapped - w).detach()
    return torch.fake_quantize_per_channel_affine(w, scale, torch.zeros_like(scale, dtype=torch.int32), axis, -128, 127)


def qdq_activation(z: torch.Tensor, top: float) -> torch.Tensor:
    """:func:`fake_quant_activation` as a quantize/dequantize pair (``quantized_decomposed``
    ops: ONNX QuantizeLinear/DequantizeLinear), for ``torch.export``, which has no fake kernel of
    ``fake_quantize_*``.  ``top`` is a Python float (a constant of the exported graph)."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401 - registers torch.ops.quantized_decomposed

    qd = torch.ops.quantized_decomposed
    scale = float(top) / 255.0
    return qd.dequantize_per_tensor(qd.quantize_per_tensor(z, scale, 0, 0, 255, torch.uint8), scale, 0, 0, 255,
                                    torch.uint8)


def qdq_weight(w: torch.Tensor, bits: int = 8, axis: int = 0) -> torch.Tensor:
    """:func:`fake_quant_weight` as a per-channel quantize/dequantize pair (see
    :func:`qdq_activation`); the same values: ``|w| / e`` never exceeds ``2^(b-1) - 1``."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401

    if not 2 <= bits <= 8:
        raise SharpkdError(f"int8 weights take 2 to 8 bits, got {bits}")
    qd = torch.ops.quantized_decomposed
    top = 2 ** (bits - 1) - 1
    dims = [d for d in range(w.ndim) if d != axis]
    scale = (w.detach().abs().amax(dim=dims).clamp_min(1e-12) / top).float()
    zero = torch.zeros_like(scale, dtype=torch.int64)
    q = qd.quantize_per_channel(w, scale, zero, axis, -top - 1, top, torch.int8)
    return qd.dequantize_per_channel(q, scale, zero, axis, -top - 1, top, torch.int8)


@torch.no_grad()
def calibrate(model: nn.Module, layers: list[nn.Module], inputs: Iterable) -> list[float]:
    """The largest value of each layer's input over ``inputs`` (``H x W x 3`` uint8 frames), the
    float model run as it is (forward pre-hooks).  The first layer's is 1.0 (the frame in [0, 1])."""
    tops = [0.0] * len(layers)

    def hook(i):
        def record(_module, args):
            tops[i] = max(tops[i], float(args[0].max()))
        return record

    handles = [layer.register_forward_pre_hook(hook(i)) for i, layer in enumerate(layers)]
    device = next(model.parameters()).device  # where the training left it (CUDA included)
    seen = 0
    try:
        for frame in inputs:
            model(img2tensor(np.array(frame)).to(device))  # a copy: frames read from shards are read-only
            seen += 1
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise SharpkdError("int8 calibration needs at least one input frame")
    tops[0] = 1.0  # the frame itself: exact at step 1/255 whatever the calibration frames hold
    return [max(t, 1e-6) for t in tops]  # a layer that never fires still needs a positive step


__all__ = ["calibrate", "fake_quant_activation", "fake_quant_weight", "qdq_activation", "qdq_weight"]
