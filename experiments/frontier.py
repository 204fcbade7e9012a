#!/usr/bin/env python3
"""Quality per millisecond of candidate students on the photo pool, outside the pipeline.

The issue's protocol for choosing a student before a full pipeline run: train one student
(:func:`sharpkd.training.loop.fit`, the pipeline's loop; loss ``mean (S - G)^2``, no teacher) on random
64x64 patches of the photo pool's *training* photos (``metrics/photos/split.json``), degraded
as the link does -- through one link per photo drawn from ``--links`` (seeded by the photo's
name), so ``--links none`` is the report's degradation and ``none,h264:18,h264:23,h264:28`` a
clean-and-compressed mixture -- then score its folded (shipped) form whole on the 31 held-out
validation photos at full size through every ``--val-links`` set (PSNR, RGB, 255), after each
epoch (the PSNR-vs-steps curve), and time it on a 1920x1080 frame with ``sharpkd bench``'s
code (runtime ``auto``).  One JSON per run in ``--out`` (default ``metrics/photos/frontier/``);
``--plot`` draws every saved run, PSNR against ms per frame (log x).  The trained weights go to
``.sharpkd/frontier/`` (git-ignored).

    .venv/bin/python experiments/frontier.py --name patch-c16b1 --config '{"channels":16,"blocks":1,"unshuffle":4,"head":"patch"}'
    .venv/bin/python experiments/frontier.py --plot

Degraded photos are cached in ``.sharpkd/frontier-cache/`` (git-ignored; delete it to rebuild).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sharpkd.data.degrade import degrade, draw_link, parse_link  # noqa: E402


def load_set(photos: Path, names: list[str], links: list[str], seed: int, cache: Path, desc: str):
    """``(degraded, gt)`` lists: each photo through its drawn link (cached as .npy per photo and link)."""
    from tqdm import tqdm

    from sharpkd.images import load_rgb

    cache.mkdir(parents=True, exist_ok=True)
    deg, gts = [], []
    for name in tqdm(names, desc=desc, unit="photo"):
        link = links[0] if len(links) == 1 else draw_link(name, links, seed)  # as degrade.train_links draws
        gt = load_rgb(photos / name)
        f = cache / f"{Path(name).stem}.{link.replace(':', '-')}.npy"
        if f.exists():
            d = np.load(f)
        else:
            d = degrade(gt, 0.6, **parse_link(link))
            tmp = f.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, d)
            tmp.replace(f)
        deg.append(d)
        gts.append(gt)
    return deg, gts


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    from sharpkd.evaluation.metrics import psnr as _psnr

    return float(_psnr(a, b))


def run(args: argparse.Namespace) -> dict:
    import torch

    from sharpkd.inference.bench import benchmark
    from sharpkd.nets.cost import model_cost
    from sharpkd.training.distill import inference_copy
    from sharpkd.inference.tiled import run_model
    from sharpkd.nets.students import build_student, save_student
    from sharpkd.inference.runtimes import compile_for
    from sharpkd.training.loop import Pairs, fit

    torch.set_num_threads(args.threads)
    split = json.loads((ROOT / "metrics/photos/split.json").read_text())
    photos, cache = Path(args.photos), ROOT / ".sharpkd/frontier-cache"
    train_links = args.links.split(",")
    val_links = args.val_links.split(",")
    deg, gt = load_set(photos, split["train"], train_links, args.seed, cache, "training photos")
    val = {link: load_set(photos, split["val"], [link], args.seed, cache, f"validation {link}") for link in val_links}
    inputs = {link: float(np.mean([psnr(d, g) for d, g in zip(*val[link])])) for link in val_links}

    def score(model, links) -> dict:
        folded = compile_for(inference_copy(model), "auto")
        return {link: float(np.mean([psnr(run_model(folded, d), g) for d, g in zip(*val[link])])) for link in links}

    def validate(model) -> dict:
        return {"val_psnr": score(model, [val_links[0]])[val_links[0]]}

    weights = ROOT / ".sharpkd/frontier" / f"{args.name}.safetensors"  # git-ignored: the JSON is the result
    if args.score:  # score weights this tool saved before (same arguments), without training again
        from sharpkd.nets.students import load_student

        model, _ = load_student(weights)
        best, history, train_s = {}, [], None
    else:
        torch.manual_seed(args.seed)
        model = build_student(args.arch, **json.loads(args.config))
        l2 = torch.nn.functional.mse_loss
        t0 = time.perf_counter()
        model, best, history = fit(model, Pairs(deg, gt), lambda out, y, t: (l2(out, y), {}), lr=args.lr,
                                   epochs=args.epochs, steps_per_epoch=args.steps // args.epochs, batch=16,
                                   patch=64, seed=args.seed, validate=validate, desc=args.name)
        train_s = round(time.perf_counter() - t0)
    final = score(model, val_links)
    folded = inference_copy(model)
    timing = benchmark(folded, 1080, 1920, runs=args.runs, warmup=2, runtime="auto")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights.parent.mkdir(parents=True, exist_ok=True)
    if not args.score:
        save_student(model, weights, {"frontier": args.name})
    result = {"name": args.name, "arch": args.arch, "config": json.loads(args.config), "train_links": train_links,
              "steps": args.steps, "epochs": args.epochs, "lr": args.lr, "seed": args.seed,
              "psnr": final, "input_psnr": inputs, "gain": {k: final[k] - inputs[k] for k in final},
              "curve": [{"step": r["step"], "val_psnr": r["val_psnr"]} for r in history],
              "best_epoch": best.get("epoch"), "ms_per_1080p": timing["median_ms"], "fps_1080p": timing["fps"],
              "train_threads": args.threads, "train_seconds": train_s} | model_cost(folded)
    from sharpkd.files import write_json
    from sharpkd.inference.bench import machine
    from sharpkd.provenance import record

    result |= {"machine": machine("cpu")} | record()

    write_json(out / f"{args.name}.json", result)
    return result


def retime(folder: Path, runs: int, passes: int = 3) -> None:
    """Time every saved run's weights again (``ms_per_1080p``, ``fps_1080p``) in ``passes``
    interleaved passes over all runs, keeping each run's fastest median: on a VM whose speed drifts
    within minutes, interleaving spreads the drift over every run alike."""
    from sharpkd.inference.bench import benchmark, machine
    from sharpkd.files import write_json
    from sharpkd.nets.students import load_student
    from sharpkd.provenance import record

    paths = sorted(folder.glob("*.json"))
    models = {p: load_student(ROOT / ".sharpkd/frontier" / f"{json.loads(p.read_text())['name']}.safetensors")[0]
              for p in paths}
    best: dict[Path, float] = {}
    for _ in range(passes):
        for path, model in models.items():
            ms = benchmark(model, 1080, 1920, runs=runs, warmup=2, runtime="auto")["median_ms"]
            best[path] = min(ms, best.get(path, ms))
    for path, ms in best.items():
        # the timing's machine and command replace the training run's
        result = json.loads(path.read_text()) | {"ms_per_1080p": ms, "fps_1080p": 1000.0 / ms, "timing_passes": passes,
                                                 "machine": machine("cpu")} | record()
        write_json(path, result)
        print(f"{result['name']}: {ms:.1f} ms, {1000.0 / ms:.1f} fps (fastest median of {passes} passes)")


def plot(folder: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    if not runs:
        raise SystemExit(f"error: no runs in {folder}")
    links = sorted(runs[0]["psnr"], key=lambda k: (k != "none", k))  # clean first
    # the pipeline's rows for the clean set (metrics/photos/eval.json), as reference lines
    ev = json.loads((folder.parent / "eval.json").read_text()) if (folder.parent / "eval.json").exists() else {}
    methods = ev.get("methods", {})
    refs = {name: methods[name]["psnr"] - methods["identity"]["psnr"] for name in ("lanczos", "bicubic", "teacher")
            if name in methods and "identity" in methods}
    fig, axes = plt.subplots(1, len(links), figsize=(5.5 * len(links), 4.2), squeeze=False)
    for ax, link in zip(axes[0], links):
        for r in runs:
            if link in r["gain"]:
                ax.scatter(r["ms_per_1080p"], r["gain"][link], s=30)
                ax.annotate(r["name"], (r["ms_per_1080p"], r["gain"][link]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        if link == "none":
            for name, gain in refs.items():
                ax.axhline(gain, ls=":", color={"teacher": "tab:red"}.get(name, "tab:gray"))
                ax.text(0.02, gain, f" {name} (the pipeline's photo-pool run)", fontsize=7, va="bottom",
                        transform=ax.get_yaxis_transform())
        ax.set_xscale("log")
        ax.set_xlabel("ms per 1920x1080 frame (2-core CPU, runtime auto)")
        ax.set_ylabel(f"PSNR gain over the received frame (dB), {link}")
        ax.grid(alpha=0.3)
    fig.suptitle("students on the photo pool (31 full-size validation photos)")
    fig.tight_layout()
    path = folder / "frontier.png"
    fig.savefig(path, dpi=110)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", help="run name (the JSON and weights file names)")
    ap.add_argument("--arch", default="sharp")
    ap.add_argument("--config", default="{}", help="student config, JSON")
    ap.add_argument("--links", default="none", help="training links, comma separated (one drawn per photo)")
    ap.add_argument("--val-links", default="none,h264:23,h264:28", help="validation sets, comma separated")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--epochs", type=int, default=4, help="validation points on the curve")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training (1: two runs side by side)")
    ap.add_argument("--runs", type=int, default=10, help="timed runs of the 1080p benchmark")
    ap.add_argument("--photos", default=str(ROOT.parent / "shared/data/photos"))
    ap.add_argument("--out", default=str(ROOT / "metrics/photos/frontier"))
    ap.add_argument("--score", action="store_true", help="score the weights an earlier run of the same --name saved")
    ap.add_argument("--retime", action="store_true", help="only time every saved run's weights again")
    ap.add_argument("--plot", action="store_true", help="only draw the saved runs into <out>/frontier.png")
    args = ap.parse_args()
    if args.retime:
        retime(Path(args.out), args.runs)
        return
    if args.plot:
        print(plot(Path(args.out)))
        return
    if not args.name:
        ap.error("--name is required to train")
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
