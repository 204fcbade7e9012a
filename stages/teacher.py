"""Stage teacher: build or load the teacher, adapt it to the degradation, gate it, run it on every split."""

import argparse

from sharpkd import stage
from sharpkd.fsutil import atomic_dir, write_json
from sharpkd.shards import read_split, split_names, write_split
from sharpkd.teacher import adapt, build_teacher, describe, infer, save_teacher
from sharpkd.teacher_report import teacher_report

# Validation scales, scored before and after adaptation: full size (the gate) and, when the
# slice stage wrote it, the report's protocol (validation images resized to slice.report_size).
VAL_SPLITS = ("val_full", "val_report")


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--slices", required=True, help="ground-truth shards (slice stage)")
    ap.add_argument("--degraded", required=True, help="degraded shards (degrade stage)")
    ap.add_argument("--out", required=True, help="folder for the teacher's output shards")
    ap.add_argument("--model", required=True, help="teacher weights to write (.safetensors)")
    ap.add_argument("--metrics", required=True, help="teacher metrics JSON")
    ap.add_argument("--state", required=True, help="resume checkpoint for adaptation")
    args = ap.parse_args()
    p = stage.load_params("teacher")
    scale = stage.load_params("degrade")["scale"]
    device = stage.resolve_device(p["device"])

    present = set(split_names(args.slices))
    val_splits = [s for s in VAL_SPLITS if s in present]
    gt = {s: read_split(args.slices, s) for s in ["train", *val_splits]}
    deg = {s: read_split(args.degraded, s, list(gt[s])) for s in gt}

    def run_teacher(model, split, desc):
        return infer(model, [deg[split][n] for n in gt[split]], tile=p["tile"], overlap=p["overlap"],
                     device=device, desc=desc)

    model = build_teacher(p)
    a = p["adapt"]
    adapted = a["steps"] > 0
    before = {s: run_teacher(model, s, f"teacher as is, {s}") for s in val_splits}
    if adapted:
        pairs = [(deg["train"][n], gt["train"][n]) for n in gt["train"]]
        adapt(model, pairs, steps=a["steps"], lr=a["lr"], patch=a["patch"], batch=a["batch"], seed=a["seed"],
              device=device, state_path=args.state, checkpoint_every=a.get("checkpoint_every", 50))
    after = {s: run_teacher(model, s, f"teacher adapted, {s}") for s in val_splits} if adapted else before

    def report_for(split, gate):
        return teacher_report([gt[split][n] for n in gt[split]], [deg[split][n] for n in gt[split]],
                              before[split], after[split], scale=scale, adapted=adapted,
                              allow_worse=p["allow_worse_than_input"] or not gate)

    report = report_for("val_full", gate=True)
    if "val_report" in val_splits:
        h, w = next(iter(gt["val_report"].values())).shape[:2]
        report["report_protocol"] = {"size": f"{w}x{h}"} | report_for("val_report", gate=False)
    report["teacher"] = describe(model) | {"kind": p["kind"], "adapt": a, "device": device}

    with atomic_dir(args.out) as tmp:
        write_split(tmp, "train", dict(zip(gt["train"], run_teacher(model, "train", "teacher, training crops"))))
        for split in val_splits:
            write_split(tmp, split, dict(zip(gt[split], after[split])))
    save_teacher(model, args.model, p)
    write_json(args.metrics, report)
    t = report["teacher_adapted" if adapted else "teacher_as_is"]
    print(f"teacher: {report['teacher']['arch']} val PSNR {t['psnr']:.3f} dB "
          f"({report['gain_over_input_db']:+.3f} dB over the degraded input, "
          f"{report['gain_over_best_classical_db']:+.3f} dB over {report['best_classical']['method']})")


if __name__ == "__main__":
    stage.main(run)
