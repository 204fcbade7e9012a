"""The runtimes of sharpkd/inference/runtimes.py against the PyTorch reference (run_model on the module)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from sharpkd.app.cli import main
from sharpkd.inference.tiled import prepare, run_model
from sharpkd.nets.students import build_student
from sharpkd.inference.runtimes import CompiledStudent, available, compile_for, resolve
from sharpkd.errors import SharpkdError
from sharpkd.app.sharpen import Sharpener

COMPILED = [r for r in ("openvino", "onnxruntime") if available(r)]


def student(arch="sharp", **config):
    torch.manual_seed(0)
    model = build_student(arch, **config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    if hasattr(model, "reparameterize"):
        model.reparameterize()
    return prepare(model)


def rand(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("runtime", COMPILED)
@pytest.mark.parametrize("config", [{}, {"channels": 16, "blocks": 2, "unshuffle": 4, "head": "patch"}],
                         ids=["sharp", "sharp-patch"])
@pytest.mark.parametrize("size", [(67, 93), (64, 64), (8, 5)])
def test_compiled_matches_torch_within_one_level(runtime, config, size):
    model = student(**config)
    img = rand(*size, seed=size[0])
    ref = run_model(model, img)
    got = run_model(CompiledStudent(model, runtime), img)
    diff = np.abs(got.astype(int) - ref)
    assert got.dtype == np.uint8 and got.shape == img.shape
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # float summation order flips a level, rarely
    assert not np.array_equal(got, img)  # it did run the model


@pytest.mark.parametrize("runtime", COMPILED)
def test_compiled_tiles_and_strength_like_torch(runtime):
    model = student(channels=16, blocks=1, unshuffle=4, head="patch")
    img = rand(70, 90, seed=3)
    for strength in (0.5, 2.0):
        ref = run_model(model, img, tile=32, overlap=8, strength=strength)
        got = run_model(CompiledStudent(model, runtime), img, tile=32, overlap=8, strength=strength)
        assert np.abs(got.astype(int) - ref).max() <= 1  # blended on the rounded output: one level at most


def test_compiled_refuses_16_bit():
    if not COMPILED:
        pytest.skip("no compiled runtime installed")
    with pytest.raises(SharpkdError, match="8-bit"):
        run_model(CompiledStudent(student(), COMPILED[0]), rand(8, 8).astype(np.uint16) * 257)


def test_auto_is_openvino_for_a_cpu_student_and_torch_otherwise():
    model = student()
    assert resolve("auto", model, "cpu") == ("openvino" if available("openvino") else "torch")
    assert resolve("auto", torch.nn.Identity(), "cpu") == "torch"  # not a student (a teacher)
    assert resolve("auto", model, "cuda") == "torch"
    assert compile_for(model, "torch") is model
    with pytest.raises(SharpkdError, match="runs on the CPU"):
        resolve("openvino", model, "cuda")
    with pytest.raises(SharpkdError, match="runtime must be one of"):
        resolve("tensorrt", model)


def test_sharpener_runs_16_bit_images_on_torch(weights):
    sharpener = Sharpener(weights)  # auto runtime
    img16 = rand(20, 24).astype(np.uint16) * 257
    out = sharpener(img16)
    assert out.dtype == np.uint16
    assert np.array_equal(out, run_model(sharpener.model, img16))


def test_bench_compare_times_every_installed_runtime(capsys, weights):
    import json

    assert main(["bench", "--weights", str(weights), "--height", "32", "--width", "48", "--runs", "1",
                 "--warmup", "0", "--compare", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    names = [r["runtime"] for r in result["runtimes"]]
    assert names[0] == "torch" and set(COMPILED) <= set(names)
    assert all(r["median_ms"] > 0 for r in result["runtimes"])
    # OpenVINO names the kernel of every convolution it runs (a float student: f32 kernels only)
    ov = [r for r in result["runtimes"] if r["runtime"] == "openvino"]
    if available("openvino"):
        assert sum(ov[0]["kernels"].values()) >= 2 and all("f32" in k or "F32" in k for k in ov[0]["kernels"])
        assert not any("kernels" in r for r in result["runtimes"] if r["runtime"] != "openvino")


@pytest.mark.parametrize("runtime", COMPILED)
def test_compiled_keeps_only_the_most_recent_sizes(runtime):
    compiled = CompiledStudent(student(), runtime)
    for size in [(8, 8), (8, 12), (8, 8), (12, 8)]:
        compiled.run_uint8(rand(*size))
    assert list(compiled._compiled) == [(8, 8), (12, 8)]  # (8, 12) freed: least recently used


@pytest.mark.skipif(not available("openvino"), reason="openvino not installed")
def test_openvino_compiles_without_telemetry_processes(monkeypatch):
    """openvino.convert_model forks telemetry senders (which hung `sharpkd stream` at exit);
    the runtime reads the graph with Core.read_model and starts no process."""
    import multiprocessing

    import openvino

    def refuse(*a, **k):
        raise AssertionError("openvino.convert_model called")

    monkeypatch.setattr(openvino, "convert_model", refuse)
    c = CompiledStudent(student(), "openvino")
    x = rand(20, 28, seed=3)
    out = c.run_uint8(x)
    assert out.shape == x.shape and out.dtype == np.uint8
    assert multiprocessing.active_children() == []


@pytest.mark.skipif(not available("openvino"), reason="openvino not installed")
def test_openvino_is_imported_with_its_telemetry_off(tmp_path):
    """`import openvino` starts openvino_telemetry through its converter (a forked sender hung
    `sharpkd stream` at exit in CI); the runtime imports it with the converter's no-op stub, so
    nothing is counted under ~/intel and no sender exists, in a fresh process."""
    import os
    import subprocess
    import sys

    code = ("import sys, numpy as np; from sharpkd.inference.runtimes import CompiledStudent, available; "
            "from sharpkd.nets.students import build_student; assert available('openvino'); "
            "CompiledStudent(build_student('sharp').reparameterize().eval(), 'openvino').run_uint8("
            "np.zeros((8, 8, 3), np.uint8)); import openvino.tools.ovc.convert_impl as c; "
            "print(c.tm.__name__, 'openvino_telemetry' in sys.modules)")
    env = dict(os.environ, HOME=str(tmp_path))
    env.pop("CI", None)  # the telemetry package itself stays quiet under CI=true: test without it
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["openvino.tools.ovc.telemetry_stub", "False"]
    assert not (tmp_path / "intel").exists()


@pytest.mark.parametrize("int8", [False, True], ids=["float", "int8"])
def test_the_uint8_graph_runs_the_unshuffled_layout_where_it_can_with_the_same_output(int8):
    """UInt8Graph (un)shuffles the uint8 frame itself when the student and window allow it; the
    output is the module's, up to float summation order (a level, rarely; two through int8's
    re-rounding of every layer's input)."""
    from sharpkd.nets.int8 import to_int8
    from sharpkd.inference.runtimes import UInt8Graph

    model = student()
    if int8:
        model = to_int8(model, [rand(48, 64, seed=s) for s in range(2)])
    graph = UInt8Graph(model)
    assert graph._unshuffled_scale(64, 96) == 2 and graph._unshuffled_scale(63, 96) == 0
    assert UInt8Graph(student(unshuffle=4, head="patch"))._unshuffled_scale(64, 64) == 0
    assert UInt8Graph(student("report"))._unshuffled_scale(64, 64) == 0
    img = rand(64, 96, seed=4)
    with torch.no_grad():
        got = graph(torch.from_numpy(img)[None])[0].numpy().astype(int)
    diff = np.abs(got - run_model(model, img))
    assert diff.max() <= (2 if int8 else 1) and (diff > 0).mean() < 1e-2
    assert not np.array_equal(got, img)
