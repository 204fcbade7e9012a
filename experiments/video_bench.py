#!/usr/bin/env python3
"""Video over the link, end to end: build a clip from photos, degrade and encode it as the link
does, run ``sharpkd sharpen`` on it, and score what came out.

1. ground truth: the photos matching ``--pattern`` in ``--photos`` (sorted by name, the first
   ``--frames``), each held for ``--hold`` frames of a slow pan across it (a crop of 90% of the
   photo moving from its left edge to its right, so consecutive frames are related the way a
   video's are; ``--hold 1``: each photo once, whole), resized to ``--size`` (default 1920x1080);
2. the link: every frame degraded by :func:`sharpkd.data.degrade.degrade` (bilinear to 60% and back
   up), encoded H.264 at ``--link-crf`` (default 23; BT.709, yuv420p) at ``--fps``, with an AAC
   tone: the *received* video;
3. ``sharpkd sharpen received.mp4`` in its own process, as a user runs it, and ``sharpkd bench``
   at the same frame size and tile in its own process, both with the same student (``--student``,
   default the default student, or ``--weights``: never ``auto``, whose pick depends on the load), alternating ``--repeat`` times so both
   see the same machine state; best and median of each;
4. PSNR/SSIM (:mod:`sharpkd.evaluation.metrics`) of the received and the sharpened video against the
   ground truth (``--score`` frames evenly spaced), frame counts, timestamps, whether the audio
   survived bit for bit, and the frame rates.

Prints one JSON object; ``--out`` also writes it (``tools/results.py --update README.md`` builds
the README's video table from ``metrics/video/*.json``).  Example::

    .venv/bin/python experiments/video_bench.py --out metrics/video/gopro-1080p.json
    .venv/bin/python experiments/video_bench.py --size 1280x720 --out metrics/video/gopro-720p.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sharpkd.video.codec import _SWS_FLAGS  # noqa: E402 - the conversions sharpkd sharpen itself uses


def load_frames(folder: Path, pattern: str, count: int | None, size: tuple[int, int],
                hold: int = 1) -> tuple[list[np.ndarray], list[str]]:
    """The ground-truth frames: each photo ``hold`` times along a slow horizontal pan."""
    from PIL import Image

    from sharpkd.errors import SharpkdError

    files = sorted(folder.glob(pattern))[: count or None]
    if len(files) < 2:
        raise SharpkdError(f"--photos {folder}: need at least 2 photos matching {pattern!r}, found {len(files)}")
    frames = []
    for f in files:
        with Image.open(f) as im:
            im = im.convert("RGB")
            if hold <= 1:
                frames.append(np.asarray(im.resize(size, Image.LANCZOS)))
                continue
            cw, ch = 0.9 * im.width, 0.9 * im.height
            top = (im.height - ch) / 2
            for j in range(hold):
                left = j / (hold - 1) * (im.width - cw)
                frames.append(np.asarray(im.resize(size, Image.LANCZOS, box=(left, top, left + cw, top + ch))))
    return frames, [f.name for f in files]


def encode_link(path: Path, frames: list[np.ndarray], fps: int, crf: int, preset: str) -> None:
    """H.264 at ``crf`` (BT.709 limited range, yuv420p) plus a 440/660 Hz AAC tone, as a link sends it."""
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


def decode(path: Path, keep: set[int] | None = None) -> tuple[dict[int, np.ndarray], dict]:
    """The frames whose index is in ``keep`` (all when ``None``) as RGB, and what the file holds."""
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        ctx = v.codec_context
        frames, times = {}, []
        for i, f in enumerate(c.decode(v)):
            times.append(str(Fraction(f.pts) * f.time_base))
            if keep is None or i in keep:
                frames[i] = f.to_ndarray(format="rgb24", src_colorspace=1 if ctx.colorspace == 1 else None,
                                         src_color_range=ctx.color_range or 1, interpolation=_SWS_FLAGS())
        info = {"codec": ctx.name, "pix_fmt": ctx.pix_fmt, "streams": [s.type for s in c.streams],
                "frames": len(times), "times": times, "bytes": path.stat().st_size}
        c.seek(0)
        info["audio_packets"] = ([bytes(p) for p in c.demux(c.streams.audio[0]) if p.dts is not None]
                                 if c.streams.audio else [])
    return frames, info


def score(frames: dict[int, np.ndarray], truth: list[np.ndarray]) -> dict:
    from sharpkd.evaluation.metrics import psnr, ssim

    idx = sorted(i for i in frames if i < len(truth))
    p = [psnr(frames[i], truth[i]) for i in idx]
    s = [ssim(frames[i], truth[i]) for i in idx]
    return {"psnr": round(float(np.mean(p)), 3), "ssim": round(float(np.mean(s)), 4), "frames_scored": len(idx)}


def _sharpen(args, received: Path, out_dir: Path, strength: float = 1.0) -> dict:
    """One ``sharpkd sharpen`` of ``received`` in its own process; ``strength`` 0 skips the model
    (each frame passes through as is), which times the codecs alone."""
    cmd = [sys.executable, "-m", "sharpkd.app.cli", "sharpen", str(received), "-o", str(out_dir), "--overwrite",
           "-q", "--device", args.device, "--codec", args.codec, "--crf", str(args.crf), "--preset", args.preset,
           "--strength", str(strength)]
    if args.weights:
        cmd += ["--weights", args.weights]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        from sharpkd.errors import SharpkdError

        raise SharpkdError(f"sharpkd sharpen failed (exit {proc.returncode}): {proc.stderr.strip()}")
    m = re.search(r"processed at ([0-9.]+) frames/s", proc.stdout)
    t = re.search(r"per frame: decode (\d+) \+ to RGB (\d+) ms CPU, model (\d+) ms, to YUV (\d+) \+ encode (\d+) ms CPU",
                  proc.stdout)
    stages = dict(zip(("decode", "to_rgb", "model", "to_yuv", "encode"), map(int, t.groups()))) if t else None
    return {"wall_s": wall, "fps": float(m.group(1)) if m else None, "per_frame_ms": stages}


def _bench(args, w: int, h: int) -> dict:
    """``sharpkd bench`` in its own process at the size and tile ``sharpkd sharpen`` runs."""
    cmd = [sys.executable, "-m", "sharpkd.app.cli", "bench", "--json", "--height", str(h), "--width", str(w),
           "--runs", str(args.bench_runs), "--device", "cpu" if args.device == "auto" else args.device]
    if args.weights:
        cmd += ["--weights", args.weights]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        from sharpkd.errors import SharpkdError

        raise SharpkdError(f"sharpkd bench failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", default=str(ROOT.parent / "shared" / "data" / "photos"))
    ap.add_argument("--pattern", default="kd_GOPR0384_11_00-*.jpg")
    ap.add_argument("--frames", type=int, default=0, help="use the first N photos (default: all that match)")
    ap.add_argument("--hold", type=int, default=10,
                    help="video frames per photo, a slow pan across it (default 10; 1 = each photo once, whole)")
    ap.add_argument("--size", default="1920x1080", help="frame size WxH every photo is resized to")
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--scale", type=float, default=0.6, help="the link's downscale (sharpkd.data.degrade.degrade)")
    ap.add_argument("--link-crf", type=int, default=23, help="H.264 quality of the link's encode (default 23)")
    ap.add_argument("--link-preset", default="medium")
    ap.add_argument("--student", default=None,
                    help="the shipped student both sharpkd sharpen and sharpkd bench run (default: the default "
                         "student; never --student auto, whose pick depends on how loaded the machine is)")
    ap.add_argument("--weights", help="student .safetensors instead of a shipped student")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--codec", default="libx264", help="sharpkd sharpen --codec")
    ap.add_argument("--crf", type=int, default=18, help="sharpkd sharpen --crf")
    ap.add_argument("--preset", default="veryfast", help="sharpkd sharpen --preset (default: its default)")
    ap.add_argument("--repeat", type=int, default=3, help="sharpen and bench runs, alternating (default 3)")
    ap.add_argument("--bench-runs", type=int, default=20, help="timed frames of each sharpkd bench (default 20)")
    ap.add_argument("--score", type=int, default=14, help="frames scored, evenly spaced (default 14; 0 = all)")
    ap.add_argument("--workdir", help="keep the clips here (default: a temporary folder)")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)

    from sharpkd.errors import SharpkdError, one_line

    try:
        return run(args)
    except SharpkdError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1


def _summary(values: list[float]) -> dict:
    return {"best": round(max(values), 3), "median": round(statistics.median(values), 3),
            "runs": [round(v, 3) for v in values]}


def run(args: argparse.Namespace) -> int:
    from sharpkd.inference.bench import machine
    from sharpkd.data.degrade import degrade
    from sharpkd.errors import SharpkdError
    from sharpkd.nets.students import load_student
    from sharpkd.app.shipped import shipped_weights

    from sharpkd.app.shipped import DEFAULT_STUDENT
    from sharpkd.fetch import sha256_file

    if args.weights and args.student:
        raise SharpkdError("give --student or --weights, not both")
    student = None if args.weights else (args.student or DEFAULT_STUDENT)
    if student:  # the same file for sharpen and bench, named in the JSON
        args.weights = str(shipped_weights(student))
    try:
        w, h = (int(x) for x in args.size.lower().split("x"))
    except ValueError:
        raise SharpkdError(f"--size {args.size!r}: give WIDTHxHEIGHT, e.g. 1920x1080") from None
    if args.repeat < 1 or args.hold < 1:
        raise SharpkdError("--repeat and --hold must be at least 1")
    truth, names = load_frames(Path(args.photos), args.pattern, args.frames, (w, h), args.hold)
    n = len(truth)
    keep = set(range(n)) if args.score <= 0 or args.score >= n else {round(i * (n - 1) / (args.score - 1))
                                                                      for i in range(args.score)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        received = work / "received.mp4"
        encode_link(received, [degrade(f, args.scale) for f in truth], args.fps, args.link_crf, args.link_preset)
        out_dir = work / "sharpened"
        runs, benches, codecs = [], [], []
        for _ in range(args.repeat):  # alternate, so all three see the same machine state
            runs.append(_sharpen(args, received, out_dir))
            benches.append(_bench(args, w, h))
            codecs.append(_sharpen(args, received, work / "codecs", strength=0))
        rec_frames, rec_info = decode(received, keep)
        out_frames, out_info = decode(out_dir / received.name, keep)
        meta = load_student(args.weights)[1]
    pipeline = [r["fps"] for r in runs if r["fps"]]
    bench_fps = [b["fps"] for b in benches]
    ratios = [p / b for p, b in zip(pipeline, bench_fps)]
    codec_fps = [r["fps"] for r in codecs if r["fps"]]
    # The codecs and the model share the cores: if they only took turns, a frame would cost the
    # codecs' time plus the model's, and the pipeline would run at 1 / (1/codecs + 1/bench).
    serial = [1 / (1 / c + 1 / b) for c, b in zip(codec_fps, bench_fps)]
    result = {
        "clip": {"photos": str(args.photos), "pattern": args.pattern, "first": names[0], "last": names[-1],
                 "photos_used": len(names), "hold": args.hold, "size": [w, h], "fps": args.fps,
                 "degrade_scale": args.scale, "link_crf": args.link_crf, "link_preset": args.link_preset},
        "frames": {"ground_truth": n, "received": rec_info["frames"], "sharpened": out_info["frames"],
                   "same_timestamps": out_info["times"] == rec_info["times"]},
        "received": score(rec_frames, truth) | {"bytes": rec_info["bytes"]},
        "sharpened": score(out_frames, truth) | {"bytes": out_info["bytes"]},
        "sharpen": {"codec": out_info["codec"], "pix_fmt": out_info["pix_fmt"], "crf": args.crf,
                    "preset": args.preset, "arch": meta.get("arch", "?"), "student": student or args.weights,
                    "weights_sha256": sha256_file(args.weights)},
        "audio": {"survived": "audio" in out_info["streams"],
                  "bit_identical": bool(rec_info["audio_packets"])
                  and out_info["audio_packets"] == rec_info["audio_packets"],
                  "packets": len(out_info["audio_packets"])},
        "speed": {"pipeline_fps": _summary(pipeline) if pipeline else None,
                  "bench_fps": _summary(bench_fps),
                  "pipeline_over_bench": _summary(ratios) if ratios else None,
                  "codecs_alone_fps": _summary(codec_fps) if codec_fps else None,
                  "serial_bound_fps": _summary(serial) if serial else None,
                  "pipeline_over_serial_bound": _summary([p / s for p, s in zip(pipeline, serial)])
                  if serial and len(serial) == len(pipeline) else None,
                  "command_wall_s": _summary([r["wall_s"] for r in runs]),
                  "end_to_end_fps": _summary([n / r["wall_s"] for r in runs]),
                  "per_frame_ms": [r["per_frame_ms"] for r in runs],
                  "bench": {k: benches[0][k] for k in ("arch", "config", "height", "width", "threads", "runtime")
                            if k in benches[0]},
                  "note": "pipeline_fps: sharpkd sharpen's own frames/s (open the file to the output closed: "
                          "decode, model and encode overlapped); end_to_end_fps also counts starting Python, "
                          "torch and the model; bench_fps: sharpkd bench (the model alone, same size and tile); "
                          "pipeline_over_bench: run i against the bench run right after it; codecs_alone_fps: "
                          "sharpkd sharpen --strength 0 (decode, conversions and encode, no model); "
                          "serial_bound_fps: 1 / (1/codecs_alone + 1/bench), the rate if codecs and model took "
                          "turns on the cores (pipeline_over_bench can only reach 80% when the codecs alone run "
                          "at 4x the bench rate or overlap with the model beyond taking turns); per_frame_ms: "
                          "CPU ms per frame of the decode thread (decode, to_rgb) and the encode thread (to_yuv, "
                          "encode), wall ms per frame of the model thread (model)"},
        "machine": machine("cpu" if args.device != "cuda" else "cuda")
        | {"env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY") if k in os.environ}},
    }
    from sharpkd.provenance import record

    result |= record()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
