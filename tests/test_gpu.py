"""The CUDA path: each shipped student in fp16 and bf16 against the CPU float reference, and
``sharpkd bench --device cuda``.  Marked ``gpu``: skipped without a CUDA device
(``tools/gpu_check.sh`` runs them on a GPU machine).

Tolerance, in uint8 levels of the output against the same student in float32 on the CPU
(PyTorch, the reference every runtime is tested against): mean |difference| at most 0.5 (fp16)
or 1.0 (bf16, 8 bits of mantissa), and 99.9% of the values within 2 (fp16) or 4 (bf16) levels.
The int8 students' rounding grid is evaluated in the autocast dtype, so an activation next to a
rounding boundary can land one step away: hence a percentile rather than a maximum.  (PyTorch's
CPU autocast, the same arithmetic on this test's frame, gives mean 0.26 / 99.9% within 1 for
fp16 and mean 0.40 / within 2 for bf16 at worst over the three students.)  ``fp32`` on CUDA
runs cuDNN's convolutions in TF32 where the GPU has it (PyTorch's default), so it gets the
fp16 tolerance.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sharpkd.app.shipped import SHIPPED, shipped_weights
from sharpkd.inference.tiled import prepare, run_model
from sharpkd.nets.students import load_student

pytestmark = pytest.mark.gpu

TOLERANCE = {"fp16": (0.5, 2), "bf16": (1.0, 4), "fp32": (0.5, 2)}  # (mean |diff|, 99.9th percentile |diff|) in uint8 levels


def frame(h: int = 270, w: int = 480) -> np.ndarray:
    """A smooth image with edges and texture (what the students sharpen), not noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 128 + 60 * np.sin(x / 17) * np.cos(y / 23) + 40 * ((x // 40 + y // 40) % 2)
    noise = np.random.default_rng(0).normal(0, 6, (h, w, 3))
    return np.clip(base[..., None] + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("name", list(SHIPPED))
def test_cuda_matches_the_cpu_float_reference(name, precision):
    img = frame()
    cpu, _ = load_student(shipped_weights(name))
    ref = run_model(prepare(cpu, "cpu"), img, device="cpu")
    gpu, _ = load_student(shipped_weights(name), device="cuda")
    out = run_model(prepare(gpu, "cuda"), img, device="cuda", precision=precision)
    diff = np.abs(out.astype(np.int16) - ref.astype(np.int16))
    mean_tol, p999_tol = TOLERANCE[precision]
    assert diff.mean() <= mean_tol and np.percentile(diff, 99.9) <= p999_tol, (
        f"{name} {precision}: mean {diff.mean():.3f}, p99.9 {np.percentile(diff, 99.9)}, max {diff.max()}")
    fp32 = run_model(prepare(gpu, "cuda"), img, device="cuda", precision="fp32")
    diff = np.abs(fp32.astype(np.int16) - ref.astype(np.int16))
    assert diff.mean() <= TOLERANCE["fp32"][0] and np.percentile(diff, 99.9) <= TOLERANCE["fp32"][1]


@pytest.mark.parametrize("precision", ["fp16", "bf16", "fp32"])
def test_bench_on_cuda(precision, capsys):
    from sharpkd.app.cli import main

    assert main(["bench", "--student", "balanced", "--device", "cuda", "--precision", precision, "--height", "270",
                 "--width", "480", "--runs", "3", "--warmup", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["device"] == "cuda" and result["precision"] == precision and result["runtime"] == "torch"
    assert result["fps"] > 0 and result["machine"]["gpu"] == torch.cuda.get_device_name(0)
