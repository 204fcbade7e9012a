"""Int8 students (sharpkd.nets.quant): the rounding, calibration, file round trip, OpenVINO against the
PyTorch module, and the pipeline's quantization-aware fine-tuning (train.int8)."""

import numpy as np
import pytest
import torch

from sharpkd.nets.cost import model_cost
from sharpkd.errors import SharpkdError
from sharpkd.nets.students import build_student, load_student, save_student
from sharpkd.nets.int8 import to_int8
from sharpkd.nets.quant import calibrate, fake_quant_activation, fake_quant_weight

HEADS = [{}, {"head": "patch", "unshuffle": 4}]


def student(seed=0, **config):
    """A float sharp student whose weights are all non-zero (the tail starts at zero)."""
    torch.manual_seed(seed)
    model = build_student("sharp", **config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def frames(n=2, h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def as_tensor(frame):
    return torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize("bits", [8, 7, 4])
def test_weights_land_on_a_symmetric_grid_per_output_channel(bits):
    w = torch.randn(6, 5, 3, 3)
    q = fake_quant_weight(w, bits)
    top = 2 ** (bits - 1) - 1
    scale = w.abs().amax(dim=(1, 2, 3), keepdim=True) / top
    levels = q / scale
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert levels.round().min() >= -top - 1 and levels.round().max() <= top
    assert (q - w).abs().max() <= scale.max() / 2 + 1e-6  # rounding, no clipping: max|w| is on the grid


def test_transposed_conv_weights_are_quantized_per_output_channel():
    w = torch.randn(16, 3, 4, 4)  # ConvTranspose2d: in, out, kh, kw
    w[:, 1] *= 100  # one loud output channel must not coarsen the others
    q = fake_quant_weight(w, 8, axis=1)
    assert (q[:, 0] - w[:, 0]).abs().max() <= w[:, 0].abs().max() / 127


def test_gradients_pass_straight_through_the_rounding():
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    fake_quant_weight(w, 7).sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))
    z = torch.tensor([0.3, 0.7, 2.0], requires_grad=True)
    fake_quant_activation(z, 1.0).sum().backward()
    assert z.grad.tolist() == [1.0, 1.0, 0.0]  # clipped above the calibrated top


def test_activations_are_lossless_on_a_uint8_frame():
    x = torch.arange(256, dtype=torch.float32) / 255
    q = fake_quant_activation(x, 1.0)
    assert torch.equal((q * 255).round(), torch.arange(256, dtype=torch.float32))
    assert (q - x).abs().max() < 1e-6  # the same level, to float rounding


def test_calibration_records_each_layers_largest_input():
    model = student().reparameterize()
    fs = frames(3)
    tops = calibrate(model, model.layers(), fs)
    head, body, tail = model.layers()
    expected = [1.0, 0.0, 0.0]
    with torch.no_grad():
        for f in fs:
            z = torch.relu(head(torch.nn.functional.pixel_unshuffle(as_tensor(f), 2)))
            expected[1] = max(expected[1], float(z.max()))
            expected[2] = max(expected[2], float(torch.relu(body(z)).max()))
    assert tops == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("config", HEADS)
def test_int8_student_round_trips_through_its_file_and_costs_what_the_float_one_costs(tmp_path, config):
    model = student(**config)
    q = to_int8(model, frames())
    assert q.config == model.config | {"int8": {"first_bits": 7}}
    assert float(q.act_max[0]) == 1.0 and bool((q.act_max[1:] > 0).all())
    x = as_tensor(frames(1, 37, 45, seed=1)[0])  # odd size: padded and cropped like the float one
    with torch.no_grad():
        y, ref = q(x), model(x)
    assert y.shape == x.shape and 0 < (y - ref).abs().max() * 255 < 16  # rounded, and close to float
    save_student(q, tmp_path / "q.safetensors")
    loaded, _ = load_student(tmp_path / "q.safetensors")
    assert loaded.config == q.config
    with torch.no_grad():
        assert torch.equal(loaded(x), y)
    assert model_cost(q) == model_cost(model)  # the same convolutions (no rounding ops on the meta device)


@pytest.mark.parametrize("config", HEADS)
def test_openvino_runs_the_int8_student_as_int8_within_2_levels_of_its_module(config):
    from sharpkd.inference.runtimes import CompiledStudent, UInt8Graph, _export, _openvino_core

    q = to_int8(student(**config), frames())
    graph = _openvino_core().read_model(_export(q, 48, 64), b"")
    assert sum(op.get_type_name() == "FakeQuantize" for op in graph.get_ordered_ops()) == 6  # 3 inputs, 3 weights
    compiled = CompiledStudent(q, "openvino")
    for f in frames(2, seed=2):
        with torch.no_grad():
            ref = UInt8Graph(q)(torch.from_numpy(f[None]))[0].numpy().astype(int)
        assert np.abs(compiled.run_uint8(f).astype(int) - ref).max() <= 2


