"""The `sharpkd` command: images, folders, videos, strength, bad inputs, bench, ONNX export."""

import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from sharpkd.cli import main
from sharpkd.imageio import load_image
from sharpkd.models import build_student, save_student
from sharpkd.sharpen import Sharpener


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = build_student("sharp")
    with torch.no_grad():  # a non-trivial student: the zero-initialised tail would return the input
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    path = tmp_path_factory.mktemp("w") / "student.safetensors"
    save_student(model, path, {"card": "{}"})
    return path


def write(path, arr, mode=None):
    Image.fromarray(arr, mode).save(path)
    return path


def rand(h, w, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def test_sharpen_images_and_folders_keep_names_sizes_and_alpha(tmp_path, weights):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    write(src / "a.jpg", rand(37, 53))
    write(src / "sub" / "b.png", rand(20, 31, 4), "RGBA")
    single = write(tmp_path / "single.png", rand(16, 16))
    out = tmp_path / "out"
    assert main(["sharpen", str(src), str(single), "-o", str(out), "--weights", str(weights), "-q"]) == 0
    a = load_image(out / "in" / "a.png")
    assert a.rgb.shape == (37, 53, 3)
    b = load_image(out / "in" / "sub" / "b.png")
    assert b.alpha is not None and np.array_equal(b.alpha, rand(20, 31, 4)[..., 3])
    assert (out / "single.png").exists()
    assert not list(out.rglob(".*tmp*"))


def test_sixteen_bit_stays_sixteen_bit(tmp_path, weights):
    img = (np.random.default_rng(1).random((24, 30, 3)) * 65535).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), img[..., ::-1])
    assert main(["sharpen", str(tmp_path / "deep.png"), "-o", str(tmp_path / "o"), "--weights", str(weights), "-q"]) == 0
    out = load_image(tmp_path / "o" / "deep.png")
    assert out.bit_depth == 16 and out.rgb.shape == img.shape


@pytest.mark.parametrize("strength", [0.0, 1.0, 2.0])
def test_strength(weights, strength):
    img = rand(33, 41)
    s = Sharpener(weights, strength=strength)
    out = s(img)
    if strength == 0:
        assert np.array_equal(out, img)
    full = Sharpener(weights, strength=1.0)(img).astype(int)
    if strength == 2.0:  # extrapolated twice as far from the input, then clipped
        expected = np.clip(img + 2 * (full - img), 0, 255)
        assert np.abs(out.astype(int) - expected).max() <= 2


def test_strength_out_of_range_is_an_error(tmp_path, weights, capsys):
    write(tmp_path / "x.png", rand(8, 8))
    assert main(["sharpen", str(tmp_path / "x.png"), "-o", str(tmp_path / "o"), "--weights", str(weights),
                 "--strength", "3"]) == 2
    assert "strength" in capsys.readouterr().err


def test_bad_inputs_are_skipped_and_reported(tmp_path, weights, capsys):
    write(tmp_path / "good.png", rand(12, 12))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    code = main(["sharpen", str(tmp_path / "good.png"), str(tmp_path / "broken.jpg"), str(tmp_path / "missing.png"),
                 "-o", str(tmp_path / "o"), "--weights", str(weights), "-q"])
    err = capsys.readouterr()
    assert code == 1
    assert "broken.jpg" in err.err and "missing.png" in err.err
    assert (tmp_path / "o" / "good.png").exists() and not (tmp_path / "o" / "broken.png").exists()
    assert "1 file(s)" in err.out and "2 failed" in err.out


def test_video_keeps_fps_size_and_frame_count(tmp_path, weights, capsys):
    path = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 12.5, (48, 32))
    for i in range(7):
        w.write(rand(32, 48, seed=i))
    w.release()
    assert main(["sharpen", str(path), "-o", str(tmp_path / "o"), "--weights", str(weights), "-q"]) == 0
    cap = cv2.VideoCapture(str(tmp_path / "o" / "clip.avi"))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12.5)
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (48, 32)
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 7
    assert "temporal stability" in capsys.readouterr().out


def test_bench_json(capsys, weights, tmp_path):
    out = tmp_path / "bench" / "student-cpu.json"
    assert main(["bench", "--weights", str(weights), "--height", "64", "--width", "96", "--runs", "2",
                 "--warmup", "1", "--json", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["fps"] > 0 and result["p95_ms"] >= result["median_ms"] > 0
    assert result["parameters"] > 0 and result["macs_per_frame"] > 0
    assert result["machine"]["cpu_cores"] >= 1 and result["machine"]["torch"] == torch.__version__
    assert json.loads(out.read_text()) == result  # --out keeps exactly what --json prints


def test_bench_seed_arch(capsys):
    assert main(["bench", "--arch", "seed", "--height", "32", "--width", "48", "--runs", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["arch"] == "seed"


def test_export_onnx_matches_torch_on_random_sizes(tmp_path, weights):
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "m.onnx"
    assert main(["export-onnx", "--weights", str(weights), "-o", str(path)]) == 0
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = Sharpener(weights).model
    rng = np.random.default_rng(0)
    for h, w in [(67, 93), (64, 64), (31, 45), (8, 5)]:
        x = rng.random((1, 3, h, w), dtype=np.float32)
        ref = model(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(sess.run(None, {"input": x})[0], ref, atol=1e-4)


def test_shipped_student_loads_and_sharpens_offline(tmp_path):
    import json as _json

    from sharpkd.sharpen import shipped_weights

    card = _json.loads((shipped_weights().parent / "student.json").read_text())
    assert card["arch"] == "sharp" and card["data"]["profile"] == "photos"
    assert card["validation"]["psnr"] > card["evaluation"]["methods"]["identity"]["psnr"]
    img = rand(45, 61)
    write(tmp_path / "x.png", img)
    assert main(["sharpen", str(tmp_path / "x.png"), "-o", str(tmp_path / "o"), "-q"]) == 0
    out = load_image(tmp_path / "o" / "x.png").rgb
    assert out.shape == img.shape and not np.array_equal(out, img)


def test_bench_reports_temporal_stability_on_frames(tmp_path, weights, capsys):
    base = rand(40, 56)
    for i in range(4):  # a slowly panning "video"
        write(tmp_path / f"f{i:03d}.png", np.roll(base, i, axis=1))
    assert main(["bench", "--weights", str(weights), "--height", "32", "--width", "32", "--runs", "1",
                 "--frames", str(tmp_path), "--pattern", "f*.png", "--json"]) == 0
    t = json.loads(capsys.readouterr().out)["temporal"]
    assert t["frames"] == 4 and t["frame_diff_input"] > 0 and t["flicker_ratio"] > 0
    assert main(["bench", "--weights", str(weights), "--height", "32", "--width", "32", "--runs", "1",
                 "--frames", str(tmp_path), "--pattern", "none*.png"]) == 1


def test_bench_teacher(tmp_path, capsys):
    from sharpkd.teacher import build_teacher, save_teacher

    params = {"kind": "restormer", "restormer": {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1,
                                                 "heads": [1, 1, 1, 1], "ffn_expansion_factor": 2.0},
              "adapt": {"seed": 0}}
    save_teacher(build_teacher(params), tmp_path / "t.safetensors", params)
    assert main(["bench", "--teacher", str(tmp_path / "t.safetensors"), "--height", "40", "--width", "72",
                 "--tile", "64", "--runs", "2", "--warmup", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["arch"] == "Restormer" and result["median_ms"] > 0 and result["params"] > 0
    assert result["macs_per_frame"] > 0 and "cpu" in result["machine"]
