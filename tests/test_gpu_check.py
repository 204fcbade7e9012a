"""The parts of the GPU path that run without a GPU: tools/gpu_check.sh's syntax and steps, and
the precision option's checks."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "gpu_check.sh"
SHIPPED = __import__("sharpkd.app.shipped", fromlist=["SHIPPED"]).SHIPPED


def test_gpu_check_script_parses_and_lists_every_step(tmp_path):
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    r = subprocess.run([str(SCRIPT), "--dry-run"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    steps = [line.split(" (at most")[0] for line in r.stdout.splitlines() if " (at most " in line]
    assert steps[:2] == ["cuda visible", "gpu tests"]
    for size in ("1920x1080", "3840x2160"):
        for p in ("fp16", "bf16"):
            assert {f"bench {s} {size} {p}" for s in (*SHIPPED, "teacher")} <= set(steps)
    assert steps[-1] == "tiny pipeline on cuda"
    assert "-S teacher.device=cuda -S train.device=cuda -S evaluate.device=cuda" in r.stdout
    assert "metrics/photos/bench/gpu/student-balanced-3840x2160-cuda-fp16.json" in r.stdout
    r = subprocess.run([str(SCRIPT), "--dry-run", "--skip-pipeline"], capture_output=True, text=True, timeout=120)
    assert "pipeline" not in r.stdout
    r = subprocess.run([str(SCRIPT), "--bogus"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == "error: unknown option --bogus (see tools/gpu_check.sh --help)"


def test_precision_is_checked():
    from sharpkd.errors import SharpkdError
    from sharpkd.inference.tiled import run_model
    from sharpkd.nets.students import build_student

    model = build_student("sharp").eval()
    img = np.zeros((16, 16, 3), np.uint8)
    assert run_model(model, img, precision="fp16").shape == img.shape  # the CPU runs float32 whatever it says
    with pytest.raises(SharpkdError, match="precision must be one of"):
        run_model(model, img, precision="int4")


def test_bench_precision_on_the_cpu_is_one_line(capsys):
    from sharpkd.app.cli import main

    assert main(["bench", "--student", "fast", "--precision", "bf16"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --precision bf16 is for --device cuda; on the CPU the runtime runs the student as it ships "
        "(float32, or int8)"]
