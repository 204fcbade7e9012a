#!/usr/bin/env python3
"""Distillation measured over seeds: ground truth only vs distilled, same budget, N seeds per arm.

Reads what the pipeline made for ``--profile`` (``data/<profile>/slices``, ``degraded`` and
``teacher`` shards: run ``dvc repro`` or ``dvc pull`` first) and the ``train`` section of
``params.yaml``, then trains the student ``--seeds`` times per arm with
:func:`sharpkd.training.distill.train_student` (the pipeline's own training): arm ``gt_only`` with
``loss.l2_teacher = 0``, arm ``distilled`` with the params as they are (seed ``s`` gives both
arms the same initial weights and the same batches).  Each run's best epoch is scored on the
full-size validation images with :func:`sharpkd.inference.tiled.run_model` (RGB PSNR, data range 255).

Reported in ``metrics/<profile>/seeds.json`` (``tools/results.py --update README.md`` renders it):

* per arm: the mean validation PSNR of each seed, their mean and sample sd;
* ``seed_paired``: distilled minus gt_only per seed, mean, sd and the 95% t-interval over seeds;
* ``image_paired``: per validation image, the distilled minus gt_only PSNR averaged over seeds;
  mean and the 95% t-interval over images, and on how many images distillation is ahead.
* ``links``: the same per extra validation link set (``degrade.val_links``: the same images
  through H.264, from ``data/<profile>/degraded_links``), each run's best epoch scored there too;
  ``per_link[link][arm][seed]`` holds the per-image PSNRs.

With ``--zoom W`` a third arm ``zoom`` adds the DUKD-style term ``loss.l2_teacher_zoom = W``
(:class:`sharpkd.training.losses.ZoomDistillation`: the adapted teacher of ``models/<profile>`` labels
down-zoomed patches online) to the distilled arm, and ``comparisons`` holds the same two paired
reports for every pair of arms (``zoom-gt_only``, ``zoom-distilled``, ...).

With ``--upcycle W`` an arm ``upcycled`` adds ``l2_teacher_zoom = W`` to the *ground-truth-only*
loss, its labels computed once (:func:`sharpkd.training.losses.label_zoomed`: every training crop
shrunk by ``train.zoom`` and degraded, labelled by the adapted teacher, kept in
``<root>/.sharpkd/state`` so a second call reads them back) and sampled from that pool
(:class:`sharpkd.training.losses.PrecomputedZoom`): the teacher used only where the ground truth
was not, at the cost of one teacher pass instead of one per step.

A run keeps a resume state in ``<root>/.sharpkd/state/<profile>/seeds/<arm>`` at every epoch, so a
killed call goes on from there.  ``--arms gt_only`` trains that arm alone and reads no teacher
outputs, so it can run while the pipeline's teacher stage does; a later call with ``--arms
distilled`` (the same ``--out``) keeps those runs and adds the other arm.  Each finished run is written to the output at once, and a later call with the same settings
trains only the runs that are missing (``--seeds 5`` after ``--seeds 3`` adds seeds 3 and 4).
The report records the teacher (``teacher``: its weights' sha256 and adaptation steps); under another
teacher only the ``gt_only`` runs are kept, since that arm never sees the teacher.
The per-epoch validation leaves SSIM out (the best epoch is chosen by PSNR either way), so a run
costs about a third of the ``train`` stage's time.  ``--root`` reads params, data and
models from another checkout (one that ran the photo pool, say).

    .venv/bin/python experiments/seeds.py --profile default --seeds 3 --zoom 1
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def interval(values: list[float], confidence: float = 0.95) -> dict:
    """Mean, sample sd and the two-sided t-interval of the mean of ``values``."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    mean = float(v.mean())
    sd = float(v.std(ddof=1)) if n > 1 else 0.0
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / np.sqrt(n)) if n > 1 else float("nan")
    return {"n": n, "mean": mean, "sd": sd, "ci95_low": mean - half, "ci95_high": mean + half}


def paired(per_image: dict[str, dict[int, list[float]]], a: str, b: str) -> dict:
    """Arm ``a`` minus arm ``b``: ``seed_paired`` over the seeds both ran, ``image_paired`` over images."""
    seeds = sorted(set(per_image[a]) & set(per_image[b]))
    by_seed = [float(np.mean(per_image[a][s]) - np.mean(per_image[b][s])) for s in seeds]
    diff = np.mean([np.subtract(per_image[a][s], per_image[b][s]) for s in seeds], axis=0)
    image = interval(diff.tolist()) | {"ahead": int((diff > 0).sum()), "images": int(diff.size)}
    return {"seed_paired": interval(by_seed), "image_paired": image}


