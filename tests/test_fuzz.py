"""Fuzzing with hypothesis: random and mutated bytes (mutations of small valid PNG, JPEG, zip
and tar files) fed to the image reader, the archive extractor and ``sharpkd sharpen``, and
mutated MP4/MKV/AVI files sharpened by a ``sharpkd sharpen`` subprocess (where a native crash
in FFmpeg shows as a signal instead of ending the test run).  Only the
project's own clean errors may come out: :class:`SharpkdError` subclasses, or exit codes with
one-line messages -- never another exception, never a traceback.

Bounded for CI: a fixed number of examples each, no deadline, no example database, and a lower
decompression-bomb pixel limit so that a mutated header cannot ask for a huge decode."""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from sharpkd.app.cli import main
from sharpkd.data.sources import ArchiveLimits, extract_archive
from sharpkd.errors import ArchiveError, ImageDecodeError
from sharpkd.images import load_image, load_rgb
from sharpkd.nets.students import build_student, save_student

FUZZ = settings(max_examples=300, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _image_bytes(fmt: str, mode: str = "RGB", size=(6, 5)) -> bytes:
    rng = np.random.default_rng(0)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], len(mode))
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buf, format=fmt)
    return buf.getvalue()


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:  # fixed dates: the same bytes every run
        zf.writestr(zipfile.ZipInfo("a/x.png", (2020, 1, 1, 0, 0, 0)), _image_bytes("PNG"), zipfile.ZIP_DEFLATED)
        zf.writestr(zipfile.ZipInfo("notes.txt", (2020, 1, 1, 0, 0, 0)), b"hello " * 20, zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def _tar_bytes(mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in (("a/x.png", _image_bytes("PNG")), ("b.txt", b"text")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


IMAGE_SEEDS = [_image_bytes("PNG"), _image_bytes("PNG", "RGBA"), _image_bytes("PNG", "L"), _image_bytes("JPEG"),
               _image_bytes("JPEG", "L"), _image_bytes("TIFF"), _image_bytes("BMP"), _image_bytes("WEBP")]
ARCHIVE_SEEDS = [_zip_bytes(), _tar_bytes("w"), _tar_bytes("w:gz"), _tar_bytes("w:bz2")]


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A seed file with a few byte flips, inserts, deletions and an optional truncation."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, draw(st.integers(0, 255))]))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and data:
            del data[pos:pos + draw(st.integers(1, 16))]
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


def hostile(seeds: list[bytes]):
    return st.one_of(st.binary(max_size=512), mutated(seeds))


@pytest.fixture(autouse=True)
def small_bomb_limit(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # >2 MP is an error: bounded decodes


@FUZZ
@given(data=hostile(IMAGE_SEEDS), ext=st.sampled_from([".png", ".jpg", ".tif", ".webp", ".bmp", ".gif", ".bin"]))
def test_fuzz_image_reader(data, ext):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x{ext}"
        path.write_bytes(data)
        for loader in (load_image, load_rgb):
            try:
                out = loader(path)
            except ImageDecodeError as exc:
                assert str(path) in str(exc) and "\n" not in str(exc)
                continue
            arr = out if isinstance(out, np.ndarray) else out.rgb
            assert arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype in (np.uint8, np.uint16)


def _zip_with_method(method: int) -> bytes:
    """The zip seed with the compression method of its first member set to ``method`` (zipfile
    raises NotImplementedError for unknown ones) in both headers."""
    data = bytearray(ARCHIVE_SEEDS[0])
    data[8] = method
    cd = data.find(b"PK\x01\x02")
    data[cd + 10] = method
    return bytes(data)


def _zip_set(pos: int, value: int) -> bytes:
    data = bytearray(ARCHIVE_SEEDS[0])
    data[pos] = value
    return bytes(data)


@FUZZ
@given(data=hostile(ARCHIVE_SEEDS), ext=st.sampled_from([".zip", ".tar", ".tar.gz", ".tar.bz2"]))
@example(data=_zip_with_method(99), ext=".zip")
@example(data=_zip_with_method(14), ext=".zip")  # LZMA with a deflate stream: lzma.LZMAError
@example(data=_zip_set(28, 255), ext=".zip")  # local extra-field length: deflate starts mid-stream, zlib.error
@example(data=ARCHIVE_SEEDS[2][:60], ext=".tar.gz")
@example(data=ARCHIVE_SEEDS[3][:-20], ext=".tar.bz2")
def test_fuzz_archive_extractor(data, ext):
    limits = ArchiveLimits(max_member_mb=1, max_total_mb=2, max_ratio=50)
    with tempfile.TemporaryDirectory() as tmp:
        arc = Path(tmp) / f"a{ext}"
        arc.write_bytes(data)
        dest = Path(tmp) / "out"
        try:
            info = extract_archive(arc, dest, limits)
        except ArchiveError as exc:
            assert "\n" not in str(exc)
            leftover = [p for p in dest.rglob("*") if p.is_file()] if dest.exists() else []
            assert leftover == []  # a refused archive leaves nothing behind
            return
        files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
        assert files == info["extracted"]  # no temporary files, nothing else
        assert sum((dest / f).stat().st_size for f in files) <= 2 << 20


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "student.safetensors"
    save_student(build_student("sharp"), path, {"card": "{}"})
    return path


@settings(max_examples=80, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=hostile(IMAGE_SEEDS), ext=st.sampled_from([".png", ".jpg", ".tif", ".mp4", ".mkv", ".avi"]))
def test_fuzz_sharpen_command(weights, capsys, data, ext):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x{ext}"
        path.write_bytes(data)
        out = Path(tmp) / "out"
        capsys.readouterr()
        code = main(["sharpen", str(path), "-o", str(out), "--weights", str(weights), "-q", "--tile", "64"])
        cap = capsys.readouterr()
        assert code in (0, 1)
        err = [line for line in cap.err.splitlines() if line]
        if code == 1:
            assert len(err) == 1 and err[0].startswith((f"skipped {path}: ", "error: ")), err
            assert not (out / f"x{'.png' if ext in ('.png', '.jpg', '.tif') else ext}").exists()
        else:
            assert err == [] and len(os.listdir(out)) == 1
        assert [p for p in out.rglob(".*")] == []  # no temporary file left


def _video_bytes(suffix: str) -> bytes:
    """A small valid video made with PyAV: 64x48, 8 frames at 25 fps (H.264 in MP4 and MKV, with
    a short AAC track in MP4; MPEG-4 Part 2 in AVI)."""
    import av

    from fractions import Fraction

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"seed{suffix}"
        with av.open(str(path), "w") as c:
            v = c.add_stream("mpeg4" if suffix == ".avi" else "libx264", rate=25)
            v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
            v.codec_context.time_base = Fraction(1, 25)
            if suffix != ".avi":
                v.codec_context.options = {"preset": "ultrafast", "crf": "30"}
            a = c.add_stream("aac", rate=48000) if suffix == ".mp4" else None
            if a is not None:
                a.layout = "mono"
            y, x = np.mgrid[0:48, 0:64]
            for i in range(8):
                rgb = np.stack([(x * 4 + i * 8) % 256, (y * 5) % 256, ((x + y) * 2 + i) % 256], -1).astype(np.uint8)
                f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                f.pts, f.time_base = i, Fraction(1, 25)
                for p in v.encode(f):
                    c.mux(p)
            for p in v.encode(None):
                c.mux(p)
            if a is not None:
                tone = (0.2 * np.sin(np.arange(48000 * 8 // 25) / 10)).astype(np.float32)
                for s in range(0, len(tone), 1024):
                    af = av.AudioFrame.from_ndarray(tone[None, s:s + 1024], format="fltp", layout="mono")
                    af.sample_rate, af.pts = 48000, s
                    for p in a.encode(af):
                        c.mux(p)
                for p in a.encode(None):
                    c.mux(p)
        return path.read_bytes()


VIDEO_SEEDS = {suffix: _video_bytes(suffix) for suffix in (".mp4", ".mkv", ".avi")}


@st.composite
def mutated_video(draw, seed: bytes) -> bytes:
    """A seed container with a few bit flips, byte sets and splices (a run of its own bytes
    copied over another place), and an optional truncation; most changes land in the first
    kilobytes, where the headers and indexes are."""
    data = bytearray(seed)
    n = len(data)
    position = st.one_of(st.integers(0, min(n, 2048) - 1), st.integers(0, n - 1))
    for _ in range(draw(st.integers(1, 5))):
        op = draw(st.sampled_from(["flip", "set", "splice"]))
        pos = draw(position)
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[pos] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x01]))
        else:
            src, size = draw(position), draw(st.integers(1, 64))
            data[pos:pos + size] = data[src:src + size]
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


@settings(max_examples=20, deadline=None, database=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(files=st.tuples(*(mutated_video(seed) for seed in VIDEO_SEEDS.values())))
def test_fuzz_video_containers_in_a_subprocess(weights, files):
    """Mutated MP4, MKV and AVI files, all three sharpened by one ``sharpkd sharpen`` process:
    it exits 0 or 1 (a signal, a native crash of FFmpeg, is a failure), writes at most one line
    per file to stderr besides warnings and never a traceback, and leaves no temporary file."""
    import signal
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for suffix, data in zip(VIDEO_SEEDS, files):
            paths.append(Path(tmp) / f"x{suffix}")
            paths[-1].write_bytes(data)
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "sharpkd.app.cli", "sharpen", *map(str, paths), "-o", str(out), "-q",
               "--weights", str(weights), "--tile", "64"]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                               env=os.environ | {"OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"})
        except subprocess.TimeoutExpired:
            pytest.fail(f"sharpen did not finish in 60 s on {[len(d) for d in files]}-byte mutated videos")
        if r.returncode < 0:
            pytest.fail(f"sharpen died of {signal.Signals(-r.returncode).name}: {r.stderr[-2000:]}")
        assert r.returncode in (0, 1), r.stderr
        assert "Traceback" not in r.stderr and "Fatal Python error" not in r.stderr, r.stderr
        err = [line for line in r.stderr.splitlines() if line and not line.startswith("warning:")]
        assert len(err) <= len(paths), err
        for path in paths:
            mine = [line for line in err if line.startswith(f"skipped {path}: ")]
            assert len(mine) <= 1, err
            assert (out / path.name).exists() != bool(mine), (path.name, err)
        assert [line for line in err if not line.startswith("skipped ")] == [], err
        assert [p for p in out.rglob(".*")] == [] if out.exists() else True  # no temporary file left
