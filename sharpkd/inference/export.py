"""ONNX export of a student (float NCHW in [0, 1], dynamic batch, height and width): ``sharpkd export-onnx``.

The uint8 graphs that ``sharpkd.inference.runtimes`` runs are exported there, per window size."""

from __future__ import annotations

import os

import torch

from sharpkd.errors import SharpkdError
from sharpkd.files import atomic_path


def export_onnx(model: torch.nn.Module, path: str | os.PathLike, opset: int = 18) -> None:
    """Export ``model`` (inference form) to ONNX with dynamic batch, height and width, atomically."""
    model = model.eval().cpu()
    x = torch.rand(2, 3, 67, 93)  # batch 2 and odd sizes: nothing gets specialised to the example
    batch, height, width = (torch.export.Dim("batch", max=64), torch.export.Dim("height", min=2, max=8192),
                            torch.export.Dim("width", min=2, max=8192))
    with atomic_path(path) as tmp:
        try:
            program = torch.onnx.export(model, (x,), dynamo=True, opset_version=opset, input_names=["input"],
                                        output_names=["output"],
                                        dynamic_shapes=({0: batch, 2: height, 3: width},), verbose=False)
        except Exception as exc:  # the exporter's own errors are long; keep the gist
            raise SharpkdError(f"ONNX export failed: {str(exc).splitlines()[0]}") from exc
        program.save(str(tmp))
