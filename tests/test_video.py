"""Video through FFmpeg (sharpkd/video/codec.py): H.264 out, audio copied bit for bit, timestamps,
rotation, colour tags and frame count kept; truncated or damaged inputs and failed writes never
leave a half-written file and never pass silently.  Clips are tiny (64x48, about 10 frames)."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from sharpkd.video import codec as video
from sharpkd.app.cli import main
from sharpkd.evaluation.metrics import psnr

W, H = 64, 48


def smooth(i: int, w: int = W, h: int = H) -> np.ndarray:
    """A moving colour gradient: compresses well, so crf 18 keeps it almost exactly."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 128 + 100 * np.sin((x + 2 * i) / 9.0)
    g = 128 + 100 * np.cos((y - i) / 7.0)
    b = 128 + 60 * np.sin((x + y + 3 * i) / 13.0)
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def make_clip(path: Path, n: int = 10, *, rotation: int = 0, audio: bool = True, vfr: bool = True,
              pix_fmt: str = "yuv420p", colour: bool = False, faststart: bool = True) -> list[int]:
    """Write an H.264 clip (timestamps in ms, uneven when ``vfr``) with an AAC sine track;
    returns the frames' pts (1/1000 s)."""
    options = {"movflags": "faststart"} if faststart and path.suffix in (".mp4", ".mov") else {}
    pts, t = [], 0
    with av.open(str(path), "w", options=options) as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = W, H, pix_fmt
        v.codec_context.time_base = v.time_base = Fraction(1, 1000)
        if colour:
            ctx = v.codec_context
            ctx.color_primaries, ctx.color_trc, ctx.colorspace, ctx.color_range = 1, 1, 1, 2
        if rotation:
            v.set_display_rotation(rotation)
        a = c.add_stream("aac", rate=48000) if audio else None
        if a is not None:
            a.layout = "mono"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(smooth(i), format="rgb24")
            if colour:
                frame = frame.reformat(format=pix_fmt, dst_colorspace=1, dst_color_range=2)
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            pts.append(t)
            t += 70 if vfr and i % 3 == 0 else 40
            for p in v.encode(frame):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
        if a is not None:
            samples = int(48 * t)
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / 48000)).astype(np.float32)
            for s in range(0, samples, 1024):
                af = av.AudioFrame.from_ndarray(tone[None, s:s + 1024], format="fltp", layout="mono")
                af.sample_rate, af.pts = 48000, s
                for p in a.encode(af):
                    c.mux(p)
            for p in a.encode(None):
                c.mux(p)
    return pts


def probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        ctx = v.codec_context
        frames = list(c.decode(v))
        info = {"codec": ctx.name, "pix_fmt": ctx.pix_fmt, "n": len(frames), "size": (v.width, v.height),
                "times": [Fraction(f.pts) * f.time_base for f in frames], "rotation": {f.rotation for f in frames},
                "rgb": [f.to_ndarray(format="rgb24", src_colorspace=1 if ctx.colorspace == 1 else None,
                                     src_color_range=ctx.color_range or 1) for f in frames],
                "colour": (int(ctx.color_primaries), int(ctx.color_trc), int(ctx.colorspace), int(ctx.color_range)),
                "streams": [s.type for s in c.streams]}
        c.seek(0)
        info["audio"] = ([bytes(p) for p in c.demux(c.streams.audio[0]) if p.dts is not None]
                         if c.streams.audio else [])
    return info


def sharpen(weights, *args) -> int:
    return main(["sharpen", *map(str, args), "--weights", str(weights), "-q"])


def temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if ".tmp-" in p.name] if folder.exists() else []


