"""``--student auto``: the choice, the cached calibration, and the command's one line about it.

Timing is injected (``auto.measure_student`` monkeypatched), so nothing here runs a student to time it."""

from __future__ import annotations

import json
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from sharpkd.app import auto
from sharpkd.app.cli import main

ORDER = ["quality", "balanced", "fast", "lite"]
N = len(ORDER)  # students timed per calibration


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("SHARPKD_CACHE_DIR", str(folder))
    return folder


def fake(fps: dict, calls: list | None = None):
    def measure(name, width, height, **kw):
        if calls is not None:
            calls.append((name, width, height))
        return {"median_ms": 1000.0 / fps[name], "fps": fps[name]}

    return measure


def timings(**fps):
    return {n: {"median_ms": 1000.0 / f, "fps": f} for n, f in fps.items()}


def clip(path, n=3, w=48, h=32, rate=25):
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=rate)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            f = av.VideoFrame.from_ndarray(np.full((h, w, 3), 40 * i, np.uint8), format="rgb24")
            f.pts = i
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    return path


def test_quality_order_follows_the_cards():
    assert auto.quality_order() == ORDER  # clean frames: +3.16, +2.87, +2.39, +2.17 dB over the input
    # a received video is coded: the mean gain over the H.264 link sets, +0.66, +0.51, +0.48, +0.38 dB
    assert auto.quality_order(coded=True) == ["balanced", "quality", "lite", "fast"]


def test_coded_gain_is_the_mean_over_the_h264_link_sets_of_a_card():
    def link(student, identity):
        return {"methods": {"student": {"psnr": student}, "identity": {"psnr": identity}}}

    card = {"evaluation": {"links": {"h264:23": link(34.0, 33.0), "h264:28": link(32.5, 32.0), "jpeg:75": link(9, 0)}}}
    assert auto.coded_gain(card) == pytest.approx(0.75)
    assert auto.coded_gain({}) is None and auto.coded_gain({"evaluation": {"links": {"h264:23": {}}}}) is None


def test_a_video_gets_the_sharpest_student_on_coded_frames_that_keeps_up(monkeypatch):
    t = {n: {"fps": 100.0, "median_ms": 10.0} for n in ORDER}
    monkeypatch.setattr(auto, "calibrate", lambda *a, **k: t)
    name, line = auto.pick(1920, 1080, 30.0, "clip.mp4")
    assert name == "balanced" and line.startswith("student: balanced (100 fps measured at 1920x1080 >= 30 fps")
    assert auto.pick(None, None, None, "images only")[0] == "quality"  # clean frames: the sharpest there


def test_choose_the_sharpest_that_keeps_up():
    t = timings(quality=12, balanced=31, fast=80)
    assert auto.choose(t, 30, ORDER) == ("balanced", True)
    assert auto.choose(t, 10, ORDER) == ("quality", True)
    assert auto.choose(t, 120, ORDER) == ("fast", False)  # none keeps up: the fastest
    assert auto.choose(t, None, ORDER) == ("quality", True)
    line = auto.explain("balanced", True, t, 30, "clip.mp4", 1920, 1080, ORDER)
    assert line == "student: balanced (31 fps measured at 1920x1080 >= 30 fps of clip.mp4; quality: 12 fps)"
    line = auto.explain("fast", False, t, 120, "clip.mp4", 1920, 1080, ORDER)
    assert line == ("student: fast (80 fps measured at 1920x1080, the fastest; none keeps up with 120 fps of "
                    "clip.mp4: quality 12, balanced 31 fps)")


def test_calibration_is_cached_per_machine_key_and_size(cache):
    calls = []
    measure = fake({"quality": 10, "balanced": 20, "fast": 40, "lite": 80}, calls)
    first = auto.calibrate(64, 32, measure=measure)
    assert len(calls) == N and first["fast"]["fps"] == 40
    assert auto.calibrate(64, 32, measure=measure) == first and len(calls) == N  # from the cache
    data = json.loads((cache / auto.CACHE_NAME).read_text())
    (entry,) = data["entries"].values()
    key = entry["key"]
    assert set(key) >= {"cpu", "runtime", "runtime_version", "sharpkd", "threads"} and "64x32" in entry["sizes"]
    auto.calibrate(96, 32, measure=measure)  # another size: measured
    assert len(calls) == 2 * N
    auto.calibrate(64, 32, measure=measure, force=True)  # bench --calibrate
    assert len(calls) == 3 * N
    before = torch.get_num_threads()
    torch.set_num_threads(before + 1)
    try:
        auto.calibrate(64, 32, measure=measure)  # another thread count is another key
    finally:
        torch.set_num_threads(before)
    assert len(calls) == 4 * N
    assert len(json.loads((cache / auto.CACHE_NAME).read_text())["entries"]) == 2
    assert not list(cache.glob(".*tmp*"))  # written atomically: no temporary file left


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"entries": 3}', b"\xff\xfe"])
def test_a_corrupt_cache_is_ignored_with_one_warning_and_rewritten(cache, content):
    cache.mkdir()
    (cache / auto.CACHE_NAME).write_bytes(content)
    calls = []
    with pytest.warns(UserWarning) as record:
        auto.calibrate(64, 32, measure=fake({"quality": 10, "balanced": 20, "fast": 40, "lite": 80}, calls))
    assert len(record) == 1 and "rewritten" in str(record[0].message)
    assert len(calls) == N
    assert "entries" in json.loads((cache / auto.CACHE_NAME).read_text())


