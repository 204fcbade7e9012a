#!/usr/bin/env python3
"""Every method scored on real clips sent over video links with motion prediction.

For each clip (``--clips``: a folder of videos, or video files) its first ``--frames`` decoded
frames are the ground truth (:func:`sharpkd.data.video_link.read_clip`).  Through each video link
of ``--links`` (:mod:`sharpkd.data.video_link`: 60% bilinear, libx264 with P- and B-frames at a
fixed GOP, decoded, bilinear up) every frame is restored by every method and scored
(:mod:`sharpkd.evaluation.video`: PSNR, temporal error, motion ratio):

* ``received``: the received frame itself (the decoded 60% frame, bilinear up);
* ``lanczos``: the decoded 60% frame re-upsampled with Lanczos;
* ``unsharp``: the unsharp mask the evaluate stage tuned on training crops, on the received frame
  (its radius and amount from ``--unsharp-from``, an ``eval_settings.json``; skipped without one);
* each shipped student of ``--students`` (``sharpkd/weights/``), run by the class ``sharpkd
  sharpen`` runs (:class:`sharpkd.app.sharpen.Sharpener`: :func:`sharpkd.inference.tiled.run_model`
  on the runtime ``auto`` picks) on the received frame;
* ``teacher`` when ``--teacher`` names a teacher file of the teacher stage.

Writes one JSON (``--out``): per clip and link, every method's scores, the stream's size and
frame types; the mean over clips per link; the settings, the git revision, the machine and the
command.  Example::

    .venv/bin/python experiments/video_links.py --clips ../shared/data/video --frames 48 \\
        --out metrics/photos/video_links.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_LINKS = "h264v:23,h264v:28,h264v:1000k"
DEFAULT_STUDENTS = "fast,balanced,quality"
VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v"}


def sha256_file(path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()




def clip_files(paths: list[str]) -> list[Path]:
    from sharpkd.errors import SharpkdError

    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in VIDEO_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise SharpkdError(f"--clips {p}: no such file or folder")
    if not files:
        raise SharpkdError(f"--clips {' '.join(paths)}: no video files ({', '.join(sorted(VIDEO_SUFFIXES))})")
    return files


def load_unsharp(path: str | None) -> dict | None:
    from sharpkd.errors import SharpkdError

    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        print(f"note: {p} does not exist; the unsharp row is skipped", file=sys.stderr)
        return None
    try:
        u = json.loads(p.read_text())["unsharp"]
        return {"radius": float(u["radius"]), "amount": float(u["amount"]), "from": str(path)}
    except (ValueError, KeyError, TypeError):
        raise SharpkdError(f"--unsharp-from {p}: not an eval_settings.json with unsharp radius and amount") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--clips", nargs="+", default=[str(ROOT.parent / "shared" / "data" / "video")],
                    help="video files, or folders of them")
    ap.add_argument("--frames", type=int, default=48, help="frames of each clip, from --start")
    ap.add_argument("--start", type=int, default=0, help="first frame of each clip")
    ap.add_argument("--links", default=DEFAULT_LINKS, help="video links, comma-separated (h264v:CRF, h264v:NNNk)")
    ap.add_argument("--scale", type=float, default=0.6, help="the link's downscale")
    ap.add_argument("--students", default=DEFAULT_STUDENTS, help="shipped students, comma-separated ('' for none)")
    ap.add_argument("--teacher", help="a teacher file of the teacher stage (models/<profile>/teacher.safetensors)")
    ap.add_argument("--unsharp-from", default="metrics/photos/eval_settings.json",
                    help="eval_settings.json whose tuned unsharp mask is scored ('' to skip)")
    ap.add_argument("--out", help="write the JSON here (else print it)")
    args = ap.parse_args(argv)

    from sharpkd.errors import SharpkdError, one_line

    try:
        return run(args, argv if argv is not None else sys.argv[1:])
    except SharpkdError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace, argv: list[str]) -> int:
    import torch

    from sharpkd.app.sharpen import Sharpener
    from sharpkd.app.shipped import SHIPPED, shipped_weights
    from sharpkd.data.degrade import parse_video_link, video_link_name
    from sharpkd.data.video_link import ENCODER, GOP, REFERENCE_AREA, read_clip, send
    from sharpkd.errors import SharpkdError
    from sharpkd.evaluation.classical import unsharp_mask
    from sharpkd.evaluation.video import MOTION_RATIO, TEMPORAL_ERROR, ClipScores, mean_over_clips
    from sharpkd.files import write_json
    from sharpkd.inference.bench import machine

    if args.frames < 2:
        raise SharpkdError(f"--frames must be at least 2 (the temporal scores compare consecutive frames), got {args.frames}")
    if args.start < 0:
        raise SharpkdError(f"--start must be 0 or more, got {args.start}")
    if not 0 < args.scale < 1:
        raise SharpkdError(f"--scale must be in (0, 1), got {args.scale}")
    links = [video_link_name(parse_video_link(s, "--links")) for s in args.links.split(",") if s.strip()]
    if not links or len(set(links)) != len(links):
        raise SharpkdError(f"--links {args.links!r}: give one or more different video links")
    students = [s.strip() for s in args.students.split(",") if s.strip()]
    for s in students:
        if s not in SHIPPED:
            raise SharpkdError(f"--students: {s!r} is not a shipped student ({', '.join(SHIPPED)})")
    files = clip_files(args.clips)
    unsharp = load_unsharp(args.unsharp_from)

    torch.set_grad_enabled(False)
    methods = {}
    info = {}
    for s in students:
        sh = Sharpener(shipped_weights(s), device="cpu")
        methods[s] = sh
        info[s] = {"file": f"sharpkd/weights/{sh.weights.name}", "sha256": sha256_file(sh.weights),
                   "runtime": sh.runtime}
    if args.teacher:
        from sharpkd.inference.tiled import prepare, run_model
        from sharpkd.training.teacher import load_teacher

        teacher = prepare(load_teacher(args.teacher), "cpu")
        methods["teacher"] = lambda rgb: run_model(teacher, rgb, tile=512, overlap=32, device="cpu")
        info["teacher"] = {"file": str(args.teacher), "sha256": sha256_file(args.teacher), "runtime": "torch"}

    from sharpkd.provenance import record

    made_by = record([__file__, *argv])  # the code that measures, before anything below runs
    clips, t0 = {}, time.time()
    for f in files:
        gts, fps = read_clip(f, args.frames, args.start)
        h, w = gts[0].shape[:2]
        clip = {"file": f.name, "size": f"{w}x{h}", "fps": str(fps), "frames": len(gts), "start": args.start,
                "links": {}}
        for spec in links:
            t = time.time()
            sent = send(gts, spec, args.scale, fps)
            scores = ClipScores()
            for i, gt in enumerate(gts):
                received = sent.received(i)
                outs = {"received": received, "lanczos": sent.lanczos(i)}
                if unsharp:
                    outs["unsharp"] = unsharp_mask(received, unsharp["radius"], unsharp["amount"])
                outs |= {m: fn(received) for m, fn in methods.items()}
                scores.add(gt, outs)
            low_h, low_w = sent.low[0].shape[:2]
            clip["links"][spec] = {
                "coded_size": f"{low_w}x{low_h}", "bytes": sent.bytes, "sha256": sent.sha256,
                "kbps": round(sent.bytes * 8 * float(fps) / len(gts) / 1000, 1), "frame_types": sent.frame_types,
                "methods": scores.result(reference="received")}
            r = clip["links"][spec]["methods"]
            line = ", ".join(f"{m} {v['psnr']:.2f}" for m, v in r.items())
            print(f"{f.stem} {spec} ({clip['links'][spec]['kbps']} kbit/s, {time.time() - t:.0f} s): {line}",
                  file=sys.stderr, flush=True)
        clips[f.stem] = clip
    mean = {spec: mean_over_clips([c["links"][spec]["methods"] for c in clips.values()]) for spec in links}
    result = {
        "what": "every method on real clips sent over video links with motion prediction (experiments/video_links.py)",
        **made_by,
        "machine": machine("cpu"),
        "seconds": round(time.time() - t0, 1),
        "settings": {
            "scale": args.scale, "down": "bilinear (antialiased, Pillow; sharpkd.data.degrade.downscale)",
            "up": "bilinear (received), Lanczos (lanczos), from the decoded small frame",
            "links": links, "encoder": "libx264 through PyAV, yuv420p", "encoder_options": ENCODER, "gop": GOP,
            "bitrate_reference": f"h264v:NNNk is NNN kbit/s at {REFERENCE_AREA[0]}x{REFERENCE_AREA[1]}, scaled to the coded frame's area",
            "frames": args.frames, "start": args.start, "unsharp": unsharp, "methods": info,
            "psnr": "RGB, all pixels and channels, data_range 255; mean over frames, then over clips",
            "temporal_error": TEMPORAL_ERROR, "motion_ratio": MOTION_RATIO,
            "frames_below_reference": "frames of the clip where the method's PSNR is below the received frame's",
            "ground_truth": "the clip's decoded frames (its own colour matrix and range)",
        },
        "clips": clips,
        "mean": mean,
    }
    if args.out:
        write_json(args.out, result)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
