"""The video link (frames through libx264 with motion prediction), its training pairs, the video
scores and experiments/video_links.py: deterministic bytes, specs checked in one line, the still links
untouched."""

import json
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import yaml

from sharpkd.data.degrade import (degrade, is_video_link, link_list, parse_link, parse_video_link, train_assignment,
                                  video_link_name)
from sharpkd.data.video_link import (KEEP, SEQUENCE_FRAMES, camera_motion, degrade_crop, encoder_options, link_kbps,
                                     motion_sequence, read_clip, send, sequence_pair, video_settings)
from sharpkd.errors import SharpkdError, one_line
from sharpkd.evaluation.metrics import PSNR_CAP, psnr
from sharpkd.evaluation.video import ClipScores, mean_over_clips
from tests.e2e import ROOT


def texture(h, w, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 4 + 2, w // 4 + 2, 3)).astype(np.uint8)
    return np.kron(base, np.ones((4, 4, 1), np.uint8))


def panning(frames=10, h=62, w=90, seed=0):
    """A textured scene panning right by 2 pixels a frame (odd coded size at 60%: 54x37)."""
    big = texture(h + 8, w + 2 * frames + 8, seed)
    return [np.ascontiguousarray(big[4:4 + h, 2 * t:2 * t + w]) for t in range(frames)]


@pytest.mark.parametrize("spec,link", [("h264v:23", {"crf": 23}), ("h264v:0", {"crf": 0}), (" h264v:51", {"crf": 51}),
                                       ("h264v:1000k", {"kbps": 1000}), ("h264v:1k", {"kbps": 1})])
def test_video_link_specs_round_trip(spec, link):
    assert parse_video_link(spec) == link and video_link_name(link) == spec.strip() and is_video_link(spec)


@pytest.mark.parametrize("spec,says", [("h264v:52", "CRF must be 0..51"), ("h264v:0k", "bit rate must be"),
                                       ("h264v:", "is not a video link"), ("h264v:23.5", "is not a video link"),
                                       ("h264v:k", "is not a video link"), ("h264v:1000K", "is not a video link"),
                                       ("h264v:-1", "is not a video link")])
def test_bad_video_link_specs_are_one_line(spec, says):
    with pytest.raises(SharpkdError) as err:
        link_list(["none", spec], "train_links", video=True)
    assert str(err.value).startswith(f"degrade.train_links: {spec!r}") and says in str(err.value)
    assert one_line(err.value) == str(err.value)


def test_video_links_only_where_a_sequence_is_made():
    assert link_list(["none", " h264v:28", "h264v:500k"], "train_links", video=True) == ["none", "h264v:28", "h264v:500k"]
    with pytest.raises(SharpkdError, match="degrade.val_links: 'h264v:23' is a video link"):
        link_list(["h264v:23"], "val_links")
    a = train_assignment([f"c{i}" for i in range(200)], {"train_links": ["none", "h264v:23", "h264v:28"], "seed": 0})
    assert set(a.values()) == {"none", "h264v:23", "h264v:28"}


def test_send_is_deterministic_and_predicts_frames():
    frames = panning()
    a, b = send(frames, "h264v:23"), send(frames, "h264v:23")
    assert a.sha256 == b.sha256 and a.bytes == b.bytes and all(np.array_equal(x, y) for x, y in zip(a.low, b.low))
    assert a.frame_types[0] == "I" and set(a.frame_types[1:]) <= {"P", "B"} and "I" not in a.frame_types[1:]
    assert a.low[0].shape == (37, 54, 3) and a.received(3).shape == frames[3].shape == a.lanczos(3).shape
    assert psnr(a.received(5), frames[5]) > psnr(a.received(5), frames[0]) + 1  # the frame, not another
    assert send(frames, "h264v:40").bytes < a.bytes < send(frames, "h264v:10").bytes


def test_bitrate_cap_scales_with_the_frame_area():
    assert link_kbps({"kbps": 1000}, 1152, 648) == 1000 and link_kbps({"kbps": 1000}, 576, 324) == 250
    assert encoder_options({"kbps": 1000}, 576, 324)["maxrate"] == "250000"
    assert encoder_options({"crf": 28}, 576, 324)["crf"] == "28" and link_kbps({"crf": 28}, 10, 10) is None
    assert encoder_options({"kbps": 1}, 32, 32)["b"] == "1000"  # the floor: 1 kbit/s
    frames = panning(12)
    low, high = send(frames, "h264v:20k", fps=Fraction(30000, 1001)), send(frames, "h264v:20000k")
    assert low.bytes < high.bytes and low.sha256 == send(frames, "h264v:20k", fps=Fraction(30000, 1001)).sha256


def test_send_refuses_mixed_frames():
    with pytest.raises(SharpkdError, match="one size"):
        send([texture(32, 32), texture(36, 32)[:36, :32]], "h264v:23")
    with pytest.raises(SharpkdError, match="at least one frame"):
        send([], "h264v:23")


def test_training_sequence_keeps_the_crop_and_is_seeded():
    crop = texture(40, 60, seed=3)[:40, :60]
    m = camera_motion(0, "a.png")
    assert m == camera_motion(0, "a.png") != camera_motion(1, "a.png") and m != camera_motion(0, "b.png")
    seq = motion_sequence(crop, m)
    assert len(seq) == SEQUENCE_FRAMES and seq[KEEP] is crop
    assert all(f.shape == crop.shape and not np.array_equal(f, crop) for i, f in enumerate(seq) if i != KEEP)
    got = sequence_pair(crop, "h264v:23", 0.6, 0, "a.png")
    assert np.array_equal(got, sequence_pair(crop, "h264v:23", 0.6, 0, "a.png")) and got.shape == crop.shape
    assert not np.array_equal(got, degrade(crop, 0.6, codec="h264", h264_crf=23))
    assert np.array_equal(degrade_crop(crop, "h264:28", 0.6, 0, "a.png"), degrade(crop, 0.6, **parse_link("h264:28")))
    assert np.array_equal(degrade_crop(crop, "none", 0.6, 0, "a.png"), degrade(crop, 0.6))
    assert video_settings(["none", "h264:23"]) == {} and video_settings(["h264v:28"])["video_link"]["kept_frame"] == KEEP


def test_degrade_stage_with_video_links(tmp_path, monkeypatch):
    import stages.degrade

    from sharpkd.data.shards import read_split, write_split

    rng = np.random.default_rng(0)
    crops = {f"s{i}.png": texture(32 + 2 * i, 44, seed=i)[:32 + 2 * i, :44] for i in range(8)}
    write_split(tmp_path / "slices", "train", crops)
    write_split(tmp_path / "slices", "val_full", {"v.png": rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)})
    p = {"scale": 0.6, "codec": "none", "train_links": ["none", "h264:23", "h264v:23", "h264v:300k"],
         "val_links": ["h264:28"], "seed": 0}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"degrade": p}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["degrade", "--slices", "slices", "--out", "degraded", "--links-out", "links",
                                      "--provenance", "degrade.json"])
    stages.degrade.run()
    record = json.loads((tmp_path / "degrade.json").read_text())
    assert record["train_crops"] == train_assignment(crops, p) and record["train_links"] == p["train_links"]
    assert record["video_link"]["options"]["threads"] == "1"
    deg = read_split(tmp_path / "degraded", "train")
    for name, spec in record["train_crops"].items():
        want = sequence_pair(crops[name], spec, 0.6, 0, name) if is_video_link(spec) else \
            degrade(crops[name], 0.6, **parse_link(spec))
        assert np.array_equal(deg[name], want)
    assert any(is_video_link(s) for s in record["train_crops"].values())