def test_h264_out_audio_copied_frames_pts_and_rotation_kept(tmp_path, weights, capsys):
    src = tmp_path / "clip.mp4"
    make_clip(src, rotation=90)
    assert sharpen(weights, src, "-o", tmp_path / "o") == 0
    out, lines = tmp_path / "o" / "clip.mp4", capsys.readouterr().out.splitlines()
    a, b = probe(src), probe(out)
    assert b["codec"] == "h264" and b["pix_fmt"] == "yuv420p" and b["size"] == (W, H)
    assert b["n"] == a["n"] == 10
    assert b["times"] == a["times"]  # every frame's time, variable frame rate included
    assert len(set(np.diff([float(t) for t in b["times"]]).round(3))) == 2
    assert b["rotation"] == {90}
    assert b["streams"] == ["video", "audio"] and b["audio"] == a["audio"] and len(a["audio"]) > 5
    assert not all(np.array_equal(x, y) for x, y in zip(a["rgb"], b["rgb"]))  # it was sharpened
    assert lines[0].startswith(f"{src}: 10 frames at ") and "libx264 crf 18 yuv420p, 1 audio stream(s) copied" in lines[0]
    assert re.search(r"processed at [0-9.]+ frames/s \(per frame: decode \d+ \+ to RGB \d+ ms CPU, model \d+ ms, "
                     r"to YUV \d+ \+ encode \d+ ms CPU\)", lines[0]), lines[0]
    assert "temporal stability" in lines[0] and lines[-1] == f"sharpened 1 file(s) into {tmp_path / 'o'}; 0 failed"
    assert temps(tmp_path / "o") == []


def test_strength_zero_round_trips_the_pixels_and_colour_tags(tmp_path, weights):
    """No colour shift through decode -> RGB -> encode: the source's matrix and range are used
    both ways, and its tags (BT.709, full range) and 10-bit pixel format are written back."""
    for pix_fmt in ("yuv420p", "yuv420p10le"):
        src = tmp_path / f"c{pix_fmt}.mkv"
        make_clip(src, audio=False, colour=True, pix_fmt=pix_fmt)
        assert sharpen(weights, src, "-o", tmp_path / "o", "--strength", "0", "--crf", "10") == 0
        a, b = probe(src), probe(tmp_path / "o" / src.name)
        assert b["pix_fmt"] == a["pix_fmt"] and pix_fmt.removeprefix("yuv") in a["pix_fmt"] and b["colour"] == a["colour"] == (1, 1, 1, 2)
        assert b["times"] == a["times"] and b["streams"] == ["video"]
        assert min(psnr(x, y) for x, y in zip(a["rgb"], b["rgb"])) > 38


def test_codec_and_crf_options(tmp_path, weights, capsys):
    src = tmp_path / "clip.mkv"
    make_clip(src, n=6)
    sizes = {}
    for crf in (10, 40):
        out = tmp_path / f"o{crf}"
        assert sharpen(weights, src, "-o", out, "--crf", crf, "--preset", "ultrafast") == 0
        sizes[crf] = (out / "clip.mkv").stat().st_size
    assert sizes[40] < sizes[10]  # the quality option reaches the encoder
    assert sharpen(weights, src, "-o", tmp_path / "h265", "--codec", "h265", "--preset", "ultrafast") == 0
    b = probe(tmp_path / "h265" / "clip.mkv")
    assert b["codec"] == "hevc" and b["n"] == 6 and b["audio"] == probe(src)["audio"]
    capsys.readouterr()
    for bad, option in ((["--crf", "60"], "--crf"), (["--codec", "vp9"], "--codec"), (["--preset", "warp"], "--preset")):
        assert sharpen(weights, src, "-o", tmp_path / "bad", *bad) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {option}")
    assert not (tmp_path / "bad" / "clip.mkv").exists()


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_truncated_input_fails_naming_the_file_unless_keep_partial(tmp_path, weights, capsys, ext):
    src = tmp_path / f"cut{ext}"
    make_clip(src, n=30)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) * 6 // 10])
    out = tmp_path / "o"
    assert sharpen(weights, src, "-o", out) == 1
    cap = capsys.readouterr()
    err = cap.err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"skipped {src}: ") and "truncated or damaged" in err[0]
    assert "--keep-partial" in err[0] and cap.out.splitlines()[-1].endswith("; 1 failed")
    assert not (out / src.name).exists() and temps(out) == []

    assert sharpen(weights, src, "-o", out, "--keep-partial") == 0
    lines = capsys.readouterr().out.splitlines()
    kept = probe(out / src.name)["n"]
    assert 0 < kept < 30
    partial = [line for line in lines if "partial" in line]
    assert len(partial) == 1 and f"kept the {kept}" in partial[0]
    assert ("of 30 frames" in partial[0]) == (ext == ".mp4")  # MP4 counts its frames; MKV has a duration


