"""Benchmarks behind ``sharpkd bench``: time a model on a frame the way it ships.

Every timing goes through :func:`sharpkd.inference.tiled.run_model` on a uint8 frame, so it includes
the uint8 <-> float conversion, the tiling and channels_last exactly as ``sharpkd sharpen`` runs
them.  Other processes on the CPU inflate the numbers: repeat and keep the best median.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sharpkd.errors import SharpkdError
from sharpkd.inference.tiled import DEFAULT_TILE, prepare, run_model


def _stats(times_ms: list[float]) -> dict[str, float]:
    times = sorted(times_ms)
    median = statistics.median(times)
    p95 = times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)]
    return {"median_ms": median, "p95_ms": p95, "fps": 1000.0 / median}


def time_calls(fn: Callable[[], object], runs: int, warmup: int, sync: Callable[[], None] = lambda: None) -> dict:
    """``{"median_ms", "p95_ms", "fps"}`` of ``fn()`` over ``runs`` timed calls after ``warmup`` untimed ones."""
    if runs < 1 or warmup < 0:
        raise SharpkdError(f"bench: runs must be >= 1 and warmup >= 0, got runs={runs} warmup={warmup}")
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1000.0)
    return _stats(times)


def benchmark(model: torch.nn.Module, height: int = 1080, width: int = 1920, *, runs: int = 20, warmup: int = 3,
              device: str | torch.device = "cpu", tile: int = DEFAULT_TILE, overlap: int = 32,
              runtime: str = "torch", precision: str = "auto") -> dict:
    """Time :func:`run_model` on one random ``height x width`` uint8 frame (``tile`` as in sharpen)
    with the student compiled for ``runtime`` (:mod:`sharpkd.inference.runtimes`; compiling is not timed)
    and, on CUDA, autocast at ``precision`` (:data:`sharpkd.inference.tiled.PRECISIONS`):
    ``{"median_ms", "p95_ms", "fps"}``, and for OpenVINO ``kernels``, the oneDNN kernel of each
    convolution and how many (:func:`sharpkd.inference.runtimes.convolution_kernels`), and for an int8
    student ``int8_route``, how OpenVINO ran it (``int8`` or ``f32-fakequant``:
    :func:`sharpkd.inference.runtimes.int8_route`).

    The model is :func:`prepare`-d for ``device`` (in place); re-parameterize a student first to
    time its inference form (:func:`sharpkd.nets.students.load_student` already returns it so).
    """
    from sharpkd.inference.runtimes import compile_for

    device = torch.device(device)
    model = compile_for(prepare(model, device), runtime, device)
    frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    timing = time_calls(lambda: run_model(model, frame, tile=tile, overlap=overlap, device=device, precision=precision),
                        runs, warmup, sync)
    kernels = getattr(model, "kernels", None)  # OpenVINO: which convolution kernels ran (AMX int8, AVX-512 f32...)
    route = getattr(model, "route", None)  # OpenVINO, int8 student: int8 convolutions or FakeQuantize in f32
    return timing | ({"kernels": kernels} if kernels else {}) | ({"int8_route": route} if route else {})


# The /proc/cpuinfo flags that decide int8 / bf16 speed (VNNI: int8 dot products in one instruction;
# AMX: tile matrix multiplies), in the order they are reported.
CPU_FEATURES = ("avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def runtime_versions() -> dict[str, str]:
    """The installed versions of the inference runtimes (``openvino``, ``onnxruntime``), from the
    package metadata (nothing is imported); a runtime that is not installed is left out."""
    from importlib import metadata

    out = {}
    for name in ("openvino", "onnxruntime"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def machine(device: str) -> dict:
    """Where a benchmark ran: CPU model, cores, the vector kernels PyTorch picked on it
    (``cpu_isa``: ``AVX2``, ``AVX512``...; the same model name covers both here), the CPU's
    matrix and dot-product extensions that int8 and bf16 kernels use (``cpu_features``, from
    ``/proc/cpuinfo`` where there is one: AVX-512 VNNI, AVX-VNNI, AMX), oneDNN's instruction-set
    cap where ``ONEDNN_MAX_CPU_ISA`` sets one (``onednn_isa_cap``: OpenVINO's kernels then are
    those of that ISA), GPU name on CUDA, the torch and runtime versions (:func:`runtime_versions`)
    and the operating system's kernel."""
    fields: dict[str, str] = {}  # the first CPU's /proc/cpuinfo entries
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    cpu = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    out = {"cpu": cpu, "cpu_cores": os.cpu_count(), "cpu_isa": torch.backends.cpu.get_cpu_capability(),
           "cpu_features": [f for f in CPU_FEATURES if f in flags], "torch": torch.__version__,
           "kernel": f"{platform.system()} {platform.release()}"}
    out |= runtime_versions()
    from sharpkd.inference.runtimes import onednn_isa_cap

    if onednn_isa_cap():
        out["onednn_isa_cap"] = onednn_isa_cap()
    if str(device).startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


def temporal_stability_of_frames(model: torch.nn.Module, folder: str, pattern: str, device: str,
                                 scale: float = 0.6, tile: int = 1024) -> dict:
    """Flicker of the model on consecutive frames (sorted file names matching ``pattern``), each
    first degraded as the link does (``scale``; 1 = as they are)."""
    from sharpkd.data.degrade import degrade
    from sharpkd.images import load_rgb
    from sharpkd.evaluation.temporal import TemporalStability

    frames = sorted(Path(folder).glob(pattern))
    if len(frames) < 2:
        raise SharpkdError(f"--frames {folder}: need at least 2 frames matching {pattern!r}, found {len(frames)}")
    model = prepare(model, device)
    stab = TemporalStability()
    for path in frames:
        frame = load_rgb(path)
        frame = degrade(frame, scale) if scale < 1 else frame
        stab.add(frame, run_model(model, frame, tile=tile, overlap=32, device=device))
    return {"frames": len(frames), "folder": str(folder), "pattern": pattern, "degrade_scale": scale} | stab.result()


__all__ = ["benchmark", "machine", "runtime_versions", "temporal_stability_of_frames", "time_calls"]
