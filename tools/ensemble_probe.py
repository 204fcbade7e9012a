#!/usr/bin/env python3
"""What geometric self-ensemble (x8) adds to an adapted teacher, on some full-size validation photos.

``teacher.self_ensemble: true``
would make every teacher output the mean over the 8 flips and rotations, at 8 times the cost of
the whole teacher stage.  This measures what that buys before paying for it: the teacher of a
pipeline run (``models/<profile>/teacher.safetensors``) on ``--images`` of its full-size
validation photos (evenly spaced in name order), plain and x8, scored against the ground truth::

    .venv/bin/python tools/ensemble_probe.py --profile photos --images 6 \\
        --out metrics/photos/teacher_ensemble.json

Same code path as the teacher stage: :func:`sharpkd.inference.run_model` (tiled as
``--tile``/``--overlap``), :class:`sharpkd.inference.SelfEnsemble`, :func:`sharpkd.metrics.psnr`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="photos")
    ap.add_argument("--root", default=".", help="the checkout whose data/ and models/ hold the run")
    ap.add_argument("--teacher", help="teacher weights (default: models/<profile>/teacher.safetensors of --root)")
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--no-x8", action="store_true", help="score the teacher plain only (1/9 of the time)")
    ap.add_argument("--tile", type=int, default=2048)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--out", help="write the JSON here")
    args = ap.parse_args(argv)

    import torch
    from tqdm import tqdm

    from sharpkd.errors import SharpkdError
    from sharpkd.fsutil import write_json
    from sharpkd.inference import SelfEnsemble, prepare, run_model
    from sharpkd.metrics import psnr
    from sharpkd.shards import read_split
    from sharpkd.teacher import load_teacher

    root = Path(args.root)
    data = root / "data" / args.profile
    weights = Path(args.teacher) if args.teacher else root / "models" / args.profile / "teacher.safetensors"
    try:
        if not weights.is_file():
            raise SharpkdError(f"{weights} not found: run the teacher stage of profile {args.profile} first")
        gt = read_split(data / "slices", "val_full")
        lq = read_split(data / "degraded", "val_full")
        if not gt or set(gt) != set(lq):
            raise SharpkdError(f"{data}: the val_full slices and degraded shards do not hold the same images")
        if args.images < 1:
            raise SharpkdError(f"--images must be >= 1, got {args.images}")
        names = sorted(gt)
        step = max(1, len(names) // args.images)
        names = names[::step][: args.images]
        teacher = prepare(load_teacher(weights))
    except SharpkdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    x8 = SelfEnsemble(teacher)
    rows = []

    kinds = ("teacher",) if args.no_x8 else ("teacher", "teacher_x8")

    def summary(rows: list[dict]) -> dict:
        result = {"profile": args.profile, "teacher": weights.name, "images": len(rows),
                  "of_validation_images": len(gt), "forward_passes_per_output": {"teacher": 1, "teacher_x8": 8},
                  "gain_over_input_db": {k: round(statistics.mean(r[f"psnr_{k}"] - r["psnr_input"] for r in rows), 3)
                                         for k in kinds}}
        if not args.no_x8:
            diffs = [r["psnr_teacher_x8"] - r["psnr_teacher"] for r in rows]
            result["x8_minus_plain_db"] = {"mean": round(statistics.mean(diffs), 3), "min": round(min(diffs), 3),
                                           "max": round(max(diffs), 3)}
        return result | {"per_image": rows}

    for name in tqdm(names, desc="teacher plain" if args.no_x8 else "teacher plain and x8", unit="img"):
        with torch.inference_mode():
            plain = run_model(teacher, lq[name], tile=args.tile, overlap=args.overlap)
            ens = None if args.no_x8 else run_model(x8, lq[name], tile=args.tile, overlap=args.overlap)
        p_in, p_plain = psnr(lq[name], gt[name]), psnr(plain, gt[name])
        rows.append({"image": name, "size": f"{gt[name].shape[1]}x{gt[name].shape[0]}", "psnr_input": round(p_in, 3),
                     "psnr_teacher": round(p_plain, 3)})
        line = f"{name}: input {p_in:.3f}, teacher {p_plain:.3f} ({p_plain - p_in:+.3f})"
        if ens is not None:
            p_x8 = psnr(ens, gt[name])
            rows[-1]["psnr_teacher_x8"] = round(p_x8, 3)
            line += f", x8 {p_x8:.3f} ({p_x8 - p_in:+.3f})"
        print(line, flush=True)
        result = summary(rows)  # rewritten after every photo: a stopped run keeps what it measured
        if args.out:
            write_json(args.out, result)
    line = f"{len(rows)} of {len(gt)} validation photos: teacher {result['gain_over_input_db']['teacher']:+.3f} dB over the input"
    if not args.no_x8:
        d = result["x8_minus_plain_db"]
        line += (f", x8 {result['gain_over_input_db']['teacher_x8']:+.3f} "
                 f"(x8 minus plain: mean {d['mean']:+.3f}, {d['min']:+.3f} to {d['max']:+.3f})")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
