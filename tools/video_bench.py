#!/usr/bin/env python3
"""Video over the link, end to end: build a clip from photos, degrade and encode it as the link
does, run ``sharpkd sharpen`` on it, and score what came out.

1. ground truth: the photos matching ``--pattern`` in ``--photos`` (sorted by name, the first
   ``--frames``), each resized to ``--size`` (default 1920x1080);
2. the link: every frame degraded by :func:`sharpkd.degrade.degrade` (bilinear to 60% and back
   up), encoded H.264 at ``--link-crf`` (BT.709, yuv420p) at ``--fps``, with an AAC sine tone;
3. ``sharpkd sharpen received.mp4`` (a separate process, as a user runs it), timed;
4. PSNR/SSIM (:mod:`sharpkd.metrics`) of the received and the sharpened video against the
   ground truth, frame counts, whether the audio survived (bit-identical packets), end-to-end
   frames/s, and the model alone on the same frame size (:func:`sharpkd.bench.benchmark`).

Prints one JSON object (``--out`` also writes it).  Example::

    .venv/bin/python tools/video_bench.py                       # the 7 GoPro frames at 1080p
    .venv/bin/python tools/video_bench.py --pattern 'kd_*.jpg' --frames 60
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sharpkd.video import _SWS_FLAGS  # noqa: E402 - the conversions sharpkd sharpen itself uses


def load_frames(folder: Path, pattern: str, count: int | None, size: tuple[int, int]) -> tuple[list[np.ndarray], list[str]]:
    from PIL import Image

    from sharpkd.errors import SharpkdError

    files = sorted(folder.glob(pattern))[: count or None]
    if len(files) < 2:
        raise SharpkdError(f"--photos {folder}: need at least 2 photos matching {pattern!r}, found {len(files)}")
    frames = []
    for f in files:
        with Image.open(f) as im:
            frames.append(np.asarray(im.convert("RGB").resize(size, Image.LANCZOS)))
    return frames, [f.name for f in files]


def encode_link(path: Path, frames: list[np.ndarray], fps: int, crf: int, preset: str) -> None:
    """H.264 at ``crf`` (BT.709 limited range, yuv420p) plus a 440 Hz AAC tone, as a link sends it."""
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        ctx = v.codec_context
        ctx.color_primaries, ctx.color_trc, ctx.colorspace, ctx.color_range = 1, 1, 1, 1
        ctx.options = {"crf": str(crf), "preset": preset}
        a = c.add_stream("aac", rate=48000)
        a.layout = "stereo"
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format="yuv420p", dst_colorspace=1, dst_color_range=1, interpolation=_SWS_FLAGS())
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for p in v.encode(frame):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
        samples = len(frames) * 48000 // fps
        t = np.arange(samples) / 48000
        tone = np.stack([0.2 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
        for s in range(0, samples, 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, s:s + 1024]), format="fltp", layout="stereo")
            af.sample_rate, af.pts = 48000, s
            for p in a.encode(af):
                c.mux(p)
        for p in a.encode(None):
            c.mux(p)


def decode(path: Path) -> tuple[list[np.ndarray], dict]:
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        ctx = v.codec_context
        frames = [f.to_ndarray(format="rgb24", src_colorspace=1 if ctx.colorspace == 1 else None,
                               src_color_range=ctx.color_range or 1, interpolation=_SWS_FLAGS())
                  for f in c.decode(v)]
        info = {"codec": ctx.name, "pix_fmt": ctx.pix_fmt, "streams": [s.type for s in c.streams]}
        c.seek(0)
        info["audio_packets"] = ([bytes(p) for p in c.demux(c.streams.audio[0]) if p.dts is not None]
                                 if c.streams.audio else [])
    return frames, info


def score(frames: list[np.ndarray], truth: list[np.ndarray]) -> dict:
    from sharpkd.metrics import psnr, ssim

    n = min(len(frames), len(truth))
    p = [psnr(frames[i], truth[i]) for i in range(n)]
    s = [ssim(frames[i], truth[i]) for i in range(n)]
    return {"psnr": round(float(np.mean(p)), 3), "ssim": round(float(np.mean(s)), 4), "frames_scored": n}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", default=str(ROOT.parent / "shared" / "data" / "photos"))
    ap.add_argument("--pattern", default="kd_GOPR0384_11_00-*.jpg")
    ap.add_argument("--frames", type=int, default=0, help="use the first N photos (default: all that match)")
    ap.add_argument("--size", default="1920x1080", help="frame size WxH every photo is resized to")
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--scale", type=float, default=0.6, help="the link's downscale (sharpkd.degrade.degrade)")
    ap.add_argument("--link-crf", type=int, default=23, help="H.264 quality of the link's encode")
    ap.add_argument("--link-preset", default="medium")
    ap.add_argument("--weights", help="student .safetensors (default: the shipped student)")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--codec", default="libx264", help="sharpkd sharpen --codec")
    ap.add_argument("--crf", type=int, default=18, help="sharpkd sharpen --crf")
    ap.add_argument("--preset", default="medium", help="sharpkd sharpen --preset")
    ap.add_argument("--model-runs", type=int, default=5, help="timed frames of the model-only benchmark")
    ap.add_argument("--workdir", help="keep the clips here (default: a temporary folder)")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)

    from sharpkd.errors import SharpkdError, one_line

    try:
        return run(args)
    except SharpkdError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    import torch

    from sharpkd.bench import benchmark, machine
    from sharpkd.degrade import degrade
    from sharpkd.errors import SharpkdError
    from sharpkd.models import load_student
    from sharpkd.sharpen import shipped_weights

    try:
        w, h = (int(x) for x in args.size.lower().split("x"))
    except ValueError:
        raise SharpkdError(f"--size {args.size!r}: give WIDTHxHEIGHT, e.g. 1920x1080") from None
    truth, names = load_frames(Path(args.photos), args.pattern, args.frames, (w, h))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        received = work / "received.mp4"
        encode_link(received, [degrade(f, args.scale) for f in truth], args.fps, args.link_crf, args.link_preset)
        out_dir = work / "sharpened"
        cmd = [sys.executable, "-m", "sharpkd.cli", "sharpen", str(received), "-o", str(out_dir), "--overwrite",
               "-q", "--device", args.device, "--codec", args.codec, "--crf", str(args.crf), "--preset", args.preset]
        if args.weights:
            cmd += ["--weights", args.weights]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SharpkdError(f"sharpkd sharpen failed (exit {proc.returncode}): {proc.stderr.strip()}")
        m = re.search(r"processed at ([0-9.]+) frames/s", proc.stdout)
        rec_frames, rec_info = decode(received)
        out_frames, out_info = decode(out_dir / received.name)
        model, meta = load_student(args.weights or shipped_weights())
        device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
        model_only = benchmark(model, h, w, runs=args.model_runs, warmup=1, device=device)
        pipeline_fps = float(m.group(1)) if m else None
        result = {
            "clip": {"photos": str(args.photos), "pattern": args.pattern, "first": names[0], "last": names[-1],
                     "size": [w, h], "fps": args.fps, "degrade_scale": args.scale, "link_crf": args.link_crf},
            "frames": {"ground_truth": len(truth), "received": len(rec_frames), "sharpened": len(out_frames)},
            "received": score(rec_frames, truth),
            "sharpened": score(out_frames, truth),
            "sharpen": {"codec": out_info["codec"], "pix_fmt": out_info["pix_fmt"], "crf": args.crf,
                        "preset": args.preset, "arch": meta.get("arch", "?")},
            "audio": {"survived": "audio" in out_info["streams"],
                      "bit_identical": bool(rec_info["audio_packets"])
                      and out_info["audio_packets"] == rec_info["audio_packets"],
                      "packets": len(out_info["audio_packets"])},
            "speed": {"command_wall_s": round(wall, 2),
                      "end_to_end_fps": round(len(out_frames) / wall, 2),
                      "pipeline_fps": pipeline_fps,
                      "model_only_fps": round(model_only["fps"], 2),
                      "pipeline_over_model": round(pipeline_fps / model_only["fps"], 3) if pipeline_fps else None,
                      "note": "end_to_end_fps includes starting Python, torch and the model; pipeline_fps is "
                              "sharpkd sharpen's own frames/s (decode, model, encode overlapped)"},
            "machine": machine(device) | {"threads": torch.get_num_threads()},
        }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