def summarise(per_image: dict[str, dict[int, list[float]]]) -> dict:
    """``per_image[arm][seed]`` = PSNR of each validation image -> the report (module docstring)."""
    arms = {}
    for arm, runs in per_image.items():
        if not runs:
            continue
        means = [float(np.mean(v)) for _, v in sorted(runs.items())]
        arms[arm] = {"seeds": sorted(runs), "psnr": means} | {k: v for k, v in interval(means).items() if k in ("mean", "sd")}
    names = [a for a in per_image if per_image[a]]
    both = lambda a, b: bool(set(per_image.get(a) or {}) & set(per_image.get(b) or {}))  # noqa: E731
    report = {"arms": arms, **(paired(per_image, "distilled", "gt_only") if both("distilled", "gt_only") else {})}
    if len(per_image) > 2:
        report["comparisons"] = {f"{a}-{b}": paired(per_image, a, b)
                                 for i, a in enumerate(names) for b in names[:i] if both(a, b)}
    return report


def settings(params: dict, profile: str, zoom: float, val_images: int, train_links=()) -> dict:
    """What makes two reports comparable: a saved run is reused only under the same settings.
    ``train_links`` (``degrade.train_links``: the links the training crops went through, the
    teacher's adaptation pairs included) is recorded when it is a mixture; absent, every crop went
    through the profile's primary link."""
    return ({"profile": profile, "train": {k: params[k] for k in ("arch", "arch_config", "epochs", "steps_per_epoch",
                                                                  "batch", "patch", "lr", "zoom")},
             "loss": params["loss"], "zoom_weight": float(zoom), "val_images": val_images}
            | ({"train_links": [str(x) for x in train_links]} if train_links else {}))


def upcycle_pool(root: Path, profile: str, teacher, crops: list, zoom: float, scale: float) -> tuple[list, list]:
    """The ``upcycled`` arm's pool: the training crops zoomed out and labelled by ``teacher``, each
    label kept in ``<root>/.sharpkd/state/upcycle-<key>`` (read back by a later call)."""
    from sharpkd.inference.tiled import prepare, resume_key
    from sharpkd.training.losses import label_zoomed

    prepare(teacher, "cpu")
    key = resume_key(teacher, tile=512, overlap=32, device="cpu")[:16]
    return label_zoomed(teacher, crops, zoom, scale, tile=512, overlap=32, device="cpu",
                        resume_dir=root / ".sharpkd" / "state" / profile / f"upcycle-{key}")


def take_saved(saved: dict, base: dict, teacher: dict, upcycle: float, seeds: int, per_image: dict, per_link: dict,
               only: set | None = None) -> bool | None:
    """Copy into ``per_image`` and ``per_link`` the runs of report ``saved`` that hold here (seeds below
    ``seeds``; with ``only``, of those arms alone): none unless its settings are ``base``; the
    gt_only arm's under any teacher (it never sees one), the other arms' under the same ``teacher``
    (the upcycled arm's also under the same weight).  Returns None when the settings differ, else
    whether the teacher is the same."""
    if {k: saved.get(k) for k in base} != base:
        return None
    same_teacher = saved.get("teacher") == teacher
    same_upcycle = float(saved.get("upcycle_weight", 0.0)) == float(upcycle)
    for arm, runs in saved.get("per_image", {}).items():
        if arm not in per_image or (only is not None and arm not in only):
            continue
        if (arm == "gt_only" or same_teacher) and (arm != "upcycled" or same_upcycle):
            per_image[arm] = {int(s): v for s, v in runs.items() if int(s) < seeds}
            for spec in per_link:
                kept = ((saved.get("per_link") or {}).get(spec) or {}).get(arm) or {}
                per_link[spec][arm] = {int(s): v for s, v in kept.items() if int(s) in per_image[arm]}
    return same_teacher


def teacher_identity(root: Path, profile: str) -> dict:
    """The teacher the distilled arms learn from: its weights' sha256 and the profile's adaptation steps."""
    import yaml

    from sharpkd.fetch import sha256_file

    weights = root / "models" / profile / "teacher.safetensors"
    params = yaml.safe_load((root / "params.yaml").read_text()) or {}
    adapt = (params.get("teacher") or {}).get("adapt") or {}
    return {"sha256": sha256_file(weights) if weights.exists() else None, "adapt_steps": adapt.get("steps")}


