#!/usr/bin/env python3
"""How the CPU's threads are best split between the video codecs and the model.

Builds a synthetic clip (``--size``, ``--frames``; a moving gradient with texture, H.264), then
sharpens it with :func:`sharpkd.video.codec.sharpen_video` under each split of ``--splits``
(``CODEC:MODEL``: threads of each of the decoder and the encoder, 0 = FFmpeg's choice; the
model's threads, torch's and the runtime's), the splits interleaved ``--repeat`` times so each
sees the same machine state.  Reports, per split, the best and median frames/s end to end and
where a frame's time went (``per_frame_ms``: decode, to RGB, model, to YUV, encode CPU ms of the
pipeline's own threads -- FFmpeg's worker threads, with codec threads other than 1, are not in
them -- and the model thread's waits), and the CPU time of the whole process per frame
(``cpu_ms_per_frame``: the cost, which other processes on the CPU change less than frames/s).  Other processes on the CPU change absolute numbers: compare the splits
of one run with each other.

    .venv/bin/python experiments/thread_budget.py --out metrics/video/thread-budget-cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_clip(path: Path, width: int, height: int, frames: int, fps: int = 30) -> None:
    import av

    rng = np.random.default_rng(0)
    texture = rng.integers(0, 60, (height + frames * 4, width + frames * 4, 3), dtype=np.uint8)
    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.options = {"preset": "ultrafast", "crf": "23"}
        for i in range(frames):
            base = ((x + 8 * i) * 255 // (width + 8 * frames)).astype(np.uint8)[..., None].repeat(3, axis=2)
            img = (base // 2 + texture[4 * i: 4 * i + height, 4 * i: 4 * i + width]).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for p in v.encode(frame):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)


def run_split(src: Path, out_dir: Path, student: str, runtime: str, codec: int, model: int) -> dict:
    import torch

    from sharpkd.app.sharpen import OVERLAP, Sharpener
    from sharpkd.app.shipped import shipped_weights
    from sharpkd.video import codec as video

    torch.set_num_threads(model)
    sharpener = Sharpener(shipped_weights(student), device="cpu", overlap=OVERLAP, runtime=runtime)
    real = video.codec_threads
    video.codec_threads = lambda device="cpu": codec
    import time

    cpu0 = time.process_time()
    try:
        r = video.sharpen_video(src, out_dir / f"out-{codec}-{model}.mp4", sharpener, progress=False)
    finally:
        video.codec_threads = real
    cpu = time.process_time() - cpu0  # every thread of the process, FFmpeg's own workers included
    return {"processing_fps": r["processing_fps"], "per_frame_ms": r["per_frame_ms"],
            "cpu_ms_per_frame": round(1000 * cpu / r["frames"], 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--student", default="balanced")
    ap.add_argument("--runtime", default="auto")
    ap.add_argument("--splits", nargs="+", default=["1:2", "0:2", "1:1", "2:1"],
                    help="CODEC:MODEL thread counts (codec 0 = FFmpeg's choice)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    import os

    from sharpkd.inference.bench import machine
    from sharpkd.provenance import record

    width, height = map(int, args.size.lower().split("x"))
    splits = [tuple(map(int, s.split(":"))) for s in args.splits]
    rows: dict[str, list] = {s: [] for s in args.splits}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "clip.mp4"
        make_clip(src, width, height, args.frames)
        for _ in range(args.repeat):
            for name, (codec, model) in zip(args.splits, splits):
                r = run_split(src, Path(tmp), args.student, args.runtime, codec, model)
                rows[name].append(r)
                print(f"{name}: {r['processing_fps']:.2f} frames/s, {r['cpu_ms_per_frame']} CPU ms/frame {r['per_frame_ms']}", file=sys.stderr, flush=True)
    result = {"size": [width, height], "frames": args.frames, "student": args.student, "runtime": args.runtime,
              "load_average": os.getloadavg(), "machine": machine("cpu"),
              **record(), "splits": {}}
    base = statistics.median(r["processing_fps"] for r in rows[args.splits[0]])
    for name, runs in rows.items():
        fps = [r["processing_fps"] for r in runs]
        per = {k: round(statistics.median(r["per_frame_ms"][k] for r in runs), 1) for k in runs[0]["per_frame_ms"]}
        result["splits"][name] = {"codec_threads": int(name.split(":")[0]), "model_threads": int(name.split(":")[1]),
                                  "fps_best": max(fps), "fps_median": statistics.median(fps),
                                  "cpu_ms_per_frame": statistics.median(r["cpu_ms_per_frame"] for r in runs),
                                  "vs_first": round(statistics.median(fps) / base, 3), "per_frame_ms": per}
    print(json.dumps(result, indent=2, sort_keys=True))
    if args.out:
        from sharpkd.files import write_json

        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
