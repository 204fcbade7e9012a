"""Stage train: train the student on (degraded -> ground truth) with the teacher's outputs."""

import argparse
import json
from pathlib import Path

from sharpkd import stage
from sharpkd.nets.card import student_card
from sharpkd.training.distill import TrainData, steps_per_epoch, train_student
from sharpkd.training.distributed import distributed
from sharpkd.files import write_json
from sharpkd.training.losses import needs_teacher_model
from sharpkd.nets.students import save_student
from sharpkd.data.shards import read_split
from sharpkd.training.teacher import load_teacher


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--slices", required=True, help="ground-truth crops and validation images (slice stage)")
    ap.add_argument("--degraded", required=True, help="degraded shards (degrade stage)")
    ap.add_argument("--teacher", required=True, help="teacher output shards (teacher stage)")
    ap.add_argument("--teacher-model", required=True,
                    help="adapted teacher weights (teacher stage); loaded only for train.loss.l2_teacher_zoom")
    ap.add_argument("--model", required=True, help="student weights to write (.safetensors)")
    ap.add_argument("--card", required=True, help="model card JSON to write")
    ap.add_argument("--live", required=True, help="dvclive folder (curves)")
    ap.add_argument("--state-dir", required=True, help="resume state while training (not an output; removed at the end)")
    args = ap.parse_args()
    p = stage.load_params("train")
    profile = stage.load_params("profile")
    scale = float(stage.load_params("degrade")["scale"])

    with distributed() as (rank, world, device_hint):
        device = device_hint or stage.resolve_device(p["device"])
        gt = read_split(args.slices, "train")
        names = list(gt)
        val_gt = read_split(args.slices, "val_full")
        data = TrainData(
            degraded=list(read_split(args.degraded, "train", names).values()),
            gt=list(gt.values()),
            teacher=list(read_split(args.teacher, "train", names).values()),
            val_degraded=list(read_split(args.degraded, "val_full", list(val_gt)).values()),
            val_gt=list(val_gt.values()),
            val_names=list(val_gt),
            teacher_model=load_teacher(args.teacher_model, device=device) if needs_teacher_model(p["loss"]) else None,
            scale=scale,
        )
        live = None
        if rank == 0:
            from dvclive import Live

            live = Live(args.live, save_dvc_exp=False, dvcyaml=None)

        def on_epoch(epoch: int, record: dict) -> None:
            for key, value in record.items():
                if key not in ("epoch", "step"):
                    live.log_metric(key, value)
            live.next_step()

        model, best, _ = train_student(p, data, device=device, state_dir=args.state_dir,
                                       on_epoch=on_epoch if live else None)
        if rank != 0:
            return
        live.end()
        card = student_card(p, model, profile=profile, train_crops=len(names), val_images=len(val_gt), best=best,
                            steps_per_epoch=steps_per_epoch(p, data), processes=world, device=device)
        save_student(model, args.model, {"card": json.dumps(card, sort_keys=True)})
        write_json(args.card, card)
        for pattern in ("student-*.pt", "student_int8-*.pt"):
            for old in Path(args.state_dir).glob(pattern):
                old.unlink()
        print(f"train: best epoch {best['epoch']}: val PSNR {best['val_psnr']:.3f} dB, SSIM {best['val_ssim']:.4f}")


if __name__ == "__main__":
    stage.main(run)