def run(profile: str, seeds: int, zoom: float = 0.0, root: Path = ROOT, out: Path | None = None,
        upcycle: float = 0.0, arms: list[str] | None = None) -> dict:
    """Train every (seed, arm) not already in ``out`` (same settings), writing ``out`` after each run.
    ``arms`` limits the training to those arms (the others' saved runs are kept); without a
    teacher arm among them, the teacher's outputs are not read (they need not exist yet)."""
    from sharpkd import stage
    from sharpkd.training.distill import TrainData, inference_copy, train_student
    from sharpkd.files import write_json
    from sharpkd.inference.tiled import run_model
    from sharpkd.evaluation.metrics import psnr
    from sharpkd.data.shards import read_split
    from sharpkd.data.degrade import link_split, val_links
    from sharpkd.training.teacher import load_teacher
    from sharpkd.errors import SharpkdError

    params = stage.load_params("train", root / "params.yaml")
    degrade = stage.load_params("degrade", root / "params.yaml")
    data_dir = root / "data" / profile
    gt = read_split(data_dir / "slices", "train")
    names = list(gt)
    val_gt = read_split(data_dir / "slices", "val_full")
    every = ["gt_only", "distilled"] + (["zoom"] if zoom > 0 else []) + (["upcycled"] if upcycle > 0 else [])
    arms = every if arms is None else arms
    unknown = sorted(set(arms) - set(every))
    if unknown:
        raise SharpkdError(f"--arms: no arm {', '.join(unknown)} in this call (arms: {', '.join(every)})")
    data = TrainData(
        degraded=list(read_split(data_dir / "degraded", "train", names).values()), gt=list(gt.values()),
        teacher=(list(read_split(data_dir / "teacher", "train", names).values())
                 if set(arms) - {"gt_only"} else None),
        val_degraded=list(read_split(data_dir / "degraded", "val_full", list(val_gt)).values()),
        val_gt=list(val_gt.values()), val_names=list(val_gt),
        teacher_model=load_teacher(root / "models" / profile / "teacher.safetensors") if zoom > 0 or upcycle > 0 else None,
        scale=float(degrade["scale"]))
    # the profile's extra validation link sets (degrade.val_links: H.264 CRF 23 and 28 for the photos), same images
    link_val = {spec: list(read_split(data_dir / "degraded_links", link_split("val_full", spec), list(val_gt)).values())
                for spec in val_links(degrade)}
    base = settings(params, profile, zoom, len(val_gt), degrade.get("train_links") or [])
    teacher = teacher_identity(root, profile)
    per_image: dict[str, dict[int, list[float]]] = {"gt_only": {}, "distilled": {}} | ({"zoom": {}} if zoom > 0 else {})
    per_link: dict[str, dict[str, dict[int, list[float]]]] = {spec: {} for spec in link_val}
    upcycled = None
    if upcycle > 0:
        per_image["upcycled"] = {}
        pool = upcycle_pool(root, profile, data.teacher_model, data.gt, params.get("zoom", 0.5), data.scale)
        upcycled = dataclasses.replace(data, zoom_pool=pool)
    learns = bool(set(arms) - {"gt_only"})

    def read_back(only: set | None = None) -> bool | None:
        """Take the runs of ``out`` that hold here (:func:`take_saved`); a call that trains no teacher
        arm keeps the report's teacher."""
        nonlocal teacher
        saved = json.loads(out.read_text())
        if not learns and (saved.get("teacher") or {}).get("sha256"):
            teacher = saved["teacher"]
        return take_saved(saved, base, teacher, upcycle, seeds, per_image, per_link, only)

    if out is not None and out.exists():
        same_teacher = read_back()
        if same_teacher is None:
            print(f"{out} was made with other settings: starting over", flush=True)
        else:
            print(f"resuming {out}: {sum(map(len, per_image.values()))} runs already there"
                  + ("" if same_teacher else " (another teacher: its distilled runs are redone)"), flush=True)
    weight = {"upcycle_weight": float(upcycle)} if upcycle > 0 else {}
    # a run killed midway resumes from its last epoch (the state is named by the run's params and data)
    state = root / ".sharpkd" / "state" / profile / "seeds"
    for seed in range(seeds):
        for arm in per_image:
            if seed in per_image[arm] or arm not in arms:
                continue
            p = copy.deepcopy(params)
            p["seed"] = seed
            if arm == "gt_only":
                p["loss"]["l2_teacher"] = 0.0
            if arm == "zoom":
                p["loss"]["l2_teacher_zoom"] = float(zoom)
            if arm == "upcycled":
                p["loss"]["l2_teacher"], p["loss"]["l2_teacher_zoom"] = 0.0, float(upcycle)
            # no SSIM in the per-epoch validation: the best epoch (by PSNR) and its weights are the same
            # one folder per arm: calls that train other arms at the same time keep their own states
            model, best, _ = train_student(p, upcycled if arm == "upcycled" else data, device="cpu", val_ssim=False,
                                           state_dir=state / arm)
            for old in (state / arm).glob("*.pt"):
                old.unlink()
            folded = inference_copy(model)
            per_image[arm][seed] = [float(psnr(run_model(folded, d), g)) for d, g in zip(data.val_degraded, data.val_gt)]
            for spec, degraded in link_val.items():
                per_link[spec].setdefault(arm, {})[seed] = [float(psnr(run_model(folded, d), g))
                                                            for d, g in zip(degraded, data.val_gt)]
            print(f"seed {seed} {arm}: best epoch {best['epoch']}, val PSNR {np.mean(per_image[arm][seed]):.3f} dB"
                  + "".join(f", {spec} {np.mean(per_link[spec][arm][seed]):.3f} dB" for spec in per_link), flush=True)
            if out is not None:
                others = set(per_image) - set(arms)
                if others and out.exists():  # another call may have added runs of the other arms meanwhile
                    read_back(others)
                write_json(out, base | {"teacher": teacher} | weight | {"per_image": per_image}
                           | ({"per_link": per_link} if per_link else {}))
    links = {spec: summarise({a: runs[a] for a in per_image if a in runs}) for spec, runs in per_link.items()}
    return (summarise(per_image) | base | {"teacher": teacher} | weight | {"per_image": per_image}
            | ({"links": links, "per_link": per_link} if per_link else {}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--zoom", type=float, default=0.0,
                    help="also run arm 'zoom': the distilled loss plus l2_teacher_zoom at this weight")
    ap.add_argument("--upcycle", type=float, default=0.0,
                    help="also run arm 'upcycled': ground truth only plus l2_teacher_zoom at this weight, "
                         "from teacher labels computed once on the zoomed-out training crops")
    ap.add_argument("--arms", help="comma-separated arms to train (default: all of this call's); the "
                    "others' runs already in --out are kept. `--arms gt_only` needs no teacher outputs, so it "
                    "can run while the teacher stage does")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    ap.add_argument("--root", type=Path, default=ROOT,
                    help="the checkout whose params.yaml, data/ and models/ to use (default: this one)")
    ap.add_argument("--out", type=Path, help="default metrics/<profile>/seeds.json; runs already in it "
                    "(same settings) are kept, and it is rewritten after every run")
    args = ap.parse_args()
    if args.seeds < 2:
        ap.error("--seeds must be at least 2 (a spread needs two runs)")
    from sharpkd.files import write_json

    if args.threads < 0:
        ap.error("--threads must be 0 (torch's choice) or a positive count")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from sharpkd.errors import SharpkdError

    out = args.out or ROOT / "metrics" / args.profile / "seeds.json"
    arms = [a.strip() for a in args.arms.split(",") if a.strip()] if args.arms is not None else None
    try:
        report = run(args.profile, args.seeds, args.zoom, args.root.resolve(), out, upcycle=args.upcycle, arms=arms)
    except SharpkdError as exc:
        sys.exit(f"error: {exc}")
    from sharpkd.inference.bench import machine
    from sharpkd.provenance import record

    write_json(out, report | {"machine": machine("cpu")} | record())
    if "seed_paired" not in report:
        print(f"wrote {out}: " + ", ".join(f"{a} {len(r['seeds'])} seeds" for a, r in report["arms"].items()))
        return
    s, i = report["seed_paired"], report["image_paired"]
    print(f"distilled - gt_only: {s['mean']:+.3f} dB over {s['n']} seeds (95% CI {s['ci95_low']:+.3f} to "
          f"{s['ci95_high']:+.3f}); per image {i['mean']:+.3f} dB (95% CI {i['ci95_low']:+.3f} to "
          f"{i['ci95_high']:+.3f}), ahead on {i['ahead']} of {i['images']}; wrote {out}")
    for name, c in (report.get("comparisons") or {}).items():
        s, i = c["seed_paired"], c["image_paired"]
        print(f"{name}: {s['mean']:+.3f} dB (95% CI {s['ci95_low']:+.3f} to {s['ci95_high']:+.3f}); per image "
              f"{i['mean']:+.3f} dB, ahead on {i['ahead']} of {i['images']}")


if __name__ == "__main__":
    main()