def test_clip_scores():
    gts = panning(5)
    s = ClipScores()
    for g in gts:
        shifted = np.clip(g.astype(np.int16) + 3, 0, 255).astype(np.uint8)
        s.add(g, {"same": g, "offset": shifted, "still": gts[0]})
    r = s.result()
    assert r["same"] == {"psnr": PSNR_CAP, "psnr_min": PSNR_CAP, "temporal_error": 0.0, "motion_ratio": 1.0}
    assert r["offset"]["temporal_error"] < 0.5 and r["still"]["motion_ratio"] == 0.0
    assert r["still"]["temporal_error"] > 10 and r["still"]["psnr_min"] < 30
    with pytest.raises(ValueError, match="methods"):
        s.add(gts[0], {"same": gts[0]})
    below = s.result(reference="offset")
    assert below["still"]["frames_below_reference"] == 4 and below["offset"]["frames_below_reference"] == 0
    assert s.result(reference="same")["offset"]["frames_below_reference"] == 5
    with pytest.raises(ValueError, match="reference"):
        s.result(reference="nothing")
    m = mean_over_clips([r, r | {"same": {**r["same"], "psnr": 50.0}}])
    assert m["same"]["psnr"] == 75.0 and m["offset"] == r["offset"]


def write_clip(path, frames, fps=25):
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.codec_context.options = {"crf": "10", "threads": "1"}
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            for p in v.encode(vf):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)


