"""Stage evaluate: restore every full validation image with every method and score them, at full
size and (when the slice stage wrote them) at the report's protocol size."""

import argparse

from sharpkd import stage
from sharpkd.evaluate import evaluate, grid, restore, summary_json, write_outputs
from sharpkd.classical import tune_unsharp
from sharpkd.fsutil import atomic_dir, write_json
from sharpkd.models import load_student
from sharpkd.report import format_scores_table, save_grid, write_scores_csv
from sharpkd.shards import read_split, split_names


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

    train_gt = read_split(args.slices, "train")
    train_deg = read_split(args.degraded, "train", list(train_gt))
    unsharp = tune_unsharp(((train_deg[n], train_gt[n]) for n in train_gt), p["unsharp_radii"], p["unsharp_amounts"])
    del train_gt, train_deg
    model, meta = load_student(args.model, device=device)

    def score_split(split):
        gt = read_split(args.slices, split)
        names = list(gt)
        degraded = read_split(args.degraded, split, names)
        teacher = read_split(args.teacher, split, names)
        student = restore(model, [degraded[n] for n in names], device=device)
        rows, outputs = evaluate(names, [gt[n] for n in names], [degraded[n] for n in names],
                                 [teacher[n] for n in names], student, scale=scale, unsharp=unsharp)
        summary = summary_json(rows, unsharp=unsharp, model=model, arch=meta.get("arch", "?"), scale=scale)
        h, w = next(iter(gt.values())).shape[:2]
        print(f"{split}: {len(names)} images" + (f" at {w}x{h}" if split == "val_report" else ""))
        print(format_scores_table(summary["methods"]))
        return gt, rows, outputs, summary, f"{w}x{h}"

    gt, rows, outputs, summary, _ = score_split("val_full")
    with atomic_dir(args.images) as tmp:
        write_outputs(outputs, tmp)
    save_grid(args.grid, grid(outputs, gt, p["grid_images"]))
    del outputs
    summary["sizes"] = sorted({f"{g.shape[1]}x{g.shape[0]}" for g in gt.values()})
    if "val_report" in split_names(args.slices):
        _, rrows, _, rsummary, size = score_split("val_report")
        summary["report_protocol"] = {"size": size, "methods": rsummary["methods"],
                                      "student_gain_over_input": rsummary["student_gain_over_input"]}
        rows += [r | {"image": f"{size}/{r['image']}"} for r in rrows]
    write_scores_csv(args.scores, rows)
    write_json(args.metrics, summary)


if __name__ == "__main__":
    stage.main(run)
