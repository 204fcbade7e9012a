"""--reuse-unchanged: only the windows whose input changed run, and the output is the same bytes."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from sharpkd.app.cli import main
from sharpkd.app.sharpen import Sharpener
from sharpkd.inference.runtimes import available
from sharpkd.video.changed import ChangedWindows


def frames(h=96, w=160):
    rng = np.random.default_rng(0)
    f0 = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    f1 = f0.copy()
    f1[10:14, 20:23] = 255 - f1[10:14, 20:23]  # a small change in one corner, off the probed rows (every 8th)
    f2 = f1.copy()  # nothing changed
    f3 = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)  # everything changed: the frame runs whole
    f4 = f3.copy()
    f4[-1, -1, 2] ^= 1  # one value of one pixel
    return [f0, f1, f2, f3, f4]


@pytest.mark.parametrize("runtime", ["torch", "openvino"])
@pytest.mark.parametrize("strength", [1.0, 1.5])
def test_same_bytes_as_every_window_and_fewer_windows(weights, runtime, strength):
    if not available(runtime):
        pytest.skip(f"{runtime} not installed")
    full = Sharpener(weights, tile=64, overlap=32, strength=strength, runtime=runtime)
    reuse = ChangedWindows(Sharpener(weights, tile=64, overlap=32, strength=strength, runtime=runtime))
    per_frame = []
    for f in frames():
        before = reuse.computed
        assert np.array_equal(reuse(f), full(f))
        per_frame.append(reuse.computed - before)
    n = reuse.total // 5
    assert n > 4
    assert per_frame[0] == n and per_frame[3] == n  # first frame, and a new scene: every window
    assert 0 < per_frame[1] < n and per_frame[2] == 0 and 0 < per_frame[4] < n
    assert reuse.fraction() == round(sum(per_frame) / reuse.total, 4)


def test_one_window_frames_and_a_new_size(weights):
    full = Sharpener(weights, strength=1.0, runtime="torch")
    reuse = ChangedWindows(Sharpener(weights, strength=1.0, runtime="torch"))
    a, b = frames()[:2]
    small = a[:40, :56]
    for f in (a, a, b, small, small):
        assert np.array_equal(reuse(f), full(f))
    assert (reuse.computed, reuse.total) == (3, 5)


def clip(path, n=8, w=160, h=96):
    base = frames(h, w)[0]
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = w, h, "yuv444p"
        v.options = {"crf": "0"}
        for i in range(n):
            img = base.copy()
            if i >= n // 2:
                img[:16, :16] = 0  # a change in one corner half way through
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    return path


def decoded(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_sharpen_reuse_unchanged_reports_the_fraction(tmp_path, weights, capsys):
    src = clip(tmp_path / "clip.mkv")
    common = [str(src), "--weights", str(weights), "--tile", "64", "-q", "--runtime", "torch"]
    assert main(["sharpen", *common, "-o", str(tmp_path / "full")]) == 0
    assert main(["sharpen", *common, "-o", str(tmp_path / "reuse"), "--reuse-unchanged",
                 "--timings", str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    assert "% of the windows (--reuse-unchanged)" in out
    (v,) = json.loads((tmp_path / "t.json").read_text())["videos"]
    assert 0 < v["recomputed"] < 0.5 and v["frames"] == 8 and v["per_frame_ms"]["model"] >= 0
    a, b = decoded(tmp_path / "full" / "clip.mkv"), decoded(tmp_path / "reuse" / "clip.mkv")
    assert len(a) == len(b) == 8 and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_timings_must_be_a_file(tmp_path, weights, capsys):
    src = clip(tmp_path / "clip.mkv", n=2)
    assert main(["sharpen", str(src), "--weights", str(weights), "-o", str(tmp_path / "o"), "--timings",
                 str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: --timings {tmp_path}: is a folder; give the JSON file to write"]