def test_damaged_middle_is_a_decode_error(tmp_path, weights, capsys):
    src = tmp_path / "bad.mp4"
    make_clip(src, n=30, audio=False)
    data = bytearray(src.read_bytes())
    n = len(data)
    data[n // 2: n * 6 // 10] = np.random.default_rng(0).integers(0, 256, n * 6 // 10 - n // 2, np.uint8).tobytes()
    src.write_bytes(bytes(data))
    assert sharpen(weights, src, "-o", tmp_path / "o") == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"skipped {src}: ") and "--keep-partial" in err[0]
    assert not (tmp_path / "o" / "bad.mp4").exists() and temps(tmp_path / "o") == []


def test_write_failure_leaves_nothing_under_the_final_name(tmp_path, weights, capsys, monkeypatch):
    src, other = tmp_path / "clip.mp4", tmp_path / "other.mp4"
    make_clip(src, n=10)
    make_clip(other, n=4)
    real_mux, calls = video._Writer.mux, []

    def disk_full(self, packet):
        calls.append(self.path)
        if self.path.name.startswith(".clip.mp4") and len(calls) > 3:
            raise av.error.OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_mux(self, packet)

    monkeypatch.setattr(video._Writer, "mux", disk_full)
    out = tmp_path / "o"
    assert sharpen(weights, src, other, "-o", out) == 1
    cap = capsys.readouterr()
    err = cap.err.splitlines()
    assert err == [f"skipped {src}: cannot write {out / 'clip.mp4'}: No space left on device "
                   "(free some space or write to another disk)"]
    assert sorted(p.name for p in out.iterdir()) == ["other.mp4"]  # the next file still done; no temp file
    assert probe(out / "other.mp4")["n"] == 4


