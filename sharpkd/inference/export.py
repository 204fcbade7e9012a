"""ONNX export of a student (float NCHW in [0, 1], dynamic batch, height and width): ``sharpkd export-onnx``.

The uint8 graphs that ``sharpkd.inference.runtimes`` runs are exported there, per window size."""

from __future__ import annotations

import os

import torch

from sharpkd.errors import SharpkdError, one_line
from sharpkd.files import atomic_path


def export_onnx(model: torch.nn.Module, path: str | os.PathLike, opset: int = 18) -> None:
    """Export ``model`` (inference form) to ONNX with dynamic batch, height and width, atomically.

    An int8 student (:mod:`sharpkd.nets.quant`) is exported with its roundings as
    QuantizeLinear/DequantizeLinear pairs and its calibrated activation ranges as constants.
    The exporter's own log output is held back; a failure is one :class:`SharpkdError` line."""
    import copy
    import importlib
    import logging

    model = model.eval().cpu()
    if getattr(model, "int8", None) is not None and hasattr(model, "act_max"):
        # the quantize/dequantize ops must be registered before the exporter builds its op table
        importlib.import_module("torch.ao.quantization.fx._decomposed")
        model = copy.deepcopy(model)
        model.export_tops = [float(v) for v in model.act_max]
    x = torch.rand(2, 3, 67, 93)  # batch 2 and odd sizes: nothing gets specialised to the example
    batch, height, width = (torch.export.Dim("batch", max=64), torch.export.Dim("height", min=2, max=8192),
                            torch.export.Dim("width", min=2, max=8192))
    with atomic_path(path) as tmp:
        logging.disable(logging.CRITICAL)  # torch.export logs graph dumps when it fails
        try:
            program = torch.onnx.export(model, (x,), dynamo=True, opset_version=opset, input_names=["input"],
                                        output_names=["output"],
                                        dynamic_shapes=({0: batch, 2: height, 3: width},), verbose=False)
        except Exception as exc:  # the exporter's own errors are long; keep the gist
            first = one_line(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
            raise SharpkdError(f"ONNX export failed: {first[:300]}") from exc
        finally:
            logging.disable(logging.NOTSET)
        program.save(str(tmp))