def test_read_clip(tmp_path):
    frames = panning(6, 64, 96)
    write_clip(tmp_path / "c.mp4", frames)
    got, fps = read_clip(tmp_path / "c.mp4", 4, start=1)
    assert fps == 25 and len(got) == 4 and got[0].shape == (64, 96, 3) and psnr(got[0], frames[1]) > psnr(got[0], frames[0]) + 1
    with pytest.raises(SharpkdError, match="6 frames from frame 0, 9 asked for"):
        read_clip(tmp_path / "c.mp4", 9)
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(SharpkdError, match="cannot open as a video"):
        read_clip(tmp_path / "bad.mp4", 2)


def _tool(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "experiments" / "video_links.py"), *args], cwd=cwd,
                          capture_output=True, text=True)


@pytest.mark.parametrize("args,says", [
    (["--links", "h264:23"], "error: --links: 'h264:23' is not a video link (h264v:CRF, h264v:NNNk)"),
    (["--links", "h264v:23,h264v:23"], "error: --links 'h264v:23,h264v:23': give one or more different"),
    (["--frames", "1"], "error: --frames must be at least 2"),
    (["--students", "tiny"], "error: --students: 'tiny' is not a shipped student"),
    (["--clips", "/nonexistent/x.mp4"], "error: --clips /nonexistent/x.mp4: no such file or folder"),
    (["--weights", "mine"], "error: --weights 'mine': give NAME=PATH"),
    (["--weights", "mine=/nonexistent/s.safetensors"], "error: --weights 'mine=/nonexistent/s.safetensors': /nonexistent"),
    (["--weights", "lanczos=" + str(ROOT / "sharpkd/weights/student-fast.safetensors")], "error: --weights 'lanczos="),
])
def test_tool_bad_options_are_one_error_line(args, says):
    proc = _tool(*args)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith(says) and len(proc.stderr.strip().splitlines()) == 1


def test_tool_on_a_tiny_clip(tmp_path):
    write_clip(tmp_path / "tiny.mp4", panning(5, 64, 96))
    out = tmp_path / "v.json"
    mine = ROOT / "sharpkd/weights/student-lite.safetensors"
    proc = _tool("--clips", str(tmp_path), "--frames", "4", "--links", "h264v:28,h264v:100k", "--students", "fast",
                 "--weights", f"mine={mine}",
                 "--unsharp-from", str(ROOT / "metrics/photos/eval_settings.json"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    d = json.loads(out.read_text())
    assert set(d) >= {"command", "revision", "machine", "settings", "clips", "mean"}
    link = d["clips"]["tiny"]["links"]["h264v:28"]
    assert set(link["methods"]) == {"received", "lanczos", "unsharp", "fast", "mine"} and link["frame_types"][0] == "I"
    assert d["settings"]["methods"]["mine"]["file"] == str(mine)
    assert d["mean"]["h264v:100k"]["fast"] == d["clips"]["tiny"]["links"]["h264v:100k"]["methods"]["fast"]
    assert d["settings"]["methods"]["fast"]["file"] == "sharpkd/weights/student-fast.safetensors"


@pytest.mark.parametrize("spec", ["h264v:28", "h264:23", "none"])
def test_training_pair_with_the_previous_frame(spec):
    crop = texture(40, 60, seed=4)[:40, :60]
    alone = degrade_crop(crop, spec, 0.6, 0, "a.png")
    both = degrade_crop(crop, spec, 0.6, 0, "a.png", previous=True)
    assert both.shape == (40, 60, 6) and both.dtype == np.uint8
    assert np.array_equal(both[..., :3], alone)  # the current frame is the single-frame pair, byte for byte
    assert not np.array_equal(both[..., 3:], alone)  # the camera moved
    assert np.array_equal(both, degrade_crop(crop, spec, 0.6, 0, "a.png", previous=True))
    if spec == "none":
        seq = motion_sequence(crop, camera_motion(0, "a.png"))
        assert np.array_equal(both[..., 3:], degrade(seq[KEEP - 1], 0.6))
