"""Stage evaluate: restore every full validation image with every method and score them."""

import argparse

from sharpkd import stage
from sharpkd.evaluate import evaluate, grid, restore, summary_json, write_outputs
from sharpkd.classical import tune_unsharp
from sharpkd.fsutil import atomic_dir, write_json
from sharpkd.models import load_student
from sharpkd.report import format_scores_table, save_grid, write_scores_csv
from sharpkd.shards import read_split


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--slices", required=True)
    ap.add_argument("--degraded", required=True)
    ap.add_argument("--teacher", required=True, help="teacher output shards")
    ap.add_argument("--model", required=True, help="student weights")
    ap.add_argument("--metrics", required=True, help="summary JSON (committed)")
    ap.add_argument("--scores", required=True, help="per-image CSV (committed)")
    ap.add_argument("--grid", required=True, help="comparison grid PNG")
    ap.add_argument("--images", required=True, help="folder for restored images")
    args = ap.parse_args()
    p = stage.load_params("evaluate")
    scale = stage.load_params("degrade")["scale"]
    device = stage.resolve_device(stage.load_params("train")["device"])

    gt = read_split(args.slices, "val_full")
    names = list(gt)
    degraded = read_split(args.degraded, "val_full", names)
    teacher = read_split(args.teacher, "val_full", names)
    train_gt = read_split(args.slices, "train")
    train_deg = read_split(args.degraded, "train", list(train_gt))
    unsharp = tune_unsharp(((train_deg[n], train_gt[n]) for n in train_gt), p["unsharp_radii"], p["unsharp_amounts"])

    model, meta = load_student(args.model, device=device)
    student = restore(model, [degraded[n] for n in names], device=device)
    rows, outputs = evaluate(names, [gt[n] for n in names], [degraded[n] for n in names],
                             [teacher[n] for n in names], student, scale=scale, unsharp=unsharp)
    print(format_scores_table(rows))
    summary = summary_json(rows, unsharp=unsharp, model=model, arch=meta.get("arch", "?"), scale=scale)
    print(format_scores_table(summary["methods"]))
    with atomic_dir(args.images) as tmp:
        write_outputs(outputs, tmp)
    save_grid(args.grid, grid(outputs, gt, p["grid_images"]))
    write_scores_csv(args.scores, rows)
    write_json(args.metrics, summary)


if __name__ == "__main__":
    stage.main(run)
