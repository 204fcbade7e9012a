#!/usr/bin/env python3
"""Does the previous received frame pay?  A temporal student against the single-frame one.

Two students of one architecture (``--arch-config``, default the ``lite`` student's c8b1), trained
alike on the training crops of a pipeline run (``--root``: its ``data/<profile>/slices``), with the
``train`` section of that run's params.yaml for batch, patch, learning rate and steps, ground truth
only (``l2_gt``), ``--epochs`` epochs, the best epoch by validation PSNR:

* ``single``: input the received frame (the product's students);
* ``temporal``: input the received frame and the one received before it, stacked on the channels
  (``frames: 2`` of :class:`sharpkd.nets.students.SharpNet`: the head sees both frames, the residual is
  added to the current one);
* ``single_equal`` (with ``--equal CONFIG``): a single-frame student of another config, chosen to
  cost what the temporal one costs per frame (its head reads twice the channels).

Each training crop is frame ``KEEP`` of its seeded moving sequence (pan, zoom, small rotation:
:func:`sharpkd.data.video_link.degrade_crop`) sent through one link of ``--links``, drawn by the
crop's name (:func:`sharpkd.data.degrade.draw_link`, seed ``--link-seed``); a video link codes the
whole sequence with P- and B-frames, any other link degrades the two frames on their own.  Both
arms see the same received frames; the temporal arm also sees the one before.  Validation: the
run's ``val_full`` photos through the same draw.

Both arms are then scored on real clips (``--clips``, ``--frames`` frames) over the video links
of ``--video-links`` (:func:`sharpkd.evaluation.video_links.score_clips`: PSNR and temporal error per
clip and link, the temporal arm given the previous received frame, the first frame itself), and
timed at 1920x1080 in PyTorch (float32, medians of interleaved runs, MACs beside).  Per link the
report has each arm's mean over clips, per seed, and the paired difference temporal - single with
its interval over seeds.  The received pairs are computed once and cached under
``<root>/.sharpkd/state/<profile>/temporal-<key>``; each training run keeps a resume state per
epoch, and the JSON (``--out``) is rewritten after every run, so a killed call goes on where it
stopped.  Example::

    .venv/bin/python experiments/temporal.py --root /path/to/photos-run --profile photos --seeds 2 \\
        --out metrics/photos/temporal.json
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.seeds import interval  # noqa: E402  (the t-interval every seed report uses)

DEFAULT_LINKS = "none,none,h264v:23,h264v:28,h264v:1000k,h264:23"
DEFAULT_VIDEO_LINKS = "h264v:23,h264v:28,h264v:1000k"
#: The arms: the input frames each sees (``single_equal``, with ``--equal``, a wider single-frame student).
ARMS = {"single": 1, "temporal": 2, "single_equal": 1}
#: What the errors call each setting: this command's options.
OPTIONS = {"clips": "--clips", "frames": "--frames", "start": "--start", "links": "--video-links",
           "scale": "degrade.scale (--root params.yaml)"}


def received_pairs(images: dict[str, np.ndarray], links: list[str], link_seed: int, scale: float,
                   cache: Path, what: str) -> dict[str, np.ndarray]:
    """``{name: H x W x 6}``: each image as frame ``KEEP`` of its moving sequence through its drawn
    link, the received frame before it stacked behind; cached in ``cache/what`` (safetensors
    shards, written to a temporary folder and renamed, so a killed run leaves no partial cache)."""
    import os
    import shutil
    import tempfile

    from tqdm import tqdm

    from sharpkd.data.degrade import draw_link
    from sharpkd.data.shards import read_split, write_split
    from sharpkd.data.video_link import degrade_crop

    if (cache / what).is_dir():
        return read_split(cache / what, what, list(images))
    out = {n: degrade_crop(img, draw_link(n, links, link_seed), scale, link_seed, n, previous=True)
           for n, img in tqdm(images.items(), desc=f"received pairs, {what}", unit="img")}
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{what}-", dir=cache))
    try:
        write_split(tmp, what, out)
        os.replace(tmp, cache / what)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_full(model, stack: np.ndarray) -> np.ndarray:
    """``model`` on one whole frame (``H x W x 3`` or a ``H x W x 6`` stack), uint8 out."""
    import torch

    from sharpkd.tensors import stacks2tensor, tensor2img

    with torch.inference_mode():
        return tensor2img(model(stacks2tensor([stack])))


def timing(models: dict, repeats: int = 5) -> dict:
    """ms per 1920x1080 frame of each model (PyTorch float32), medians of interleaved runs."""
    import torch

    from sharpkd.nets.cost import count_macs

    frame = torch.rand(1, 3, 1080, 1920, generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {n: [] for n in models}
    with torch.inference_mode():
        for name, m in models.items():  # warm up
            m(frame.repeat(1, m.frames, 1, 1))
        for _ in range(repeats):
            for name, m in models.items():
                x = frame.repeat(1, m.frames, 1, 1)
                t = time.perf_counter()
                m(x)
                times[name].append((time.perf_counter() - t) * 1000)
    return {n: {"ms_per_1080p_frame": round(float(np.median(v)), 2), "macs_per_1080p_frame": count_macs(models[n], 1080, 1920),
                "runtime": f"torch {torch.__version__} float32, {torch.get_num_threads()} threads"}
            for n, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--root", type=Path, default=ROOT, help="a pipeline checkout whose data/<profile>/slices to train on")
    ap.add_argument("--profile", default="photos")
    ap.add_argument("--arch-config", default='{"channels": 8, "blocks": 1, "unshuffle": 2}',
                    help="the sharp student's config (JSON) of both arms")
    ap.add_argument("--equal", default="", help="also train arm single_equal, a single-frame student of this "
                    "config (JSON), e.g. '{\"channels\": 8, \"blocks\": 2, \"unshuffle\": 2}'")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--links", default=DEFAULT_LINKS, help="the training mixture, comma-separated (repeat to weigh)")
    ap.add_argument("--link-seed", type=int, default=0, help="the mixture's draw and the camera motion")
    ap.add_argument("--clips", nargs="+", default=[str(ROOT.parent / "shared" / "data" / "video")])
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--video-links", default=DEFAULT_VIDEO_LINKS)
    ap.add_argument("--out", type=Path, default=ROOT / "metrics" / "photos" / "temporal.json")
    args = ap.parse_args(argv)
    from sharpkd.errors import SharpkdError, one_line

    try:
        return run(args, argv if argv is not None else sys.argv[1:])
    except SharpkdError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace, argv: list[str]) -> int:
    import torch

    from sharpkd import stage
    from sharpkd.data.degrade import link_list
    from sharpkd.data.shards import read_split
    from sharpkd.errors import SharpkdError
    from sharpkd.evaluation.metrics import psnr
    from sharpkd.evaluation.video_links import check_settings, clip_files, link_specs, score_clips
    from sharpkd.files import write_json
    from sharpkd.inference.bench import machine
    from sharpkd.nets.students import build_student
    from sharpkd.provenance import record
    from sharpkd.training.distill import inference_copy
    from sharpkd.training.loop import Pairs, epoch_steps, fingerprint, fit, state_file
    from sharpkd.training.losses import build_loss

    if args.seeds < 2 or args.epochs < 1:
        raise SharpkdError(f"--seeds must be at least 2 (an interval needs two runs) and --epochs at least 1, "
                           f"got {args.seeds} and {args.epochs}")
    arch_config = json_config(args.arch_config, "--arch-config")
    configs = {"single": arch_config, "temporal": arch_config | {"frames": 2}}
    if args.equal:
        configs["single_equal"] = json_config(args.equal, "--equal")
    for c in configs.values():
        build_student("sharp", **c)  # a bad config is one error line before anything runs
    links = link_list([s.strip() for s in args.links.split(",")], "--links", video=True)
    video_links = link_specs(args.video_links.split(","), OPTIONS, shown=args.video_links)
    files = clip_files(args.clips, OPTIONS)
    root = args.root.resolve()
    if not (root / "params.yaml").is_file():
        raise SharpkdError(f"--root {root}: no params.yaml there (give a pipeline checkout)")
    params = stage.load_params("train", root / "params.yaml")
    scale = float(stage.load_params("degrade", root / "params.yaml")["scale"])
    check_settings(args.frames, 0, scale, OPTIONS)
    slices = root / "data" / args.profile / "slices"
    if not slices.is_dir():
        raise SharpkdError(f"--root {root}: no {slices.relative_to(root)} (run the pipeline's slice stage there)")
    made_by = record([__file__, *argv])

    gt = read_split(slices, "train")
    val_gt = read_split(slices, "val_full")
    state = root / ".sharpkd" / "state" / args.profile
    cache = state / f"temporal-{key(links, args.link_seed, scale, sorted(gt), sorted(val_gt))}"
    train = received_pairs(gt, links, args.link_seed, scale, cache, "train")
    val = received_pairs(val_gt, links, args.link_seed, scale, cache, "val_full")
    names, val_names = list(gt), list(val_gt)

    p = copy.deepcopy(params)
    p["arch"], p["arch_config"], p["epochs"] = "sharp", arch_config, args.epochs
    p["loss"] = {k: 0.0 for k in p["loss"]} | {"l2_gt": 1.0}
    config = {"arch_config": arch_config, **({"equal_config": configs["single_equal"]} if args.equal else {}),
              "epochs": args.epochs, "links": links, "link_seed": args.link_seed,
              "train": {k: p[k] for k in ("batch", "patch", "lr", "steps_per_epoch")}, "loss": "l2_gt",
              "clips": [f.name for f in files], "frames": args.frames, "video_links": video_links,
              "train_crops": len(names), "val_images": len(val_names), "root_profile": args.profile}
    report = {"runs": {}}
    if args.out.exists():
        saved = json.loads(args.out.read_text())
        theirs = dict(saved.get("settings") or {})
        # the single and temporal runs stand whatever --equal says; single_equal runs need its config
        if {k: v for k, v in theirs.items() if k != "equal_config"} == \
                {k: v for k, v in config.items() if k != "equal_config"}:
            same_equal = theirs.get("equal_config") == config.get("equal_config")
            report["runs"] = {r: v for r, v in (saved.get("runs") or {}).items()
                              if v.get("arm") in configs and (v["arm"] != "single_equal" or same_equal)}
            print(f"resuming {args.out}: {len(report['runs'])} runs already there", flush=True)
    loss_fn = build_loss(p["loss"], p.get("vgg") or {})
    for seed in range(args.seeds):
        for arm in configs:
            run_id, frames = f"{arm}:{seed}", ARMS[arm]
            if run_id in report["runs"]:
                continue
            take = 3 * frames
            degraded = [train[n][..., :take] for n in names]
            val_in = [val[n][..., :take] for n in val_names]
            torch.manual_seed(seed)
            model = build_student("sharp", **configs[arm])
            pairs = Pairs([np.ascontiguousarray(d) for d in degraded], [gt[n] for n in names])
            per_epoch = epoch_steps(p["steps_per_epoch"], p["batch"], p["patch"], pairs)
            fp = fingerprint({"train": p | {"arch_config": configs[arm]}, "arm": arm, "links": links, "link_seed": args.link_seed},
                             [*pairs.degraded, *pairs.gt, *val_in])

            def validate(m) -> dict:
                f = inference_copy(m)
                return {"val_psnr": float(np.mean([psnr(run_full(f, np.ascontiguousarray(x)), val_gt[n])
                                                   for x, n in zip(val_in, val_names)]))}

            model, best, _ = fit(model, pairs, lambda out, y, t: loss_fn(out, y, None), lr=float(p["lr"]),
                                 epochs=args.epochs, steps_per_epoch=per_epoch, batch=int(p["batch"]),
                                 patch=int(p["patch"]), seed=seed, state_path=state_file(state / "temporal", arm, fp),
                                 fingerprint=fp, validate=validate, desc=f"train {arm} seed {seed}")
            for old in (state / "temporal").glob("*.pt"):
                old.unlink()
            f = inference_copy(model)
            methods = {f"{arm}": (lambda rgb, f=f: run_full(f, rgb))} if frames == 1 else {}
            temporal = {f"{arm}": (lambda rgb, before, f=f: run_full(f, np.concatenate([rgb, before], axis=2)))} \
                if frames == 2 else {}
            scored = score_clips(files, video_links, frames=args.frames, scale=scale, methods=methods, temporal=temporal,
                                 names=OPTIONS, log=lambda line: print(line, file=sys.stderr, flush=True))
            report["runs"][run_id] = {
                "arm": arm, "seed": seed, "best_epoch": best["epoch"], "val_psnr": round(best["val_psnr"], 4),
                "val_psnr_per_image": {n: round(float(psnr(run_full(f, np.ascontiguousarray(x)), val_gt[n])), 4)
                                       for x, n in zip(val_in, val_names)},
                "clips": {c: {s: v["methods"] for s, v in clip["links"].items()} for c, clip in scored["clips"].items()},
                "mean": scored["mean"]}
            print(f"{run_id}: best epoch {best['epoch']}, val {best['val_psnr']:.3f} dB; "
                  + ", ".join(f"{s} {m[arm]['psnr']:.3f}" for s, m in scored["mean"].items()), flush=True)
            write_json(args.out, {"settings": config, "runs": report["runs"]} | made_by)
    # timing: both arms' shapes (random weights time the same as trained ones)
    models = {}
    for arm, c in configs.items():
        torch.manual_seed(0)
        models[arm] = inference_copy(build_student("sharp", **c))
    summary = summarise(report["runs"], list(configs), video_links, args.seeds)
    write_json(args.out, {"what": "temporal student (the previous received frame too) against the single-frame "
                                  "one, trained alike (experiments/temporal.py)",
                          **made_by, "machine": machine("cpu"), "settings": config, "timing": timing(models),
                          "summary": summary, "runs": report["runs"]})
    for s, row in summary["links"].items():
        for other in configs:
            if other != "temporal":
                d = row[f"temporal_minus_{other}"]
                print(f"{s}: temporal - {other} {d['mean']:+.3f} dB"
                      + f" (95% CI {d['ci95_low']:+.3f} to {d['ci95_high']:+.3f})", flush=True)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def summarise(runs: dict, arms: list[str], video_links: list[str], seeds: int) -> dict:
    """Per video link: each arm's mean PSNR, temporal error and margin over Lanczos over seeds, and
    the paired difference temporal - each other arm (one value per seed) with its interval; the
    same for the validation photos."""
    others = [a for a in arms if a != "temporal"]
    out = {"links": {}}
    for s in video_links:
        row = {}
        for arm in arms:
            vals = [runs[f"{arm}:{k}"]["mean"][s] for k in range(seeds)]
            row[arm] = {"psnr": interval([v[arm]["psnr"] for v in vals]),
                        "temporal_error": interval([v[arm]["temporal_error"] for v in vals]),
                        "over_lanczos": interval([v[arm]["psnr"] - v["lanczos"]["psnr"] for v in vals])}
        for other in others:
            row[f"temporal_minus_{other}"] = interval([runs[f"temporal:{k}"]["mean"][s]["temporal"]["psnr"]
                                                       - runs[f"{other}:{k}"]["mean"][s][other]["psnr"]
                                                       for k in range(seeds)])
        row["lanczos_psnr"] = round(runs["single:0"]["mean"][s]["lanczos"]["psnr"], 4)
        row["received_psnr"] = round(runs["single:0"]["mean"][s]["received"]["psnr"], 4)
        out["links"][s] = row
    out["validation"] = {arm: interval([runs[f"{arm}:{k}"]["val_psnr"] for k in range(seeds)]) for arm in arms}
    for other in others:
        out["validation"][f"temporal_minus_{other}"] = interval(
            [runs[f"temporal:{k}"]["val_psnr"] - runs[f"{other}:{k}"]["val_psnr"] for k in range(seeds)])
    return out


def json_config(text: str, option: str) -> dict:
    """A student config given as JSON on the command line, or one error line naming ``option``."""
    from sharpkd.errors import SharpkdError

    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise SharpkdError(f"{option} {text!r}: not JSON") from None
    if not isinstance(value, dict):
        raise SharpkdError(f"{option} {text!r}: give a JSON object")
    return value


if __name__ == "__main__":
    sys.exit(main())
