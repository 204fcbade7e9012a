"""Stage teacher: build or load the teacher, adapt it to the degradation, gate it, run it on every split."""

import argparse

from sharpkd import stage
from sharpkd.fsutil import atomic_dir, write_json
from sharpkd.shards import read_split, write_split
from sharpkd.teacher import adapt, build_teacher, describe, infer, save_teacher
from sharpkd.teacher_report import teacher_report

SPLITS = ("train", "val", "val_full")


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

    gt = {s: read_split(args.slices, s) for s in SPLITS}
    deg = {s: read_split(args.degraded, s, list(gt[s])) for s in SPLITS}
    val_names = list(gt["val_full"])
    val_deg, val_gt = [deg["val_full"][n] for n in val_names], [gt["val_full"][n] for n in val_names]

    def run_teacher(model, images):
        return infer(model, images, tile=p["tile"], overlap=p["overlap"], device=device)

    model = build_teacher(p)
    before = run_teacher(model, val_deg)
    a = p["adapt"]
    if a["steps"] > 0:
        pairs = [(deg["train"][n], gt["train"][n]) for n in gt["train"]]
        adapt(model, pairs, steps=a["steps"], lr=a["lr"], patch=a["patch"], batch=a["batch"], seed=a["seed"],
              device=device, state_path=args.state, checkpoint_every=a.get("checkpoint_every", 50))
    after = run_teacher(model, val_deg) if a["steps"] > 0 else before

    report = teacher_report(val_gt, val_deg, before, after, scale=scale, adapted=a["steps"] > 0,
                            allow_worse=p["allow_worse_than_input"])
    report["teacher"] = describe(model) | {"kind": p["kind"], "adapt": a, "device": device}

    with atomic_dir(args.out) as tmp:
        for split in SPLITS:
            names = list(gt[split])
            outs = after if split == "val_full" else run_teacher(model, [deg[split][n] for n in names])
            write_split(tmp, split, dict(zip(names, outs)))
    save_teacher(model, args.model, p)
    write_json(args.metrics, report)
    t = report["teacher_adapted" if a["steps"] > 0 else "teacher_as_is"]
    print(f"teacher: {report['teacher']['arch']} val PSNR {t['psnr']:.3f} dB "
          f"({report['gain_over_input_db']:+.3f} dB over the degraded input, "
          f"{report['gain_over_best_classical_db']:+.3f} dB over {report['best_classical']['method']})")


if __name__ == "__main__":
    stage.main(run)
