#!/usr/bin/env python3
"""Recomputing only the windows whose input changed (``sharpkd sharpen --reuse-unchanged``), on a
static scene and on real camera footage: the share of windows recomputed and the frame rate, each
clip run with and without the option in the same process order.

1. ``static``: a synthetic 1280x720 clip of ``--frames`` frames, a fixed noise background with one
   moving block (a talking head or a shared screen, as far as changed pixels go);
2. ``camera``: the first ``--frames`` frames of ``--clip`` (a handheld camera clip);

both coded losslessly (H.264 CRF 0, 4:4:4), so an unchanged pixel of the scene is an unchanged
input pixel.  Example::

    .venv/bin/python experiments/reuse_unchanged.py --clip ../shared/data/video/dog.mp4 \\
        --out metrics/photos/bench/reuse_unchanged.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _write(frames, path: Path, fps: int = 30) -> None:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt, s.options = "yuv444p", {"crf": "0", "preset": "ultrafast"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def static_frames(n: int) -> list[np.ndarray]:
    bg = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    out = []
    for i in range(n):
        f = bg.copy()
        x = 400 + 5 * i
        f[300:420, x:x + 160] = (40 + 3 * i) % 255
        out.append(f)
    return out


def clip_frames(path: Path, n: int) -> list[np.ndarray]:
    import av

    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="rgb24"))
            if len(out) == n:
                break
    return out


def median_run(runs: list[dict]) -> dict:
    """The median of each timing over repeated runs (``recomputed`` is the same in every run)."""
    import statistics

    return {"model_ms": round(statistics.median(r["model_ms"] for r in runs), 2),
            "processing_fps": round(statistics.median(r["processing_fps"] for r in runs), 3),
            "recomputed": runs[0]["recomputed"], "runs": len(runs)}


def run(src: Path, out: Path, args, reuse: bool) -> dict:
    timings = out / f"{src.stem}-{int(reuse)}.json"
    cmd = [sys.executable, "-m", "sharpkd.app.cli", "sharpen", str(src), "-o", str(out / f"o{int(reuse)}"), "-q",
           "--overwrite", "--student", args.student, "--tile", str(args.tile), "--timings", str(timings)]
    subprocess.run(cmd + (["--reuse-unchanged"] if reuse else []), check=True, capture_output=True, cwd=ROOT)
    v = json.loads(timings.read_text())["videos"][0]
    return {"processing_fps": v["processing_fps"], "model_ms": v["per_frame_ms"]["model"],
            "recomputed": v.get("recomputed")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", type=Path, default=ROOT.parent / "shared" / "data" / "video" / "dog.mp4")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each mode, interleaved; medians reported")
    ap.add_argument("--student", default="fast")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if not args.clip.is_file():
        print(f"error: --clip {args.clip}: no such file", file=sys.stderr)
        return 1
    from sharpkd.files import write_json
    from sharpkd.inference.bench import machine

    load = [round(x, 2) for x in os.getloadavg()]  # another job on the CPU shows here (1, 5, 15 min)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, frames in (("static", static_frames(args.frames)), ("camera", clip_frames(args.clip, args.frames))):
            src = tmp / f"{name}.mp4"
            _write(frames, src)
            runs = {"all_windows": [], "reuse_unchanged": []}
            for _ in range(args.repeat):  # interleaved, so a drift in the machine's speed hits both alike
                runs["all_windows"].append(run(src, tmp, args, False))
                runs["reuse_unchanged"].append(run(src, tmp, args, True))
            rows[name] = {mode: median_run(r) for mode, r in runs.items()}
            rows[name]["model_ms_ratio"] = round(rows[name]["reuse_unchanged"]["model_ms"]
                                                 / rows[name]["all_windows"]["model_ms"], 3)
    from sharpkd.provenance import record

    result = {"what": "sharpen --reuse-unchanged on a static scene and on camera footage",
              "clips": {"static": "synthetic 1280x720, noise background, one moving block",
                        "camera": f"{args.clip.name}, first {args.frames} frames"},
              "frames": args.frames, "student": args.student, "tile": args.tile, "runs": rows,
              "machine": machine("cpu"), "load_average_before": load} | record([__file__, *(argv if argv is not None else sys.argv[1:])])
    print(json.dumps(result, indent=2, sort_keys=True))
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