def test_real_file_size_limit_fails_the_file(tmp_path, weights):
    """FFmpeg's own write fails (RLIMIT_FSIZE: EFBIG, as a full disk would): exit 1, no file."""
    src = tmp_path / "clip.mkv"
    make_clip(src, n=10)
    out = tmp_path / "o"
    out.mkdir()
    code = (
        "import resource, signal, sys\n"
        "from sharpkd.app.cli import main\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (3000, resource.RLIM_INFINITY))\n"
        f"sys.exit(main(['sharpen', {str(src)!r}, '-o', {str(out)!r}, '--weights', {str(weights)!r}, '-q']))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env=os.environ | {"PYTHONDONTWRITEBYTECODE": "1"})
    err = r.stderr.splitlines()
    assert r.returncode == 1, r.stderr
    assert len(err) == 1 and err[0].startswith(f"skipped {src}: cannot write {out / 'clip.mkv'}: "), err
    assert list(out.iterdir()) == []


def test_progress_bar_shows_frames_per_second(tmp_path, weights, capsys):
    src = tmp_path / "clip.mp4"
    make_clip(src, n=10)
    assert main(["sharpen", str(src), "-o", str(tmp_path / "o"), "--weights", str(weights)]) == 0
    err = capsys.readouterr().err
    assert re.search(r"clip\.mp4: 100%\|.*\| 10/10 \[[0-9:]+<[0-9:]+,\s*\d+(\.\d+)?frame/s\]", err), err


def test_no_audio_is_said(tmp_path, weights, capsys):
    src = tmp_path / "mute.mkv"
    make_clip(src, n=5, audio=False)
    assert sharpen(weights, src, "-o", tmp_path / "o") == 0
    assert ", no audio; processed at " in capsys.readouterr().out
    assert probe(tmp_path / "o" / "mute.mkv")["streams"] == ["video"]


def test_choose_pix_fmt():
    assert video.choose_pix_fmt("yuv420p", "libx264", 64, 48) == ("yuv420p", False)
    assert video.choose_pix_fmt("yuvj420p", "libx264", 64, 48) == ("yuv420p", True)
    assert video.choose_pix_fmt("yuv420p10le", "libsvtav1", 64, 48) == ("yuv420p10le", False)
    assert video.choose_pix_fmt("yuv444p12le", "libsvtav1", 64, 48) == ("yuv420p10le", False)
    assert video.choose_pix_fmt("rgb24", "libx264", 64, 48) == ("yuv420p", False)
    assert video.choose_pix_fmt("yuv420p", "libx264", 63, 47) == ("yuv444p", False)  # odd size: no subsampling
    with pytest.raises(video.SharpkdError, match="odd frame size"):
        video.choose_pix_fmt("yuv420p", "libsvtav1", 63, 48)


def _boxes(data: bytes, start: int = 0, end: int | None = None):
    """(type, payload start, payload end) of the MP4 boxes in data[start:end]."""
    end = len(data) if end is None else end
    while start + 8 <= end:
        size, kind = int.from_bytes(data[start:start + 4], "big"), data[start + 4:start + 8]
        head = 8
        if size == 1:
            size, head = int.from_bytes(data[start + 8:start + 16], "big"), 16
        size = size or end - start
        yield kind, start + head, start + size
        start += size


def video_track_matrix(path: Path) -> bytes:
    """The display matrix (36 bytes of the ``tkhd`` box) of the MP4's video track, where the
    rotation is stored."""
    data = path.read_bytes()
    moov = next((a, b) for k, a, b in _boxes(data) if k == b"moov")
    for kind, a, b in _boxes(data, *moov):
        if kind != b"trak":
            continue
        inner = {k: (x, y) for k, x, y in _boxes(data, a, b)}
        mdia = inner[b"mdia"]
        hdlr = next((x, y) for k, x, y in _boxes(data, *mdia) if k == b"hdlr")
        if data[hdlr[0] + 8:hdlr[0] + 12] != b"vide":
            continue
        t = inner[b"tkhd"][0]
        matrix_at = t + (52 if data[t] == 1 else 40)  # version 1: 64-bit times and duration
        return data[matrix_at:matrix_at + 36]
    raise AssertionError("no video track")


@pytest.mark.parametrize("rotation", [90, 180, -90])
def test_display_matrix_kept(tmp_path, weights, rotation):
    """The rotation is the display matrix in the video track's header: the output's is the
    input's, byte for byte, and decoders see the same rotation."""
    src = tmp_path / "rot.mp4"
    make_clip(src, n=4, rotation=rotation, audio=False)
    assert sharpen(weights, src, "-o", tmp_path / "o") == 0
    out = tmp_path / "o" / "rot.mp4"
    identity = (b"\x00\x01\x00\x00" + b"\x00" * 12 + b"\x00\x01\x00\x00" + b"\x00" * 12 + b"\x40\x00\x00\x00")
    assert video_track_matrix(src) != identity  # the clip really is rotated
    assert video_track_matrix(out) == video_track_matrix(src)
    seen = probe(src)["rotation"]
    assert probe(out)["rotation"] == seen and len(seen) == 1 and abs(seen.pop()) == abs(rotation)


def test_subtitle_stream_copied_unchanged(tmp_path, weights, capsys):
    """An ASS subtitle track in MKV (PyAV cannot encode SubRip or mov_text here, but it muxes
    ASS packets): the output holds the same subtitle packets, bytes and times."""
    src = tmp_path / "subs.mkv"
    lines = [b"0,0,Default,,0,0,0,,Hello", b"1,0,Default,,0,0,0,,second line {\\i1}italic{\\i0}"]
    with av.open(str(src), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        s = c.add_stream("ass")
        s.metadata["language"] = "eng"
        c.start_encoding()
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(smooth(i), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            for p in v.encode(frame):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
        for k, text in enumerate(lines):
            p = av.Packet(text)
            p.stream, p.time_base = s, s.time_base
            p.pts = p.dts = int(Fraction(k * 200, 1000) / s.time_base)
            p.duration = int(Fraction(150, 1000) / s.time_base)
            c.mux(p)

    def subs(path: Path):
        with av.open(str(path)) as c:
            st = c.streams.subtitles[0]
            return (st.codec_context.name, st.language,
                    [(bytes(p), p.pts * p.time_base, p.duration * p.time_base) for p in c.demux(st) if p.size])

    assert sharpen(weights, src, "-o", tmp_path / "o") == 0
    assert "1 subtitle stream(s) copied" in capsys.readouterr().out
    out = tmp_path / "o" / "subs.mkv"
    a, b = subs(src), subs(out)
    assert a[0] == "ssa" and [t for t, _, _ in a[2]] == lines
    assert b == a
    assert probe(out)["n"] == 10


@pytest.mark.slow
def test_done_when_audio_h264_frames_and_timestamps(tmp_path):
    """As a user runs it (``sharpkd sharpen`` in its own process, the shipped
    student, default options): a short clip with audio comes out as H.264 with the audio packets
    bit-identical, the same number of frames and every frame's timestamp."""
    src = tmp_path / "call.mp4"
    global W, H
    size = (W, H)
    W, H = 320, 192
    try:
        make_clip(src, n=25, vfr=True)
    finally:
        W, H = size
    r = subprocess.run([sys.executable, "-m", "sharpkd.app.cli", "sharpen", str(src), "-o", str(tmp_path / "o"), "-q"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    a, b = probe(src), probe(tmp_path / "o" / "call.mp4")
    assert b["codec"] == "h264" and b["size"] == (320, 192)
    assert b["n"] == a["n"] == 25 and b["times"] == a["times"]
    assert b["streams"] == ["video", "audio"] and len(a["audio"]) > 20 and b["audio"] == a["audio"]


def test_summary_reports_what_was_really_copied(tmp_path, weights, capsys):
    """A moov atom that lost its last bytes still declares the audio track, but no packet of it
    can be read: the summary says so instead of "1 audio stream(s) copied"."""
    src = tmp_path / "cut.mp4"
    make_clip(src, n=12, faststart=False)
    src.write_bytes(src.read_bytes()[:-200])
    whole = tmp_path / "whole.mp4"
    make_clip(whole, n=6)
    assert sharpen(weights, src, whole, "-o", tmp_path / "o") == 0
    lines = capsys.readouterr().out.splitlines()
    cut_line = next(line for line in lines if line.startswith(f"{src}:"))
    whole_line = next(line for line in lines if line.startswith(f"{whole}:"))
    assert ", no audio, 1 audio stream(s) not copied: declared by the container but no packet" in cut_line
    with av.open(str(tmp_path / "o" / "cut.mp4")) as c:
        assert not c.streams.audio
    with av.open(str(tmp_path / "o" / "whole.mp4")) as c:
        packets = sum(1 for p in c.demux(c.streams.audio[0]) if p.size)
    assert f"1 audio stream(s) copied ({packets} packets)" in whole_line and packets > 0


def test_avi_with_a_millisecond_time_base_keeps_its_duration(tmp_path, weights):
    src = tmp_path / "ms.avi"
    with av.open(str(src), "w") as c:
        v = c.add_stream("mpeg4", rate=1000)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        v.codec_context.time_base = v.time_base = Fraction(1, 1000)
        for i in range(12):
            f = av.VideoFrame.from_ndarray(smooth(i), format="rgb24")
            f.pts, f.time_base = i * 40, Fraction(1, 1000)
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    assert sharpen(weights, src, "-o", tmp_path / "o") == 0
    with av.open(str(tmp_path / "o" / "ms.avi")) as c:
        s = c.streams.video[0]
        times = sorted(float(f.pts * f.time_base) for f in c.decode(s))
    assert len(times) == 12
    assert abs((times[-1] - times[0]) - 0.44) < 0.045  # 12 frames 40 ms apart, not 12 ms in all


def test_video_frame_size_bound(tmp_path, weights, capsys):
    src = tmp_path / "clip.mp4"
    make_clip(src, n=3, audio=False)
    assert sharpen(weights, src, "-o", tmp_path / "o", "--max-frame-pixels", "1000") == 1
    _, err = capsys.readouterr()
    assert err.splitlines() == [f"skipped {src}: its 64x48 frames (3,072 pixels) exceed the bound of 1,000 pixels "
                                "per frame; --max-frame-pixels raises it"]
    assert not (tmp_path / "o" / "clip.mp4").exists()
    assert sharpen(weights, src, "-o", tmp_path / "o", "--max-frame-pixels", "3072") == 0
    assert "16000x16000" in video.frame_size_problem(16000, 16000, video.MAX_FRAME_PIXELS)
    assert video.frame_size_problem(7680, 4320, video.MAX_FRAME_PIXELS) is None
    assert main(["stream", "--size", "16000x16000", "--weights", str(weights)]) == 2
    assert capsys.readouterr().err.startswith("error: --size 16000x16000: 16000x16000 frames")


def make_avi_with_dropped_frames(path: Path, slots: list[int]) -> None:
    """An MPEG-4 AVI at 25 fps whose frames sit in the given frame slots: FFmpeg's AVI muxer
    writes an empty chunk (a dropped frame) into every slot between them, and the header counts
    every slot."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("mpeg4", rate=25)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        v.codec_context.time_base = Fraction(1, 25)
        for i, slot in enumerate(slots):
            f = av.VideoFrame.from_ndarray(smooth(i), format="rgb24")
            f.pts, f.time_base = slot, Fraction(1, 25)
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)


def avi_timing(path: Path) -> tuple[int, list[int], list[int]]:
    """(frame slots the header declares, each frame's slot, decoded frames' pts), in frames.
    AVI stores no presentation time, only each chunk's slot: FFmpeg derives the pts of H.264
    frames from the slots, one frame later."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        assert v.time_base == Fraction(1, 25)
        frames = list(c.decode(v))
        return int(v.frames), [f.dts for f in frames], [f.pts for f in frames]


def test_avi_with_dropped_frames_is_not_short_and_keeps_its_timing(tmp_path, weights, capsys):
    """Dropped frames (empty chunks) are frame slots without a picture: the header counts 17
    slots for 12 frames.  Not a short file; the output puts every frame in its slot (AVI keeps
    one timestamp per chunk, so the encoder makes no B-frames there)."""
    slots = [0, 1, 2, 4, 5, 6, 9, 10, 11, 12, 15, 16]
    src = tmp_path / "dropped.avi"
    make_avi_with_dropped_frames(src, slots)
    declared, dts, pts = avi_timing(src)
    assert declared == 17 and dts == pts == slots
    assert sharpen(weights, src, "-o", tmp_path / "o") == 0
    assert "partial" not in capsys.readouterr().out
    out_declared, out_slots, out_pts = avi_timing(tmp_path / "o" / src.name)
    assert out_slots == slots and abs(out_declared - declared) <= 1  # duration within one frame
    assert len(out_pts) == len(slots) and out_pts == sorted(set(out_pts))  # in order, none reordered
    assert abs((out_pts[-1] - out_pts[0]) - (slots[-1] - slots[0])) <= 1


def test_truncated_avi_with_dropped_frames_keeps_the_slots_of_what_decoded(tmp_path, weights, capsys):
    slots = [i + i // 3 for i in range(40)]  # a dropped frame after every third
    src = tmp_path / "cut.avi"
    make_avi_with_dropped_frames(src, slots)
    data = src.read_bytes()
    movi = data.index(b"movi")  # the frames' chunks: keep the headers, cut 40% of the chunks
    src.write_bytes(data[: movi + (len(data) - movi) * 6 // 10])
    assert sharpen(weights, src, "-o", tmp_path / "o") == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "truncated or damaged" in err[0] and "--keep-partial" in err[0]
    assert sharpen(weights, src, "-o", tmp_path / "o", "--keep-partial") == 0
    assert "partial" in capsys.readouterr().out
    _, out_dts, _ = avi_timing(tmp_path / "o" / src.name)
    assert 0 < len(out_dts) < 40 and out_dts == slots[:len(out_dts)]
