"""The `sharpkd` command: images, folders, videos, strength, bad inputs, bench, ONNX export."""

import json
from pathlib import Path
from fractions import Fraction

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from sharpkd.app.cli import main
from sharpkd.images import load_image
from sharpkd.tensors import img2tensor, tensor2img
from sharpkd.inference.tiled import run_model
from sharpkd.app.sharpen import Sharpener


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
    a = load_image(out / "in" / "a.jpg")  # each image keeps its own format
    assert a.rgb.shape == (37, 53, 3) and not (out / "in" / "a.png").exists()
    b = load_image(out / "in" / "sub" / "b.png")
    assert b.alpha is not None and np.array_equal(b.alpha, rand(20, 31, 4)[..., 3])
    assert (out / "single.png").exists()
    assert not list(out.rglob(".*tmp*"))


def test_format_names_one_format_for_every_image(tmp_path, weights, capsys):
    write(tmp_path / "a.jpg", rand(20, 24))
    write(tmp_path / "b.bmp", rand(20, 24))
    out = tmp_path / "o"
    args = ["sharpen", str(tmp_path / "a.jpg"), str(tmp_path / "b.bmp"), "-o", str(out), "--weights", str(weights), "-q"]
    assert main(args + ["--format", "png"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert main(args + ["--format", "same"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "a.png", "b.bmp", "b.png"]
    assert main(args + ["--format", "gif"]) == 2
    assert "--format 'gif'" in capsys.readouterr().err


def test_help_shows_every_default_and_the_shipped_students(capsys):
    from sharpkd.app.shipped import SHIPPED

    for cmd in ("sharpen", "stream", "bench", "export-onnx"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert all(f"{name}:" in text for name in SHIPPED), cmd
        default = "auto" if cmd in ("sharpen", "stream") else "balanced"
        assert f"(default: {default})" in text or f"default: {default}" in text, cmd
    with pytest.raises(SystemExit):
        main(["sharpen", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: 1.0)", "(default: same)", "(default: libx264)", "(default: 18)", "(default: veryfast)",
                  "(default: auto)", "(default: 2048)"):
        assert shown in text, shown


def test_sixteen_bit_stays_sixteen_bit(tmp_path, weights):
    img = (np.random.default_rng(1).random((24, 30, 3)) * 65535).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), img[..., ::-1])
    assert main(["sharpen", str(tmp_path / "deep.png"), "-o", str(tmp_path / "o"), "--weights", str(weights), "-q"]) == 0
    out = load_image(tmp_path / "o" / "deep.png")
    assert out.bit_depth == 16 and out.rgb.shape == img.shape


@pytest.mark.parametrize("strength", [0.0, 0.5, 2.0])
def test_strength_blends_input_and_model_output(weights, strength):
    img = rand(33, 41)
    out = Sharpener(weights, strength=strength)(img).astype(int)
    full = Sharpener(weights, strength=1.0)(img).astype(int)
    assert np.abs(full - img).max() > 2  # the model does change the image
    expected = np.clip(img + strength * (full - img), 0, 255)  # 0: the input; 2: twice as far, clipped
    assert np.abs(out - expected).max() <= 1 + strength


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
    import av

    path = tmp_path / "clip.avi"
    with av.open(str(path), "w") as c:  # an MJPEG AVI, as cameras and OpenCV write them
        v = c.add_stream("mjpeg", rate=Fraction(25, 2))
        v.width, v.height, v.pix_fmt = 48, 32, "yuvj420p"
        for i in range(7):
            frame = av.VideoFrame.from_ndarray(rand(32, 48, seed=i), format="rgb24")
            frame.pts = i
            for p in v.encode(frame):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    assert main(["sharpen", str(path), "-o", str(tmp_path / "o"), "--weights", str(weights), "-q"]) == 0
    with av.open(str(tmp_path / "o" / "clip.avi")) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.average_rate == Fraction(25, 2)
        assert (s.width, s.height) == (48, 32)
        assert sum(1 for _ in c.decode(s)) == 7
    assert "temporal stability" in capsys.readouterr().out


def test_bench_json(capsys, weights, tmp_path):
    out = tmp_path / "bench" / "student-cpu.json"
    assert main(["bench", "--weights", str(weights), "--height", "64", "--width", "96", "--runs", "2",
                 "--warmup", "1", "--json", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["fps"] > 0 and result["p95_ms"] >= result["median_ms"] > 0
    assert result["parameters"] > 0 and result["macs_per_frame"] > 0
    assert result["machine"]["cpu_cores"] >= 1 and result["machine"]["torch"] == torch.__version__
    assert result["machine"]["cpu_isa"] == torch.backends.cpu.get_cpu_capability()  # AVX2 / AVX512: 3x apart here
    from sharpkd.inference.bench import CPU_FEATURES

    flags = next((set(line.split(":", 1)[1].split()) for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), set()) if Path("/proc/cpuinfo").exists() else set()
    assert result["machine"]["cpu_features"] == [f for f in CPU_FEATURES if f in flags]  # VNNI, AMX: int8 speed
    assert json.loads(out.read_text()) == result  # --out keeps exactly what --json prints


def test_bench_seed_arch(capsys):
    assert main(["bench", "--arch", "report", "--height", "32", "--width", "48", "--runs", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["arch"] == "report"


def test_bench_arch_config_times_another_size(capsys, weights):
    args = ["bench", "--arch", "sharp", "--height", "32", "--width", "48", "--runs", "1", "--runtime", "torch", "--json"]
    assert main(args + ["--config", '{"channels": 32, "blocks": 2}']) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["config"] == {"channels": 32, "blocks": 2, "unshuffle": 2} and r["parameters"] == 25452
    for bad, says in (("[32]", "must be a JSON object"), ("{channels", "must be a JSON object"),
                      ('{"channels": 12}', "multiple of 8")):
        assert main(args + ["--config", bad]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err
    assert main(["bench", "--weights", str(weights), "--config", "{}", "--runs", "1"]) != 0  # a file has its own
    assert "weights file carries its own" in capsys.readouterr().err


def test_export_onnx_matches_torch_on_random_sizes(tmp_path, weights):
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "m.onnx"
    assert main(["export-onnx", "--weights", str(weights), "-o", str(path)]) == 0
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = Sharpener(weights).model
    for h, w in [(67, 93), (64, 64), (31, 45), (8, 5)]:
        img = rand(h, w, seed=h)
        ref = run_model(model, img)  # what sharpkd sharpen and the evaluate stage compute
        got = tensor2img(torch.from_numpy(sess.run(None, {"input": img2tensor(img).numpy()})[0]))
        assert np.abs(got.astype(int) - ref).max() <= 1  # float rounding may flip one uint8 level


@pytest.mark.parametrize("student", ["balanced", "fast", "quality"])
def test_export_onnx_of_every_shipped_student(tmp_path, capsys, student):
    """The shipped students (int8 ones too: QuantizeLinear/DequantizeLinear) export, and the ONNX
    graph matches the module within 2 uint8 levels at sizes other than the export's example."""
    ort = pytest.importorskip("onnxruntime")
    from sharpkd.app.shipped import shipped_weights

    path = tmp_path / "m.onnx"
    assert main(["export-onnx", "--student", student, "-o", str(path)]) == 0
    out, err = capsys.readouterr()
    pair = ("; of the pair of experts, the link-mixture one: the link estimate that picks between them is not part "
            "of the graph" if student == "balanced" else "")
    assert out.splitlines() == [f"wrote {path} (sharp, dynamic height and width{pair})"] and "\x1b[" not in err
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = Sharpener(shipped_weights(student), runtime="torch").model
    for h, w in [(37, 53), (16, 24)]:
        img = rand(h, w, seed=h)
        with torch.no_grad():
            ref = tensor2img(model(img2tensor(img)))
        got = tensor2img(torch.from_numpy(sess.run(None, {"input": img2tensor(img).numpy()})[0]))
        assert np.abs(got.astype(int) - ref).max() <= 2


def test_sharpen_writes_what_the_evaluate_stage_scores(tmp_path, weights):
    """eval.json's student rows come from run_model on the loaded student: the same pixels as the CLI's."""
    from sharpkd.inference.tiled import prepare, run_many
    from sharpkd.nets.students import load_student

    imgs = [rand(45, 61, seed=1), rand(1080 // 8, 1920 // 8, seed=2)]
    for i, img in enumerate(imgs):
        write(tmp_path / f"in{i}.png", img)
    assert main(["sharpen", *(str(tmp_path / f"in{i}.png") for i in range(2)), "-o", str(tmp_path / "o"),
                 "--weights", str(weights), "-q", "--runtime", "torch"]) == 0
    student, _ = load_student(weights)
    scored = run_many(prepare(student), imgs, progress=False)  # as stages/evaluate.py runs it
    # (the default runtime, openvino, is within one uint8 level of this: tests/test_runtime.py)
    for i, want in enumerate(scored):
        assert np.array_equal(load_image(tmp_path / "o" / f"in{i}.png").rgb, want)


def test_shipped_student_loads_and_sharpens_offline(tmp_path):
    import json as _json

    from sharpkd.app.shipped import shipped_weights

    from sharpkd.nets.cost import model_cost
    from sharpkd.nets.students import load_student

    card = _json.loads((shipped_weights().parent / "student-balanced.json").read_text())
    model, meta = load_student(shipped_weights())
    assert card["arch"] == meta["arch"] and model_cost(model)["parameters"] == card["parameters"]
    assert card["validation"]["psnr"] > card["evaluation"]["methods"]["identity"]["psnr"]
    img = rand(45, 61)
    write(tmp_path / "x.png", img)
    assert main(["sharpen", str(tmp_path / "x.png"), "-o", str(tmp_path / "o"), "-q"]) == 0
    out = load_image(tmp_path / "o" / "x.png").rgb
    assert out.shape == img.shape and not np.array_equal(out, img)


@pytest.mark.parametrize("name", sorted(__import__("sharpkd.app.shipped", fromlist=["SHIPPED"]).SHIPPED))
def test_every_shipped_student_has_its_weights_and_card_and_runs_by_name(tmp_path, name, capsys):
    import json as _json

    from sharpkd.nets.students import load_student
    from sharpkd.app.shipped import shipped_weights

    path = shipped_weights(name)
    card = _json.loads(path.with_suffix(".json").read_text())
    assert load_student(path)[1]["arch"] == card["arch"]
    write(tmp_path / "x.png", rand(40, 52))
    assert main(["sharpen", str(tmp_path / "x.png"), "-o", str(tmp_path / name), "--student", name, "-q"]) == 0
    assert (tmp_path / name / "x.png").is_file()


@pytest.mark.parametrize("argv", [["sharpen", "x.png", "-o", "out"], ["stream", "--size", "8x8"], ["bench"],
                                  ["export-onnx", "-o", "m.onnx"]])
def test_student_names_and_weights_are_one_or_the_other(tmp_path, capsys, argv, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv + ["--student", "no-such"]) == 2
    from sharpkd.app.shipped import SHIPPED

    names = "auto or one of" if argv[0] in ("sharpen", "stream") else "one of"
    assert capsys.readouterr().err.strip().splitlines() == [f"error: --student must be {names} {', '.join(SHIPPED)}, got 'no-such'"]
    with pytest.raises(SystemExit) as exit_:
        main(argv + ["--student", "balanced", "--weights", "w.safetensors"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not allowed with argument" in err[0]


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
    from sharpkd.training.teacher import build_teacher, save_teacher

    params = {"kind": "restormer", "restormer": {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1,
                                                 "heads": [1, 1, 1, 1], "ffn_expansion_factor": 2.0},
              "adapt": {"seed": 0}}
    save_teacher(build_teacher(params), tmp_path / "t.safetensors", params)
    assert main(["bench", "--teacher", str(tmp_path / "t.safetensors"), "--height", "40", "--width", "72",
                 "--tile", "64", "--runs", "2", "--warmup", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["arch"] == "Restormer" and result["median_ms"] > 0 and result["parameters"] > 0
    assert result["macs_per_1080p_frame"] > 0 and "cpu" in result["machine"]


def test_the_cli_default_tile_and_runtimes_are_the_library_ones():
    """cli.py repeats the constants so that `--help` does not import torch; they must agree."""
    from sharpkd.app import cli
    from sharpkd.inference import tiled as inference

    assert cli.DEFAULT_TILE == inference.DEFAULT_TILE
    from sharpkd.inference import runtimes as runtime

    assert cli.RUNTIMES == runtime.RUNTIMES


def test_a_temporal_student_is_refused_by_every_command(tmp_path, capsys):
    """The temporal form (frames 2) is an experiment's: one error line naming the file or config, exit 2,
    nothing written."""
    from sharpkd.nets.students import build_student, save_student

    temporal = tmp_path / "temporal.safetensors"
    save_student(build_student("sharp", channels=8, frames=2), temporal)
    write(tmp_path / "x.png", rand(16, 16))
    for argv in (["sharpen", str(tmp_path / "x.png"), "-o", str(tmp_path / "o"), "--weights", str(temporal)],
                 ["bench", "--weights", str(temporal), "--width", "32", "--height", "32", "--runs", "1"],
                 ["bench", "--arch", "sharp", "--config", '{"channels": 8, "frames": 2}', "--width", "32",
                  "--height", "32", "--runs", "1"],
                 ["export-onnx", "--weights", str(temporal), "-o", str(tmp_path / "t.onnx")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and "a temporal student (frames 2" in err[0], err
        assert ("--config" in err[0]) if "--config" in argv else (str(temporal) in err[0])
    assert not any((tmp_path / "o").iterdir()) and not (tmp_path / "t.onnx").exists()