def test_a_failing_calibration_falls_back_to_balanced(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("no\nruntime")

    name, line = auto.pick(64, 32, 30, "clip.mp4", measure=broken)
    assert name == "balanced"
    assert line == "warning: student auto: timing the shipped students failed (no runtime); using balanced"


def test_sharpen_video_chooses_and_says_why(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(auto, "measure_student", fake({"quality": 30, "balanced": 20, "fast": 90, "lite": 180}, calls))
    src = clip(tmp_path / "clip.mp4", rate=25)
    assert main(["sharpen", str(src), "-o", str(tmp_path / "o"), "-q"]) == 0
    err = capsys.readouterr().err.splitlines()
    # a video is coded: balanced is the sharpest there, but only quality (next) keeps up
    assert err == ["student: quality (30 fps measured at 48x32 >= 25 fps of clip.mp4; balanced: 20 fps)"]
    assert calls == [(n, 48, 32) for n in ("balanced", "fast", "quality", "lite")]
    assert main(["sharpen", str(src), "-o", str(tmp_path / "o2"), "-q"]) == 0  # cached: no timing again
    assert len(calls) == N


def test_explicit_student_or_weights_wins_and_nothing_is_timed(tmp_path, monkeypatch, capsys, weights):
    def never(*a, **k):
        raise AssertionError("timed")

    monkeypatch.setattr(auto, "measure_student", never)
    src = clip(tmp_path / "clip.mp4")
    assert main(["sharpen", str(src), "-o", str(tmp_path / "a"), "-q", "--student", "fast"]) == 0
    assert main(["sharpen", str(src), "-o", str(tmp_path / "b"), "-q", "--weights", str(weights)]) == 0
    assert capsys.readouterr().err == ""


def test_images_get_the_sharpest_untimed(tmp_path, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.setattr(auto, "measure_student", lambda *a, **k: pytest.fail("timed"))
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(tmp_path / "a.png")
    assert main(["sharpen", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "-q"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "student: quality (the sharpest shipped student; images only: no frame rate to keep up with)"]


def test_sharpen_survives_a_failing_calibration(tmp_path, monkeypatch, capsys):
    def broken(*a, **k):
        raise MemoryError()

    monkeypatch.setattr(auto, "measure_student", broken)
    src = clip(tmp_path / "clip.mp4")
    assert main(["sharpen", str(src), "-o", str(tmp_path / "o"), "-q"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: student auto: timing the shipped students failed")
    assert (tmp_path / "o" / "clip.mp4").is_file()


def test_stream_fps_option(monkeypatch, capsys):
    import io
    import sys

    from sharpkd.video import codec

    for bad in ("0", "-5", "nan", "inf"):
        assert main(["stream", "--size", "8x8", "--fps", bad]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("error: --fps must be a positive number"), err
    with pytest.raises(SystemExit) as exit_:
        main(["stream", "--size", "8x8", "--fps", "x"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[0].startswith("error: argument --fps")

    calls = []
    monkeypatch.setattr(auto, "measure_student", fake({"quality": 50, "balanced": 55, "fast": 200, "lite": 400}, calls))
    monkeypatch.setattr(codec, "stream", lambda *a, **k: {"frames": 0, "fps": None, "broken_pipe": False})
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    monkeypatch.setattr(sys, "stdout", io.StringIO(""))
    assert main(["stream", "--size", "64x32", "--fps", "60"]) == 0
    err = capsys.readouterr().err.splitlines()
    # a stream is coded frames: balanced, then quality, do not keep up; lite is next on coded frames
    assert err[0] == "student: lite (400 fps measured at 64x32 >= 60 fps of --fps 60; balanced: 55 fps, quality: 50 fps)"
    assert calls and all(c[1:] == (64, 32) for c in calls)


def test_bench_calibrate_measures_again(cache, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(auto, "measure_student", fake({"quality": 5, "balanced": 8, "fast": 20, "lite": 40}, calls))
    for _ in range(2):
        assert main(["bench", "--calibrate", "--height", "32", "--width", "64", "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
    assert len(calls) == 2 * N and result["calibration"]["fast"]["fps"] == 20
    assert (cache / auto.CACHE_NAME).is_file()
    assert main(["bench", "--calibrate", "--student", "fast"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --student names one model to time; --calibrate times every shipped student, leave it out"]
