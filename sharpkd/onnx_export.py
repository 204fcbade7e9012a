"""ONNX export of a student (dynamic height and width) and ONNX Runtime benchmarking."""

from __future__ import annotations

import math
import os
import statistics
import time

import numpy as np
import torch

from .errors import SharpkdError
from .fsutil import atomic_path


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


def onnx_session(path: str | os.PathLike, device: str = "cpu"):
    import onnxruntime as ort

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") else ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), providers=providers)


def benchmark_onnx(model: torch.nn.Module, height: int, width: int, *, runs: int = 20, warmup: int = 3,
                   device: str = "cpu") -> dict:
    """Export ``model`` to a temporary ONNX file and time ONNX Runtime on one frame."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.onnx")
        export_onnx(model, path)
        sess = onnx_session(path, device)
        x = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
        for _ in range(warmup):
            sess.run(None, {"input": x})
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            sess.run(None, {"input": x})
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    median = statistics.median(times)
    return {"median_ms": median, "p95_ms": times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)],
            "fps": 1000 / median}
