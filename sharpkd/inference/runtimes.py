"""Runtimes for a student's inference form: PyTorch (the reference), OpenVINO, ONNX Runtime.

:func:`sharpkd.inference.tiled.run_model` runs a model on an image; a runtime only changes what runs
each window.  ``torch`` is the student module itself (float32 in [0, 1], the reference every
other runtime is tested against).  ``openvino`` and ``onnxruntime`` run one exported graph,
:class:`UInt8Graph`, that takes the uint8 window as it is in memory (``1 x H x W x 3``) and
returns uint8::

    out = round(clamp(255 * student(in / 255), 0, 255))

so the conversion to float, the layout change and the rounding are nodes of the graph that the
runtime fuses into the convolutions, not separate passes over the frame in Python.  The graph
is exported per window size (a video's frames share one) with :func:`torch.onnx.export` and
compiled once per size.  Against ``torch`` the uint8 outputs differ by at most 1 (float
summation order; a value near a rounding boundary), tested in ``tests/test_runtime.py``.

An int8 student (:mod:`sharpkd.nets.quant`) runs in OpenVINO by one of two routes, :func:`int8_route`:
``int8`` (its rounding ops become int8 convolutions) where oneDNN's int8 kernels sum exactly (VNNI
or AMX), and ``f32-fakequant`` elsewhere: the same graph with OpenVINO's low-precision
transformations off, so the rounding runs in float32 and the convolutions are float32 ones.

``torch-compile`` is the module through ``torch.compile`` (inductor), float like ``torch``.
``auto`` (what ``sharpkd sharpen`` and ``sharpkd bench`` use) picks ``openvino`` for a student
on the CPU when the ``openvino`` package is installed (README's install command installs it),
and ``torch`` otherwise (CUDA, 16-bit images, teachers).
"""

from __future__ import annotations

import io
import sys
import warnings
from typing import Callable

import numpy as np
import torch
from torch import nn

from sharpkd.errors import SharpkdError

RUNTIMES = ("auto", "torch", "torch-compile", "openvino", "onnxruntime")
INT8_ROUTES = ("int8", "f32-fakequant")  # how OpenVINO runs an int8 student (int8_route)


class UInt8Graph(nn.Module):
    """``1 x H x W x 3`` uint8 -> ``1 x H x W x 3`` uint8 through ``model`` (the exported graph).

    A ``sharp`` student with a pixel-unshuffle (:meth:`sharpkd.nets.students.SharpNet.unshuffled`) on a
    window whose sides are multiples of its scale runs in its unshuffled layout: the uint8 frame is
    unshuffled and shuffled back as uint8, and the residual add and rounding run at the head's
    resolution, so no float32 tensor of the full frame is made.  Same function (a permutation
    commutes with per-element ops)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def _unshuffled_scale(self, height: int, width: int) -> int:
        """The scale to run the unshuffled layout at, or 0 when the model or size has none."""
        s = getattr(self.model, "scale", 1)
        if not hasattr(self.model, "unshuffled") or getattr(self.model, "patch", True) or s < 2:
            return 0
        return s if height % s == 0 and width % s == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, height, width, c = x.shape
        s = self._unshuffled_scale(height, width)
        if s:
            h, w = height // s, width // s
            u = x.reshape(n, h, s, w, s, c).permute(0, 5, 2, 4, 1, 3).reshape(n, c * s * s, h, w)
            y = self.model.unshuffled(u.to(torch.float32) * (1.0 / 255.0))
            o = (y * 255.0).round().clamp(0.0, 255.0).to(torch.uint8)
            return o.reshape(n, c, s, s, h, w).permute(0, 4, 2, 5, 3, 1).reshape(n, height, width, c)
        f = x.permute(0, 3, 1, 2).to(torch.float32) * (1.0 / 255.0)
        y = self.model(f)
        return (y * 255.0).round().clamp(0.0, 255.0).to(torch.uint8).permute(0, 2, 3, 1)


def _export(model: nn.Module, height: int, width: int) -> bytes:
    """The ONNX bytes of :class:`UInt8Graph` of ``model`` at ``height x width`` (in memory: no file)."""
    graph = UInt8Graph(model).eval()
    example = torch.zeros(1, height, width, 3, dtype=torch.uint8)
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on sizes becoming constants: intended here
        try:
            # TorchScript-based exporter at a fixed size: fast (about a second), and the graph has
            # no shape arithmetic for the runtime to evaluate per call.
            torch.onnx.export(graph, (example,), buf, dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["output"])
        except Exception as exc:  # the exporter's own errors are long; keep the gist
            raise SharpkdError(f"export to the {height}x{width} runtime graph failed: {str(exc).splitlines()[0]}") from exc
    return buf.getvalue()


_CORE = None


def _import_openvino():
    """``import openvino`` with its usage telemetry off.

    ``import openvino`` imports its model converter (``openvino.tools.ovc``), which starts
    ``openvino_telemetry`` when that package is installed: it counts every import in
    ``~/intel/stats`` and sends events from processes it forks, and a fork while a thread reads
    stdin hung ``sharpkd stream`` at exit (seen in CI).  With the package unimportable during that
    first import, ovc binds its own no-op stub (its fallback when the package is absent)."""
    block = "openvino" not in sys.modules and "openvino_telemetry" not in sys.modules
    if block:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]
    try:
        import openvino
    finally:
        if block:
            del sys.modules["openvino_telemetry"]
    return openvino


def _openvino_core():
    """One ``openvino.Core`` per process (each Core starts its own plugin and thread pools)."""
    global _CORE
    if _CORE is None:
        _CORE = _import_openvino().Core()
    return _CORE


def available(runtime: str) -> bool:
    """Whether ``runtime``'s package can be imported."""
    module = {"torch": "torch", "torch-compile": "torch", "openvino": "openvino", "onnxruntime": "onnxruntime"}[runtime]
    try:
        _import_openvino() if module == "openvino" else __import__(module)
    except ImportError:
        return False
    return True


