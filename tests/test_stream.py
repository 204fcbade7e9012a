"""``sharpkd stream``: raw frames on stdin, sharpened raw frames on stdout (sharpkd/video/codec.py
:func:`stream`).  Bytes in and out through subprocess; no ffmpeg binary needed."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest

from sharpkd.app.cli import main
from sharpkd.app.sharpen import Sharpener
from sharpkd.video.codec import stream

W, H = 40, 24
FRAME = W * H * 3


def frames(n: int, dtype=np.uint8) -> np.ndarray:
    rng = np.random.default_rng(n)
    top = 65535 if dtype == np.uint16 else 255
    return rng.integers(0, top + 1, (n, H, W, 3), dtype=dtype)


def run_cli(weights, data: bytes, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "sharpkd.app.cli", "stream", "--size", f"{W}x{H}", "--weights", str(weights), *args]
    return subprocess.run(cmd, input=data, capture_output=True, timeout=300,
                          env=os.environ | {"OMP_NUM_THREADS": "1"})


def test_frames_in_frames_out_and_clean_exit(weights):
    src = frames(3)
    r = run_cli(weights, src.tobytes())
    assert r.returncode == 0, r.stderr
    out = np.frombuffer(r.stdout, np.uint8).reshape(3, H, W, 3)
    sharpener = Sharpener(weights)
    for a, b in zip(src, out):
        assert np.abs(sharpener(a).astype(int) - b).max() <= 1  # the same model as sharpkd sharpen
    assert not np.array_equal(out, src)
    assert r.stderr.decode().splitlines() == [f"stream: 3 frame(s) of {W}x{H} rgb24 at " +
                                              r.stderr.decode().split(" at ", 1)[1].strip()]


def test_runtime_option_picks_what_runs_the_student(weights):
    src = frames(2)
    r = run_cli(weights, src.tobytes(), "-q", "--runtime", "torch")
    assert r.returncode == 0, r.stderr
    out = np.frombuffer(r.stdout, np.uint8).reshape(2, H, W, 3)
    reference = Sharpener(weights, runtime="torch")
    assert all(np.array_equal(reference(a), b) for a, b in zip(src, out))  # the PyTorch reference, exactly
    bad = run_cli(weights, src.tobytes(), "--runtime", "tensorflow")
    assert bad.returncode == 2 and b"--runtime" in bad.stderr and b"Traceback" not in bad.stderr


def test_short_final_frame_is_one_line_and_exit_1(weights):
    data = frames(2).tobytes() + frames(1).tobytes()[: FRAME // 2]
    r = run_cli(weights, data, "-q")
    err = r.stderr.decode().splitlines()
    assert r.returncode == 1
    assert len(err) == 1 and err[0].startswith(f"error: stdin ended inside frame 3: {FRAME // 2} of its {FRAME} bytes")
    assert "--size" in err[0]
    assert len(r.stdout) == 2 * FRAME  # the whole frames before it were written


def test_broken_pipe_on_stdout_is_quiet(weights):
    cmd = [sys.executable, "-m", "sharpkd.app.cli", "stream", "--size", f"{W}x{H}", "--weights", str(weights)]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=os.environ | {"OMP_NUM_THREADS": "1"})
    one = frames(1).tobytes()
    p.stdin.write(one)
    p.stdin.flush()
    assert len(p.stdout.read(FRAME)) == FRAME
    p.stdout.close()  # the next program in the pipe stops
    try:
        for _ in range(200):
            p.stdin.write(one)
            p.stdin.flush()
    except BrokenPipeError:
        pass  # it stopped reading too, as it should
    try:
        p.stdin.close()
    except BrokenPipeError:
        pass
    assert p.wait(timeout=120) == 141
    assert p.stderr.read() == b""  # no traceback, no message


def test_in_process_eof_16_bit_and_errors(weights, capsys):
    sharpener = Sharpener(weights)
    out = io.BytesIO()
    assert stream(sharpener, W, H, src=io.BytesIO(b""), dst=out)["frames"] == 0 and out.getvalue() == b""
    src = frames(2, np.uint16)
    out = io.BytesIO()
    res = stream(sharpener, W, H, "rgb48le", src=io.BytesIO(src.astype("<u2").tobytes()), dst=out)
    got = np.frombuffer(out.getvalue(), "<u2").reshape(2, H, W, 3)
    assert res["frames"] == 2 and not res["broken_pipe"]
    assert np.array_equal(got[1], sharpener(src[1]))
    for argv, option in ((["--size", "40"], "--size"), (["--size", "0x10"], "--size"),
                         (["--size", "4x4", "--pix-fmt", "yuv420p"], "--pix-fmt"),
                         (["--size", "4x4", "--tile", "8"], "--tile")):
        assert main(["stream", *argv]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {option}"), err


@pytest.mark.parametrize("which", ["stdin", "stdout"])
def test_terminal_is_refused(weights, which, monkeypatch, capsys):
    monkeypatch.setattr(getattr(sys, which), "isatty", lambda: True)
    assert main(["stream", "--size", "4x4", "--weights", str(weights)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {which} is a terminal")
