#!/usr/bin/env python3
"""Two experts picked by a link estimate, at the cost of one: train the estimate and score the pair.

The estimate (:mod:`sharpkd.nets.link`) is trained (:mod:`sharpkd.training.link`) on a photo-profile
run's received training crops, each labelled by its link (``data/<profile>/degrade.json``): ``none``
clean, anything else coded.  The pair: ``--clean-expert`` (a student trained on clean pairs) on a
frame the estimate reads as clean (p(coded) < ``--threshold``), else ``--coded-expert`` (trained on
the link mixture); both the same network, so the pair costs one of them plus the estimate.

Scored, per frame, with every method run as ``sharpkd sharpen`` runs it
(:class:`sharpkd.app.sharpen.Sharpener`):

* the run's validation photos at full size through the clean link and each of its extra link sets
  (``data/<profile>/degraded``, ``degraded_links``): received, each expert, the pair, the oracle
  (the better expert on each frame, which bounds every picker) and p(coded); SSIM too
  (:func:`sharpkd.evaluation.metrics.ssim`, the evaluate stage's);
* the first ``--frames`` frames of each clip of ``--clips``, each clip and link picked as one sequence
  (:class:`sharpkd.nets.link.Picker`, as ``sharpkd sharpen`` picks for a video: from the first frame's
  estimate, and every 30th after it), through the clean link (60% bilinear and
  back) and each video link of ``--links`` (:func:`sharpkd.data.video_link.send`), with Lanczos
  from the decoded small frame too.

Writes ``--out`` (JSON: per set and per clip-link the mean PSNR of every method, the range of
p(coded), how many frames each expert ran; settings, revision, machine, command) and, with
``--save``, the estimate's weights (safetensors; the threshold in its metadata)::

    .venv/bin/python experiments/link_estimate.py --run ../photos --clean-expert clean.safetensors \\
        --coded-expert sharpkd/weights/student-balanced.safetensors --clips ../shared/data/video \\
        --save sharpkd/weights/link-estimate.safetensors --out metrics/photos/link_estimate.json
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
THRESHOLD = 0.3  # below it, the clean-pairs expert: low, as a coded frame taken for clean costs more than the reverse


def parse(argv):
    from sharpkd.training.link import DEFAULTS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="checkout of a photo-profile run (its data/<profile>/ folders)")
    p.add_argument("--profile", default="photos")
    p.add_argument("--clean-expert", required=True, help="student trained on clean pairs")
    p.add_argument("--coded-expert", required=True, help="student trained on the link mixture")
    p.add_argument("--estimator", help="a trained estimate to score instead of training one")
    p.add_argument("--threshold", type=float, default=THRESHOLD, help="clean expert below this p(coded)")
    p.add_argument("--clips", default=str(ROOT.parent / "shared" / "data" / "video"))
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--links", default=DEFAULT_LINKS)
    for key, value in DEFAULTS.items():
        p.add_argument(f"--{key}", type=type(value), default=value, help=f"training: {key} (default {value})")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save", help="write the estimate's weights here")
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from sharpkd.errors import SharpkdError, one_line

    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    try:
        return run(args, [__file__, *argv])
    except SharpkdError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1


def training_crops(run: Path, profile: str):
    from collections import Counter

    import numpy as np

    from sharpkd.data.shards import read_split
    from sharpkd.errors import SharpkdError

    folder = run / "data" / profile
    record = folder / "degrade.json"
    if not record.is_file():
        raise SharpkdError(f"--run {run}: {record} not found; run the profile up to its degrade stage first")
    links = json.loads(record.read_text()).get("train_crops") or {}
    crops = read_split(folder / "degraded", "train")
    missing = sorted(set(crops) - set(links))
    if missing:
        raise SharpkdError(f"--run {run}: {len(missing)} training crops have no link in {record} ({missing[0]})")
    names = sorted(crops)
    x = np.stack([crops[n] for n in names])
    coded = np.array([links[n] != "none" for n in names])
    return x, coded, dict(sorted(Counter(links[n] for n in names).items()))


def photo_sets(run: Path, profile: str):
    """``{set name: (received images, ground truth)}``: the clean validation set and every extra link set."""
    from sharpkd.data.shards import read_split, split_names

    folder = run / "data" / profile
    gt = read_split(folder / "slices", "val_full")
    sets = {"none": read_split(folder / "degraded", "val_full")}
    for split in split_names(folder / "degraded_links"):
        if split.startswith("val_full."):
            sets[split.removeprefix("val_full.").replace("_", ":", 1)] = read_split(folder / "degraded_links", split)
    return {name: (imgs, gt) for name, imgs in sets.items()}


class Scores:
    """Per-method PSNR (and SSIM) of each frame, the estimate, and the expert the pair gave it: the pair's
    and the oracle's scores are the picked and the better expert's."""

    def __init__(self, with_ssim: bool = False) -> None:
        self.with_ssim = with_ssim
        self.ssim: dict[str, list[float]] = {}
        self.psnr: dict[str, list[float]] = {}
        self.p: list[float] = []
        self.clean = 0

    def add(self, gt, outs: dict, p: float, clean: bool) -> None:
        from sharpkd.evaluation.metrics import psnr, ssim

        for m, out in outs.items():
            self.psnr.setdefault(m, []).append(psnr(out, gt))
            if self.with_ssim:
                self.ssim.setdefault(m, []).append(ssim(out, gt))
        picked = "clean_expert" if clean else "coded_expert"
        for scores in (self.psnr, self.ssim) if self.with_ssim else (self.psnr,):
            scores.setdefault("pair", []).append(scores[picked][-1])
        self.psnr.setdefault("oracle", []).append(max(self.psnr["clean_expert"][-1], self.psnr["coded_expert"][-1]))
        self.p.append(p)
        self.clean += bool(clean)

    def result(self) -> dict:
        import numpy as np

        mean = {m: round(float(np.mean(v)), 4) for m, v in self.psnr.items()}
        return {"frames": len(self.p), "clean_expert_frames": self.clean,
                "p_coded": {"min": round(min(self.p), 4), "median": round(float(np.median(self.p)), 4),
                            "max": round(max(self.p), 4)},
                "psnr": mean,
                **({"ssim": {m: round(float(np.mean(v)), 4) for m, v in self.ssim.items()}} if self.with_ssim else {}),
                "pair_minus_coded_expert": round(mean["pair"] - mean["coded_expert"], 4),
                "pair_minus_clean_expert": round(mean["pair"] - mean["clean_expert"], 4),
                "oracle_minus_pair": round(mean["oracle"] - mean["pair"], 4)}


def card(result: dict, report: str) -> dict:
    """The estimate's card (beside its weights): what it is, its file's sha256, its threshold, what it
    was trained on and, per set, how the pair it picks for scored (from the report ``result``)."""
    est = result["settings"]["estimator"]
    sets = {f"photos {k}": v for k, v in result["photos"].items()}
    sets |= {f"{clip} {spec}": v for clip, links in result["clips"].items() for spec, v in links.items()}
    keep = ("frames", "clean_expert_frames", "p_coded", "pair_minus_coded_expert", "pair_minus_clean_expert",
            "oracle_minus_pair")
    return {"what": "link estimate: p(the received frame went through a codec); the pair runs the clean-pairs "
                    "expert below the threshold (sharpkd.nets.link)",
            "sha256": est["sha256"], "threshold": result["settings"]["threshold"],
            "clean_expert": result["settings"]["clean_expert"], "coded_expert": result["settings"]["coded_expert"],
            "trained": {k: v for k, v in est.items() if k not in ("saved", "sha256")},
            "evaluation": {k: {f: v[f] for f in keep} for k, v in sets.items()}, "cost": result["cost"],
            "report": report, "revision": result["revision"], "command": result["command"]}


def run(args: argparse.Namespace, argv: list[str]) -> int:
    import numpy as np
    import torch
    from tqdm import tqdm

    from sharpkd.app.sharpen import Sharpener
    from sharpkd.data.degrade import downscale, upscale
    from sharpkd.data.video_link import read_clip, send
    from sharpkd.errors import SharpkdError
    from sharpkd.evaluation.video_links import clip_files, link_specs
    from sharpkd.fetch import sha256_file
    from sharpkd.files import write_json
    from sharpkd.inference.bench import machine, time_calls
    from sharpkd.nets.link import Picker, coded_probability, load_estimator, save_estimator
    from sharpkd.provenance import record
    from sharpkd.training.link import DEFAULTS, train_estimator

    if not 0 < args.threshold < 1:
        raise SharpkdError(f"--threshold must be between 0 and 1, got {args.threshold}")
    if args.frames < 1:
        raise SharpkdError(f"--frames must be at least 1, got {args.frames}")
    for option, path in (("--clean-expert", args.clean_expert), ("--coded-expert", args.coded_expert)):
        if not Path(path).is_file():
            raise SharpkdError(f"{option} {path}: no such file")
    run_dir = Path(args.run)
    for part in ("slices", "degraded", "degrade.json"):
        if not (run_dir / "data" / args.profile / part).exists():
            raise SharpkdError(f"--run {run_dir}: data/{args.profile}/{part} not found; run the {args.profile} profile "
                               "up to its degrade stage there first")
    if args.estimator and not Path(args.estimator).is_file():
        raise SharpkdError(f"--estimator {args.estimator}: no such file")
    links = link_specs(args.links.split(","), {"links": "--links"}, shown=args.links)
    files = clip_files(args.clips, {"clips": "--clips"})
    torch.set_num_threads(args.threads)
    made_by = record(argv)
    t0 = time.time()
    settings = {k: getattr(args, k) for k in DEFAULTS}
    if args.estimator:
        estimator, meta = load_estimator(args.estimator)
        try:
            kept = json.loads(meta.get("trained", "{}"))
        except ValueError:
            kept = {}
        trained = {"file": Path(args.estimator).name, "sha256": sha256_file(args.estimator)} | kept
    else:
        x, coded, counts = training_crops(run_dir, args.profile)
        losses = []
        estimator = train_estimator(x, coded, progress=True, log=lambda s, v: losses.append(v), **settings)
        del x
        tail = losses[-500:]
        kept = {"crops": counts, "settings": settings}  # what the weights' metadata keeps: no timings, same bytes
        trained = kept | {"threads": args.threads, "final_loss_mean_last_500": round(sum(tail) / len(tail), 4),
                          "seconds": round(time.time() - t0, 1)}
    clean = Sharpener(args.clean_expert, device="cpu", experts=False)
    coded_expert = Sharpener(args.coded_expert, device="cpu", experts=False)  # the mixture expert alone

    picker = Picker(args.threshold)  # as the pair picks: images alone, each clip and link as one sequence

    def methods(received):
        p = coded_probability(estimator, received)
        a, b = clean(received), coded_expert(received)
        pick = picker.choose(lambda: p)  # p is estimated on every frame for the report; the pair uses it when due
        return {"received": received, "clean_expert": a, "coded_expert": b}, p, pick

    frame = np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    est_t = time_calls(lambda: coded_probability(estimator, frame), 10, 2, lambda: None)
    net_t = time_calls(lambda: coded_expert(frame), 10, 2, lambda: None)
    cost = {"frame": "1920x1080", "estimate_ms": round(est_t["median_ms"], 3),
            "expert_ms": round(net_t["median_ms"], 3), "runtime": coded_expert.runtime,
            "estimate_over_expert": round(est_t["median_ms"] / net_t["median_ms"], 4),
            "how": "median of 10 calls after 2, one after the other in this run",
            "every": Picker(args.threshold).every}
    report = {"photos": {}, "clips": {}}
    for name, (imgs, gt) in photo_sets(run_dir, args.profile).items():
        s = Scores(with_ssim=True)
        for n in tqdm(sorted(imgs), desc=f"photos {name}"):
            outs, p, pick = methods(imgs[n])
            s.add(gt[n], outs, p, pick)
        report["photos"][name] = s.result()
    for f in files:
        gts, fps = read_clip(f, args.frames)
        h, w = gts[0].shape[:2]
        clip = {}
        for spec in ["none", *links]:
            s = Scores()
            sent = None if spec == "none" else send(gts, spec, 0.6, fps)
            picker.start()
            for i, gt in enumerate(tqdm(gts, desc=f"{f.stem} {spec}")):
                if sent is None:
                    small = downscale(gt, 0.6)
                    received, lanczos = upscale(small, (w, h)), upscale(small, (w, h), "lanczos")
                else:
                    received, lanczos = sent.received(i), sent.lanczos(i)
                outs, p, pick = methods(received)
                s.add(gt, outs | {"lanczos": lanczos}, p, pick)
            picker.end()
            clip[spec] = s.result()
        report["clips"][f.stem] = clip
    if args.save:
        save_estimator(estimator, args.save, {"threshold": args.threshold, "trained": json.dumps(kept, sort_keys=True)})
    result = {
        "what": "two experts picked by a link estimate (experiments/link_estimate.py)",
        **made_by, "machine": machine("cpu"), "seconds": round(time.time() - t0, 1),
        "settings": {"run_profile": args.profile, "threshold": args.threshold, "frames": args.frames,
                     "links": links, "scale": 0.6,
                     "clean_expert": {"file": Path(args.clean_expert).name, "sha256": sha256_file(args.clean_expert)},
                     "coded_expert": {"file": Path(args.coded_expert).name, "sha256": sha256_file(args.coded_expert)},
                     "estimator": trained | ({"saved": Path(args.save).name, "sha256": sha256_file(args.save)}
                                             if args.save else {}),
                     "psnr": "RGB, all pixels and channels, data_range 255; mean over frames",
                     "oracle": "the better expert on each frame"},
        "cost": cost,
        **report,
    }
    write_json(args.out, result)
    if args.save:
        write_json(Path(args.save).with_suffix(".json"), card(result, args.out))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