# oneDNN's instruction-set caps (ONEDNN_MAX_CPU_ISA) under which its int8 kernels use each dot-product
# extension of the CPU; a cap it does not name here counts as none of them.
_AVX512_VNNI_CAPS = ("AVX512_CORE_VNNI", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX",
                     "AVX512_CORE_AMX_FP16", "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16",
                     "AVX10_2_512", "AVX10_2_512_AMX_2")
_INT8_EXACT = {  # /proc/cpuinfo flag -> the caps that leave it to the int8 kernels
    "avx512_vnni": _AVX512_VNNI_CAPS,
    "avx_vnni": ("AVX2_VNNI", "AVX2_VNNI_2"),
    "amx_int8": ("AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16",
                 "AVX10_2_512_AMX_2"),
}


def cpu_flags() -> set[str]:
    """The first CPU's ``/proc/cpuinfo`` flags (empty where there is no such file)."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            key, _, value = line.partition(":")
            if key.strip() == "flags":
                return set(value.split())
    except OSError:
        pass
    return set()


def onednn_isa_cap(environ=None) -> str | None:
    """The instruction-set cap oneDNN reads from ``ONEDNN_MAX_CPU_ISA`` (else ``DNNL_MAX_CPU_ISA``)
    at its first use, upper-cased; ``None`` when neither is set or it is ``ALL`` / ``DEFAULT``.
    OpenVINO's CPU plugin honours it: ``AVX2`` makes a VNNI CPU run the AVX2 kernels."""
    import os

    environ = os.environ if environ is None else environ
    cap = (environ.get("ONEDNN_MAX_CPU_ISA") or environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    return None if cap in ("", "ALL", "DEFAULT") else cap


def int8_route(flags: set[str] | None = None, cap: str | None = "env") -> str:
    """How OpenVINO runs an int8 student on this CPU: ``int8`` or ``f32-fakequant``.

    oneDNN's int8 convolutions multiply uint8 activations by int8 weights.  With VNNI
    (``avx512_vnni``, ``avx_vnni``) or AMX (``amx_int8``) the products are summed in 32 bits,
    exactly.  Without them (AVX2, and AVX-512 without VNNI) the kernels sum pairs of products in
    16 bits with saturation (``vpmaddubsw``): two 8-bit weights on activations near the top of
    their range overflow it, and the shipped default student's output is then up to 15 levels off
    its module.  There the route is ``f32-fakequant``: the graph is compiled with the
    low-precision transformations off, so its FakeQuantize ops round in float32 (the module's
    arithmetic) and the convolutions run as float32.  ``flags`` defaults to :func:`cpu_flags`,
    ``cap`` to :func:`onednn_isa_cap` of the environment (a cap can hide the CPU's VNNI)."""
    flags = cpu_flags() if flags is None else flags
    cap = onednn_isa_cap() if cap == "env" else cap
    exact = any(f in flags and (cap is None or cap in caps) for f, caps in _INT8_EXACT.items())
    return "int8" if exact else "f32-fakequant"


def convolution_kernels(compiled) -> dict[str, int]:
    """``{primitive type: count}`` over the convolutions of an OpenVINO compiled model (its runtime
    graph names the oneDNN kernel it picked: ``brgconv_avx512_f32``, ``brgconv_avx512_amx_I8``...)."""
    kernels: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if "layerType" in info and "Convolution" in info["layerType"].astype(str):
            kind = info["primitiveType"].astype(str)
            kernels[kind] = kernels.get(kind, 0) + 1
    return dict(sorted(kernels.items()))


class CompiledStudent:
    """A student compiled for ``runtime`` (``openvino`` | ``onnxruntime``): :meth:`run_uint8`
    maps an ``H x W x 3`` uint8 window to the restored uint8 window.

    One graph per window size, exported in memory and compiled on first use (about a second);
    the :attr:`KEEP` most recent sizes are kept (a video's frames, and all windows of one image,
    share one size), older ones are freed with their buffers.  Nothing is written to disk.
    """

    KEEP = 2

    def __init__(self, model: nn.Module, runtime: str, threads: int | None = None, route: str | None = None) -> None:
        if runtime not in ("openvino", "onnxruntime"):
            raise SharpkdError(f"runtime must be openvino or onnxruntime here, got {runtime!r}")
        if not available(runtime):
            raise SharpkdError(f"runtime {runtime}: the {runtime} package is not installed "
                               f"(pip install {runtime}), or use --runtime torch")
        self.model = model.eval().cpu()
        self.runtime = runtime
        self.threads = int(threads or torch.get_num_threads())
        # OpenVINO: the kernel each convolution of the last compiled graph runs, and how many
        # (e.g. {"brgconv_avx512_amx_I8": 4}: int8 on AMX tiles); empty for onnxruntime.
        self.kernels: dict[str, int] = {}
        # OpenVINO and an int8 student: int8_route() unless ``route`` names one; None otherwise.
        self.route = None
        if runtime == "openvino" and getattr(model, "int8", None):
            self.route = route or int8_route()
            if self.route not in INT8_ROUTES:
                raise SharpkdError(f"int8 route must be one of {list(INT8_ROUTES)}, got {self.route!r}")
        self._compiled: dict[tuple[int, int], Callable[[np.ndarray], np.ndarray]] = {}

    def _compile(self, height: int, width: int) -> Callable[[np.ndarray], np.ndarray]:
        graph = _export(self.model, height, width)
        if self.runtime == "openvino":
            # read_model, not openvino.convert_model: convert_model sends usage telemetry from
            # forked processes, which hang at exit when a thread holds stdin (sharpkd stream).
            core = _openvino_core()
            config = {"INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY",
                      "INFERENCE_PRECISION_HINT": "f32"}
            if self.route == "f32-fakequant":  # int8_route(): FakeQuantize in float32, float32 convolutions
                config["LP_TRANSFORMS_MODE"] = False  # the CPU plugin's ov::internal::enable_lp_transformations
            compiled = core.compile_model(core.read_model(graph, b""), "CPU", config)
            request = compiled.create_infer_request()
            self.kernels = convolution_kernels(compiled)

            def run(x: np.ndarray) -> np.ndarray:
                return request.infer({0: x})[0]
        else:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            ort_session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

            def run(x: np.ndarray) -> np.ndarray:
                return ort_session.run(None, {"input": x})[0]
        return run

    def run_uint8(self, window: np.ndarray) -> np.ndarray:
        """Restore one ``H x W x 3`` uint8 window."""
        if window.dtype != np.uint8 or window.ndim != 3 or window.shape[2] != 3:
            raise SharpkdError(f"runtime {self.runtime} takes HxWx3 uint8 windows, got {window.dtype} {window.shape}")
        h, w = window.shape[:2]
        run = self._compiled.pop((h, w), None) or self._compile(h, w)
        self._compiled[(h, w)] = run  # most recent last
        while len(self._compiled) > self.KEEP:  # a folder of many sizes must not keep them all
            self._compiled.pop(next(iter(self._compiled)))
        return run(np.ascontiguousarray(window)[None])[0]


def resolve(runtime: str, model: nn.Module, device: str | torch.device = "cpu") -> str:
    """The runtime ``auto`` stands for (see the module docstring); others are checked and returned."""
    if runtime not in RUNTIMES:
        raise SharpkdError(f"runtime must be one of {list(RUNTIMES)}, got {runtime!r}")
    cpu = torch.device(device).type == "cpu"
    if runtime == "auto":
        from sharpkd.nets.students import STUDENTS

        student = getattr(model, "arch", None) in STUDENTS
        return "openvino" if cpu and student and available("openvino") else "torch"
    if runtime in ("openvino", "onnxruntime") and not cpu:
        raise SharpkdError(f"runtime {runtime} runs on the CPU; use --runtime torch with --device {device}")
    return runtime


def compile_for(model: nn.Module, runtime: str, device: str | torch.device = "cpu"):
    """What :func:`sharpkd.inference.tiled.run_model` runs for ``runtime`` (``auto`` resolved first):
    ``model`` itself for ``torch``, ``torch.compile(model)`` (inductor; compiles on the first
    call of each size) for ``torch-compile``, else a :class:`CompiledStudent`."""
    runtime = resolve(runtime, model, device)
    if runtime == "torch":
        return model
    if runtime == "torch-compile":
        _quiet_compiler()
        return torch.compile(model, dynamic=False)
    return CompiledStudent(model, runtime)


def _quiet_compiler() -> None:
    """Keep torch.compile's notes (graph breaks on the int8 students' ranges, a missing CUDA
    toolkit) out of the user's terminal: they describe the compiler, not a problem with the run.
    Its errors still surface as exceptions."""
    import logging

    torch._logging.set_logs(dynamo=logging.ERROR, inductor=logging.ERROR)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


__all__ = ["INT8_ROUTES", "RUNTIMES", "CompiledStudent", "UInt8Graph", "available", "compile_for", "cpu_flags",
           "int8_route", "onednn_isa_cap", "resolve"]