@pytest.mark.parametrize("config", HEADS)
def test_onnxruntime_runs_the_int8_student_within_2_levels_of_its_module(config):
    pytest.importorskip("onnxruntime")
    from sharpkd.inference.runtimes import CompiledStudent, UInt8Graph

    q = to_int8(student(**config), frames())
    compiled = CompiledStudent(q, "onnxruntime")
    for f in frames(2, seed=2):
        with torch.no_grad():
            ref = UInt8Graph(q)(torch.from_numpy(f[None]))[0].numpy().astype(int)
        assert np.abs(compiled.run_uint8(f).astype(int) - ref).max() <= 2


def test_what_cannot_be_int8_says_so():
    with pytest.raises(SharpkdError, match="sharp student"):
        to_int8(build_student("report"), frames())
    q = to_int8(student(), frames())
    with pytest.raises(SharpkdError, match="int8 already"):
        to_int8(q, frames())
    with pytest.raises(SharpkdError, match="at least one"):
        to_int8(student(), [])
    with pytest.raises(SharpkdError, match="folded"):
        student().layers()
    with pytest.raises(SharpkdError, match="unknown int8"):
        build_student("sharp", int8={"bits": 4})


def test_pipeline_fine_tunes_the_int8_student_deterministically_as_one_more_epoch(tmp_path):
    from tests.test_train import make_data

    from sharpkd.training.distill import train_student

    params = {"arch": "sharp", "arch_config": {}, "epochs": 2, "steps_per_epoch": 3, "batch": 4, "patch": 24,
              "lr": 0.003, "seed": 0, "loss": {"l2_gt": 1.0, "l2_teacher": 1.0}, "vgg": {},
              "int8": {"steps": 4, "lr": 0.001, "first_bits": 7}}
    seen = []
    a, best_a, hist_a = train_student(params, make_data(), on_epoch=lambda e, r: seen.append((e, r["step"])))
    b, best_b, _ = train_student(params, make_data(), state_dir=tmp_path)
    assert a.int8 == {"first_bits": 7} and seen == [(1, 3), (2, 6), (3, 10)]
    assert [h["epoch"] for h in hist_a] == [1, 2, 3] and best_a == hist_a[-1] == best_b
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert len(list(tmp_path.glob("student_int8-*.pt"))) == 1  # its own resume state beside the float one's
    calibrated = to_int8(train_student(params | {"int8": {"steps": 0}}, make_data())[0], make_data().degraded)
    assert torch.equal(a.act_max, calibrated.act_max)  # ranges kept as calibrated; the weights were tuned
    assert not torch.equal(a.layers()[1].weight, calibrated.layers()[1].weight)


def test_bench_and_sharpen_run_an_int8_student_file(tmp_path, capsys):
    from PIL import Image

    from sharpkd.app.cli import main

    save_student(to_int8(student(), frames()), tmp_path / "q.safetensors")
    assert main(["bench", "--weights", str(tmp_path / "q.safetensors"), "--height", "64", "--width", "96",
                 "--runs", "2", "--warmup", "1"]) == 0
    assert capsys.readouterr().out.startswith("sharp int8 (5,804 parameters")
    Image.fromarray(frames(1, 40, 52)[0]).save(tmp_path / "x.png")
    assert main(["sharpen", str(tmp_path / "x.png"), "-o", str(tmp_path / "out"), "--weights",
                 str(tmp_path / "q.safetensors"), "-q"]) == 0
    assert (tmp_path / "out" / "x.png").is_file()


def _shipped_int8() -> list[str]:
    from sharpkd.app.shipped import SHIPPED, shipped_weights

    return [n for n in SHIPPED if "int8" in load_student(shipped_weights(n))[0].config]


def test_fast_is_a_shipped_int8_student():
    assert "fast" in _shipped_int8()


def _shipped_int8_diffs(names, route=None) -> dict:
    """``{name: (max |OpenVINO - module| in levels, fraction of values off, route, kernels)}`` of
    shipped int8 students on a real photo, OpenVINO run by ``route`` (default: int8_route())."""
    from skimage import data

    from sharpkd.inference.runtimes import CompiledStudent, UInt8Graph
    from sharpkd.app.shipped import shipped_weights

    photo = np.ascontiguousarray(data.astronaut()[96:224, 160:352])
    out = {}
    for name in names:
        q, _ = load_student(shipped_weights(name))
        assert q.config["int8"] == {"first_bits": 7}
        with torch.no_grad():
            ref = UInt8Graph(q.eval())(torch.from_numpy(photo[None]))[0].numpy().astype(int)
        assert not np.array_equal(ref, photo)
        compiled = CompiledStudent(q, "openvino", route=route)
        diff = np.abs(compiled.run_uint8(photo).astype(int) - ref)
        out[name] = (int(diff.max()), float((diff > 0).mean()), compiled.route, compiled.kernels)
    return out


