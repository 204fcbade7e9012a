#!/usr/bin/env python3
"""What adapting the teacher longer buys: validation PSNR along one long adaptation run.

The pipeline adapts the teacher for ``teacher.adapt.steps``; this measures what more steps buy.
It runs the teacher stage's own adaptation (:func:`sharpkd.teacher.adapt`: L1, AdamW, cosine
from ``lr`` to ``0.01 * lr`` over ``--steps``, the ``teacher.adapt`` params of
``--root``'s ``params.yaml`` for everything not given here) from the teacher as built (for ``vdsr``: the pretrained weights) on the profile's training pairs, and
every ``--eval-every`` steps scores it on ``--images`` of the full-size validation photos (evenly
spaced in name order) with :func:`sharpkd.inference.run_model` and :func:`sharpkd.metrics.psnr`::

    .venv/bin/python tools/adapt_probe.py --root ../photos --profile photos --steps 4000 \\
        --eval-every 500 --images 8 --x8 --out metrics/photos/teacher_adapt.json

The last point is what ``-S teacher.adapt.steps=<steps>`` gives on those photos; the points
before it are the same run part-way, with the learning rate not yet decayed (a shorter budget
decays sooner and ends a little higher).  ``--x8`` also scores the last point's geometric
self-ensemble (``teacher.self_ensemble``, 8 forward passes per output).  The JSON is rewritten after every point, so a stopped
run keeps what it measured.  Nothing of the pipeline's outputs is written.
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
    ap.add_argument("--root", default=".", help="the checkout whose params.yaml, data/ and models/ hold the run")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--lr", type=float, help="default: teacher.adapt.lr")
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--tile", type=int, default=2048)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--x8", action="store_true", help="also score the last point's geometric self-ensemble (8x its cost)")
    ap.add_argument("--save", help="write the adapted teacher here (.safetensors), as the teacher stage would")
    ap.add_argument("--out", help="write the JSON here")
    args = ap.parse_args(argv)

    import torch

    from sharpkd import stage
    from sharpkd.errors import SharpkdError
    from sharpkd.fsutil import write_json
    from sharpkd.inference import SelfEnsemble, run_model
    from sharpkd.metrics import psnr
    from sharpkd.shards import read_split
    from sharpkd.teacher import adapt, build_teacher, describe, save_teacher

    root = Path(args.root)
    data = root / "data" / args.profile
    try:
        p = stage.load_params("teacher", root / "params.yaml")
        a = dict(p["adapt"]) | ({"lr": args.lr} if args.lr is not None else {})
        if args.steps < 1 or args.eval_every < 1 or args.images < 1:
            raise SharpkdError(f"--steps, --eval-every and --images must be >= 1, got {args.steps}, "
                               f"{args.eval_every} and {args.images}")
        gt_val = read_split(data / "slices", "val_full")
        lq_val = read_split(data / "degraded", "val_full")
        gt_train = read_split(data / "slices", "train")
        lq_train = read_split(data / "degraded", "train", list(gt_train))
        if not gt_val or set(gt_val) != set(lq_val) or not gt_train:
            raise SharpkdError(f"{data}: run the pipeline of profile {args.profile} to its degrade stage first")
        names = sorted(gt_val)
        names = names[:: max(1, len(names) // args.images)][: args.images]
        model = build_teacher(p, root=root)
    except SharpkdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    inputs = {n: round(psnr(lq_val[n], gt_val[n]), 3) for n in names}
    result = {"profile": args.profile, "teacher": describe(model)["arch"], "kind": p["kind"],
              "adapt": {k: a[k] for k in ("lr", "patch", "batch", "seed")} | {"steps": args.steps},
              "images": names, "of_validation_images": len(gt_val), "psnr_input": inputs, "curve": []}

    def point(step: int, net: torch.nn.Module, label: str = "") -> dict:
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            out = {n: round(psnr(run_model(net, lq_val[n], tile=args.tile, overlap=args.overlap), gt_val[n]), 3)
                   for n in names}
        model.train(was_training)
        gain = statistics.mean(out[n] - inputs[n] for n in names)
        print(f"step {step}{label}: {gain:+.3f} dB over the input on {len(names)} validation photos", flush=True)
        return {"step": step, "gain_over_input_db": round(gain, 3), "psnr": out}

    def score(step: int) -> None:
        if step % args.eval_every and step != args.steps:
            return
        result["curve"].append(point(step, model))
        if args.out:
            write_json(args.out, result)

    score(0)
    adapt(model, [(lq_train[n], gt_train[n]) for n in gt_train], steps=args.steps, lr=a["lr"], patch=a["patch"],
          batch=a["batch"], seed=a["seed"], on_step=score)
    if args.save:
        save_teacher(model, args.save, p)
    if args.x8:  # the last point's outputs as the mean over the 8 flips and rotations (teacher.self_ensemble)
        result["x8"] = point(args.steps, SelfEnsemble(model), ", x8")
        if args.out:
            write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
