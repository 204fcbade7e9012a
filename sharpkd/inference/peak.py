"""What the CPU can do through the shipping runtime: ``sharpkd bench --peak``.

Two kinds of measurement, both compiled and run by OpenVINO exactly as
:class:`sharpkd.inference.runtimes.CompiledStudent` compiles a student (same threads, latency
hint, f32 inference precision):

Each figure is the best of ``runs`` calls (a peak: what the machine does when nothing else runs;
the convolutions also keep their median).

* **convolutions**: a chain of ``layers`` plain 3x3 convolutions ``C -> C`` (ReLU between) at the
  students' working resolution (half the frame on each side: they run pixel-unshuffled by 2),
  float and int8 (the int8 form rounds inputs and weights as :mod:`sharpkd.nets.quant` does, so
  OpenVINO runs int8 kernels).  Reported as GMAC/s, with the oneDNN kernel each ran;
* **full-resolution passes** over one ``width x height`` frame, in ms: the uint8 -> float
  conversion, the pixel unshuffle and shuffle of the uint8 frame, the residual add, the float ->
  uint8 rounding, and ``frame_io``: the whole shipping graph
  (:class:`sharpkd.inference.runtimes.UInt8Graph`) with the convolutions taken out.

A student's time per frame then reads against these: its MACs at the peak GMAC/s of its
precision plus ``frame_io`` is what this CPU needs at best (:func:`of_peak`).  The result is
kept in the user's cache folder (``peak.json``, :mod:`sharpkd.cache`) so that later
``sharpkd bench`` JSON carries it.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sharpkd.errors import SharpkdError

#: Channel widths of the convolution measurements (the shipped students use 32).
CHANNELS = (32, 64)
#: Chained convolutions per timed call (amortises the call and the input copy).
LAYERS = 2
CACHE_NAME = "peak.json"


class ConvChain(nn.Module):
    """``layers`` 3x3 convolutions ``channels -> channels``, ReLU between; int8: every input and
    weight on the int8 grid (:func:`sharpkd.nets.quant.fake_quant_activation`, ``fake_quant_weight``)."""

    def __init__(self, channels: int, layers: int = LAYERS, int8: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(layers))
        self.int8 = int8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from sharpkd.nets.quant import fake_quant_activation, fake_quant_weight

        for i, conv in enumerate(self.convs):
            if self.int8:
                x = F.conv2d(fake_quant_activation(x, 1.0), fake_quant_weight(conv.weight), conv.bias, padding=1)
            else:
                x = conv(x)
            if i < len(self.convs) - 1:
                x = F.relu(x)
        return x


class _Pass(nn.Module):
    """One full-resolution pass of the shipping graph, alone."""

    def __init__(self, kind: str, scale: int = 2) -> None:
        super().__init__()
        self.kind, self.s = kind, scale

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        x, s = xs[0], self.s
        if self.kind == "to_float":  # 1 x H x W x 3 uint8 -> 1 x 3 x H x W float
            return x.permute(0, 3, 1, 2).to(torch.float32) * (1.0 / 255.0)
        if self.kind == "unshuffle":  # 1 x H x W x 3 uint8 -> 1 x 3s^2 x H/s x W/s uint8
            n, h, w, c = x.shape
            return x.reshape(n, h // s, s, w // s, s, c).permute(0, 5, 2, 4, 1, 3).reshape(n, c * s * s, h // s, w // s)
        if self.kind == "shuffle":  # the inverse, uint8
            n, cs, h, w = x.shape
            c = cs // (s * s)
            return x.reshape(n, c, s, s, h, w).permute(0, 4, 2, 5, 3, 1).reshape(n, h * s, w * s, c)
        if self.kind == "residual_add":  # float + float, clamped, at the head's resolution
            return (x + xs[1]).clamp(0.0, 1.0)
        if self.kind == "to_uint8":
            return (x * 255.0).round().clamp(0.0, 255.0).to(torch.uint8)
        raise SharpkdError(f"unknown pass {self.kind!r}")


class _NoConvolutions(nn.Module):
    """A ``sharp``-like student with its convolutions taken out: the residual is a per-channel
    constant (zero), so :class:`UInt8Graph` of it is the frame's input and output work alone."""

    arch = "sharp"
    patch = False

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.bias = nn.Parameter(torch.zeros(1, 3 * scale * scale, 1, 1))

    def unshuffled(self, z: torch.Tensor) -> torch.Tensor:
        return (z + self.bias).clamp(0.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - the unshuffled path runs
        return x


PASSES = ("to_float", "unshuffle", "shuffle", "residual_add", "to_uint8", "frame_io")


def _compile(module: nn.Module, examples: tuple[torch.Tensor, ...], threads: int):
    """``(run, kernels)``: ``module`` exported at the examples' shapes and compiled by OpenVINO
    as the shipping runtime compiles a student; ``run()`` infers on the examples."""
    from sharpkd.inference.runtimes import _openvino_core, available, convolution_kernels

    if not available("openvino"):
        raise SharpkdError("bench --peak measures through OpenVINO, the shipping runtime: pip install openvino")
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), examples, buf, dynamo=False, opset_version=17)
    core = _openvino_core()
    compiled = core.compile_model(core.read_model(buf.getvalue(), b""), "CPU", {
        "INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    inputs = {i: np.ascontiguousarray(x.numpy()) for i, x in enumerate(examples)}

    def run() -> None:
        request.infer(inputs, share_inputs=True, share_outputs=True)

    return run, convolution_kernels(compiled)


def _best_and_median(run, runs: int, warmup: int) -> tuple[float, float]:
    """``(best, median)`` ms of ``run()`` over ``runs`` timed calls after ``warmup``: a peak is
    the best the machine does, so other processes on the CPU show in the median, less in the best."""
    import statistics
    import time

    if runs < 1 or warmup < 0:
        raise SharpkdError(f"bench: runs must be >= 1 and warmup >= 0, got runs={runs} warmup={warmup}")
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1000.0)
    return min(times), statistics.median(times)


def measure_convolutions(height: int, width: int, *, channels=CHANNELS, layers: int = LAYERS, runs: int = 5,
                         warmup: int = 1, threads: int | None = None) -> list[dict]:
    """GMAC/s of :class:`ConvChain` on a ``1 x C x height x width`` float input, float and int8,
    for each width in ``channels``: ``gmacs`` from the best of ``runs`` calls, ``gmacs_median``
    from their median."""

    threads = int(threads or torch.get_num_threads())
    rows = []
    for c in channels:
        x = torch.rand(1, c, height, width)
        macs = layers * c * c * 9 * height * width
        for precision in ("f32", "int8"):
            run, kernels = _compile(ConvChain(c, layers, int8=precision == "int8"), (x,), threads)
            best, median = _best_and_median(run, runs, warmup)
            rows.append({"channels": c, "precision": precision, "height": height, "width": width, "layers": layers,
                         "macs": macs, "best_ms": round(best, 3), "median_ms": round(median, 3),
                         "gmacs": round(macs / best / 1e6, 2), "gmacs_median": round(macs / median / 1e6, 2),
                         "kernels": kernels})
    return rows


def measure_passes(height: int, width: int, *, runs: int = 5, warmup: int = 1, threads: int | None = None,
                   scale: int = 2) -> dict[str, float]:
    """Best ms of ``runs`` calls of each full-resolution pass (:data:`PASSES`) on one ``width x height`` frame."""
    from sharpkd.inference.runtimes import UInt8Graph

    if height % scale or width % scale:
        raise SharpkdError(f"bench --peak: the frame's sides must be multiples of {scale}, got {width}x{height}")
    threads = int(threads or torch.get_num_threads())
    g = torch.Generator().manual_seed(0)
    frame = torch.randint(0, 256, (1, height, width, 3), dtype=torch.uint8, generator=g)
    small = (1, 3 * scale * scale, height // scale, width // scale)
    examples = {
        "to_float": (frame,),
        "unshuffle": (frame,),
        "shuffle": (torch.randint(0, 256, small, dtype=torch.uint8, generator=g),),
        "residual_add": (torch.rand(small, generator=g), torch.rand(small, generator=g)),
        "to_uint8": (torch.rand(small, generator=g),),
    }
    out = {}
    for kind in PASSES:
        module = UInt8Graph(_NoConvolutions(scale)) if kind == "frame_io" else _Pass(kind, scale)
        run, _ = _compile(module, examples.get(kind, (frame,)), threads)
        out[kind] = round(_best_and_median(run, runs, warmup)[0], 3)
    return out


def measure(height: int = 1080, width: int = 1920, *, channels=CHANNELS, layers: int = LAYERS, runs: int = 5,
            warmup: int = 1, threads: int | None = None) -> dict:
    """The peak figures of this machine for a ``width x height`` frame: convolutions at the
    students' resolution (half of each side), passes at the frame's (see the module docstring)."""
    from sharpkd.inference.bench import runtime_versions

    threads = int(threads or torch.get_num_threads())
    convs = measure_convolutions(max(1, height // 2), max(1, width // 2), channels=channels, layers=layers,
                                 runs=runs, warmup=warmup, threads=threads)
    best = {p: max(r["gmacs"] for r in convs if r["precision"] == p) for p in ("f32", "int8")}
    return {"runtime": "openvino", "openvino": runtime_versions().get("openvino"), "threads": threads,
            "height": height, "width": width, "runs": runs, "warmup": warmup, "convolutions": convs,
            "peak_gmacs": best,
            "passes_ms": measure_passes(height, width, runs=runs, warmup=warmup, threads=threads)}


def cache_key(threads: int) -> dict:
    """What a cached peak must match to describe this process: CPU model, OpenVINO version, threads."""
    from sharpkd.inference.bench import machine, runtime_versions

    return {"cpu": machine("cpu")["cpu"], "openvino": runtime_versions().get("openvino"), "threads": int(threads)}


def save(result: dict) -> None:
    """Keep ``result`` (:func:`measure`, with ``machine``) in the cache; a cache that cannot be
    written is a warning, not an error."""
    from sharpkd.cache import write_cache

    try:
        write_cache(CACHE_NAME, {"key": cache_key(result["peak"]["threads"]), "result": result})
    except OSError as exc:
        warnings.warn(f"could not keep the peak figures in the cache ({exc})")


def cached(threads: int) -> dict | None:
    """The cached :func:`measure` result for this machine and thread count, or ``None``."""
    from sharpkd.cache import read_cache

    data = read_cache(CACHE_NAME)
    if data.get("key") != cache_key(threads) or not isinstance(data.get("result"), dict):
        return None
    return data["result"].get("peak")


def of_peak(peak: dict, macs: int, median_ms: float, int8: bool, height: int, width: int) -> dict:
    """A student's time against the peak: ``floor_ms`` is its MACs at the peak GMAC/s of its
    precision (``conv_ms``) plus the ``frame_io`` pass when the peak was measured at the same
    frame size; ``fraction`` = ``floor_ms / median_ms`` (1 = as fast as this CPU goes)."""
    precision = "int8" if int8 else "f32"
    gmacs = peak["peak_gmacs"][precision]
    conv_ms = macs / gmacs / 1e6
    same = (peak.get("height"), peak.get("width")) == (height, width)
    io_ms = peak["passes_ms"]["frame_io"] if same else None
    floor = conv_ms + (io_ms or 0.0)
    return {"precision": precision, "peak_gmacs": gmacs, "conv_ms": round(conv_ms, 3), "frame_io_ms": io_ms,
            "floor_ms": round(floor, 3), "fraction": round(floor / median_ms, 4) if median_ms > 0 else None}


__all__ = ["CHANNELS", "ConvChain", "PASSES", "cache_key", "cached", "measure", "measure_convolutions",
           "measure_passes", "of_peak", "save"]
