#!/usr/bin/env python3
"""Every method scored on real clips sent over video links with motion prediction.

For each clip (``--clips``: a folder of videos, or video files) its first ``--frames`` decoded
frames are the ground truth (:func:`sharpkd.data.video_link.read_clip`).  Through each video link
of ``--links`` (:mod:`sharpkd.data.video_link`: 60% bilinear, libx264 with P- and B-frames at a
fixed GOP, decoded, bilinear up) every frame is restored by every method and scored
(:func:`sharpkd.evaluation.video_links.score_clips`, which the evaluate stage also runs on
``evaluate.video``: PSNR, temporal error, motion ratio):

* ``received``: the received frame itself (the decoded 60% frame, bilinear up);
* ``lanczos``: the decoded 60% frame re-upsampled with Lanczos;
* ``unsharp``: the unsharp mask the evaluate stage tuned on training crops, on the received frame
  (its radius and amount from ``--unsharp-from``, an ``eval_settings.json``; skipped without one);
* each shipped student of ``--students`` (``sharpkd/weights/``), run by the class ``sharpkd
  sharpen`` runs (:class:`sharpkd.app.sharpen.Sharpener`: :func:`sharpkd.inference.tiled.run_model`
  on the runtime ``auto`` picks) on the received frame;
* each student of ``--weights NAME=PATH`` (a student file you trained, run the same way), under ``NAME``;
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
DEFAULT_STUDENTS = "lite,fast,balanced,quality"
#: What the errors call each setting: this command's options.
OPTIONS = {"clips": "--clips", "frames": "--frames", "start": "--start", "links": "--links", "scale": "--scale"}


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
    ap.add_argument("--weights", action="append", default=[], metavar="NAME=PATH",
                    help="also score this student file under NAME (repeatable)")
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
    from sharpkd.errors import SharpkdError
    from sharpkd.evaluation.video_links import check_settings, clip_files, link_settings, link_specs, score_clips
    from sharpkd.fetch import sha256_file
    from sharpkd.files import write_json
    from sharpkd.inference.bench import machine

    check_settings(args.frames, args.start, args.scale, OPTIONS)
    links = link_specs(args.links.split(","), OPTIONS, shown=args.links)
    students = [s.strip() for s in args.students.split(",") if s.strip()]
    for s in students:
        if s not in SHIPPED:
            raise SharpkdError(f"--students: {s!r} is not a shipped student ({', '.join(SHIPPED)})")
    extra = {}
    for item in args.weights:
        name, sep, path = item.partition("=")
        name = name.strip()
        if not sep or not name or not path:
            raise SharpkdError(f"--weights {item!r}: give NAME=PATH")
        if name in students or name in extra or name in ("received", "lanczos", "unsharp", "teacher"):
            raise SharpkdError(f"--weights {item!r}: the name {name!r} is already a method of this run")
        if not Path(path).is_file():
            raise SharpkdError(f"--weights {item!r}: {path}: no such file")
        extra[name] = Path(path)
    files = clip_files(args.clips, OPTIONS)
    unsharp = load_unsharp(args.unsharp_from)

    torch.set_grad_enabled(False)
    methods = {}
    info = {}
    for s in students:
        sh = Sharpener(shipped_weights(s), device="cpu")
        methods[s] = sh
        info[s] = {"file": f"sharpkd/weights/{sh.weights.name}", "sha256": sha256_file(sh.weights),
                   "runtime": sh.runtime}
    for name, path in extra.items():
        sh = Sharpener(path, device="cpu")
        methods[name] = sh
        info[name] = {"file": str(path), "sha256": sha256_file(path), "runtime": sh.runtime}
    if args.teacher:
        from sharpkd.inference.tiled import prepare, run_model
        from sharpkd.training.teacher import load_teacher

        teacher = prepare(load_teacher(args.teacher), "cpu")
        methods["teacher"] = lambda rgb: run_model(teacher, rgb, tile=512, overlap=32, device="cpu")
        info["teacher"] = {"file": str(args.teacher), "sha256": sha256_file(args.teacher), "runtime": "torch"}

    from sharpkd.provenance import record

    made_by = record([__file__, *argv])  # the code that measures, before anything below runs
    t0 = time.time()
    scored = score_clips(files, links, frames=args.frames, start=args.start, scale=args.scale, methods=methods,
                         unsharp=(unsharp["radius"], unsharp["amount"]) if unsharp else None, names=OPTIONS,
                         log=lambda line: print(line, file=sys.stderr, flush=True))
    settings = link_settings(args.scale, links, args.frames, args.start) | {"unsharp": unsharp, "methods": info}
    result = {
        "what": "every method on real clips sent over video links with motion prediction (experiments/video_links.py)",
        **made_by,
        "machine": machine("cpu"),
        "seconds": round(time.time() - t0, 1),
        "settings": settings,
        "clips": scored["clips"],
        "mean": scored["mean"],
    }
    if args.out:
        write_json(args.out, result)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