@pytest.mark.parametrize("name", _shipped_int8())
def test_the_shipped_int8_students_run_in_openvino_within_2_levels_of_their_module(name):
    """Each int8 student as shipped (trained ranges, not a random student's) on a real photo, by the
    route and kernels this machine runs it with (int8 convolutions only where they sum exactly)."""
    from sharpkd.inference.runtimes import int8_route

    worst, off, route, kernels = _shipped_int8_diffs([name])[name]
    assert route == int8_route()
    int8_kernels = [k for k in kernels if "I8" in k.upper()]
    assert (len(int8_kernels) == len(kernels)) if route == "int8" else not int8_kernels, kernels
    assert worst <= 2 and off < 0.2, (worst, off, route, kernels)


_FORCED_AVX2 = """
import json, sys
sys.path.insert(0, {tests!r})
from test_quant import _shipped_int8, _shipped_int8_diffs
names = _shipped_int8()
print(json.dumps({{"auto": _shipped_int8_diffs(names), "int8": _shipped_int8_diffs(names, route="int8")}}))
"""


def test_the_shipped_int8_students_stay_within_2_levels_on_oneDNNs_avx2_kernels(tmp_path):
    """The same check with oneDNN capped at AVX2 (``ONEDNN_MAX_CPU_ISA``, read once per process: a
    subprocess), the kernels of a CPU without VNNI, whose int8 convolutions saturate 16-bit pair
    sums: the int8 route must not be taken there.  Skipped where the cap does not give AVX2 int8
    kernels (no AVX2, or an OpenVINO that ignores the variable)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from sharpkd.inference.runtimes import available, cpu_flags

    if not available("openvino") or "avx2" not in cpu_flags():
        pytest.skip("needs OpenVINO on an x86 CPU with AVX2")
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", DNNL_MAX_CPU_ISA="AVX2", HOME=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", _FORCED_AVX2.format(tests=str(Path(__file__).parent))],
                       capture_output=True, text=True, timeout=300, env=env, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    def avx2(kernels):  # jit_avx2_I8, brgconv_avx2_f32...: AVX2 kernels and no AVX-512 ones
        return bool(kernels) and all("avx2" in k.lower() and "512" not in k for k in kernels)

    forced = {k for _, _, _, kernels in result["int8"].values() for k in kernels}
    if not avx2(forced) or not all("I8" in k.upper() for k in forced):
        pytest.skip(f"ONEDNN_MAX_CPU_ISA=AVX2 did not give AVX2 int8 kernels here: {sorted(forced)}")
    for name, (worst, off, route, kernels) in result["auto"].items():
        assert avx2(kernels), kernels  # the cap held for the route taken too
        assert worst <= 2 and off < 0.2, (name, worst, off, route, kernels)


def test_the_int8_route_is_int8_only_where_the_kernels_sum_exactly():
    from sharpkd.inference.runtimes import int8_route, onednn_isa_cap

    vnni, zen1 = {"avx2", "avx512f", "avx512_vnni"}, {"avx2", "fma"}
    assert int8_route(vnni, None) == "int8" and int8_route({"avx2", "avx_vnni"}, None) == "int8"
    assert int8_route({"avx512f", "avx512_vnni", "amx_int8"}, "AVX512_CORE_AMX") == "int8"
    assert int8_route(zen1, None) == "f32-fakequant"  # AVX2 without VNNI
    assert int8_route({"avx2", "avx512f", "avx512bw"}, None) == "f32-fakequant"  # AVX-512 without VNNI
    for cap in ("AVX2", "AVX512_CORE", "AVX2_VNNI", "SSE41", "SOMETHING_NEW"):  # caps that hide AVX-512 VNNI
        assert int8_route(vnni, cap) == "f32-fakequant", cap
    assert int8_route(vnni, "AVX512_CORE_BF16") == "int8"
    assert onednn_isa_cap({"ONEDNN_MAX_CPU_ISA": "avx2"}) == "AVX2"
    assert onednn_isa_cap({"DNNL_MAX_CPU_ISA": "AVX512_CORE"}) == "AVX512_CORE"
    assert onednn_isa_cap({"ONEDNN_MAX_CPU_ISA": "ALL"}) is None and onednn_isa_cap({}) is None
    with pytest.raises(SharpkdError, match="int8 route"):
        from sharpkd.inference.runtimes import CompiledStudent

        CompiledStudent(to_int8(student(), frames()), "openvino", route="int4")
