"""Stage evaluate: restore every full validation image with every method and score them, at full
size and (when the slice stage wrote them) at the report's protocol size, through the primary link
(``degrade.codec``) and through each extra link of ``degrade.val_links``; with ``evaluate.video.dir``
set, also on real clips sent over video links (``eval.json`` ``video``, the teacher's rows from the
teacher_video stage)."""

import argparse
import json
from pathlib import Path

from sharpkd import stage
from sharpkd.evaluation.classical import tune_unsharp
from sharpkd.evaluation.evaluate import evaluate, grid, settings, summary, write_outputs
from sharpkd.evaluation.figures import format_scores_table, save_grid, write_scores_csv
from sharpkd.files import atomic_dir, safetensors_metadata, write_json
from sharpkd.evaluation.video_links import (clip_files, eval_summary, format_link_table, merge_method, score_clips,
                                            settings_record)
from sharpkd.errors import SharpkdError
from sharpkd.inference.tiled import prepare, run_many, run_model
from sharpkd.nets.cost import model_cost
from sharpkd.data.degrade import link_list, link_name, link_params, link_split, parse_link, val_links
from sharpkd.nets.students import load_student
from sharpkd.data.shards import read_split, split_names


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--slices", required=True)
    ap.add_argument("--degraded", required=True)
    ap.add_argument("--links", required=True, help="validation images through each extra link (degrade stage)")
    ap.add_argument("--teacher", required=True, help="teacher output shards")
    ap.add_argument("--teacher-links", required=True, help="teacher outputs on the extra link sets (teacher stage)")
    ap.add_argument("--teacher-model", required=True, help="teacher weights (their metadata names the teacher)")
    ap.add_argument("--model", required=True, help="student weights")
    ap.add_argument("--teacher-video", required=True, help="the teacher's scores on the video set (teacher_video stage)")
    ap.add_argument("--metrics", required=True, help="summary JSON: the declared metrics (committed)")
    ap.add_argument("--settings", required=True, help="how the metrics were measured (settings, not metrics)")
    ap.add_argument("--scores", required=True, help="per-image CSV (committed)")
    ap.add_argument("--grid", required=True, help="comparison grid PNG")
    ap.add_argument("--images", required=True, help="folder for restored images")
    args = ap.parse_args()
    p = stage.load_params("evaluate")
    degrade_p = stage.load_params("degrade")
    scale, link = degrade_p["scale"], link_params(degrade_p)
    primary, extra = link_name(**link), val_links(degrade_p)
    device = stage.resolve_device(p["device"])

    train_gt = read_split(args.slices, "train")
    train_deg = read_split(args.degraded, "train", list(train_gt))
    unsharp = tune_unsharp(((train_deg[n], train_gt[n]) for n in train_gt), p["unsharp_radii"], p["unsharp_amounts"])
    del train_gt, train_deg
    student, meta = load_student(args.model, device=device)
    prepare(student, device)
    teacher_splits = set(split_names(args.teacher))
    link_teacher_splits = set(split_names(args.teacher_links))

    def score_split(split, spec=None):
        """Score validation split ``split`` through the primary link, or through extra link ``spec``
        (its degraded images and teacher outputs from the link folders, its baselines from the same
        received frame)."""
        gt = read_split(args.slices, split)
        names = list(gt)
        if spec is None:
            shard, deg_dir, t_dir, t_splits, lk = split, args.degraded, args.teacher, teacher_splits, link
        else:
            shard, deg_dir, t_dir, t_splits, lk = (link_split(split, spec), args.links, args.teacher_links,
                                                   link_teacher_splits, parse_link(spec))
        degraded = read_split(deg_dir, shard, names)
        networks = {"teacher": list(read_split(t_dir, shard, names).values())}
        if f"as_is_{shard}" in t_splits:
            networks = {"teacher_as_is": list(read_split(t_dir, f"as_is_{shard}", names).values())} | networks
        networks["student"] = run_many(student, degraded.values(), device=device, desc=f"student, {shard}")
        rows, outputs = evaluate(names, list(gt.values()), list(degraded.values()), networks, scale=scale,
                                 unsharp=unsharp, link=lk)
        rows = [r | {"link": spec or primary} for r in rows]
        result = summary(rows)
        h, w = next(iter(gt.values())).shape[:2]
        print(f"{split}: {len(names)} images" + (f" at {w}x{h}" if split == "val_report" else "")
              + f", link {spec or primary}" + (" (primary)" if spec is None else ""))
        print(format_scores_table(result["methods"]))
        return gt, rows, outputs, result, f"{w}x{h}"

    gt, rows, outputs, metrics, _ = score_split("val_full")
    with atomic_dir(args.images) as tmp:
        write_outputs(outputs, tmp)
    save_grid(args.grid, grid(outputs, gt, p["grid_images"]))
    sizes = {f"{g.shape[1]}x{g.shape[0]}" for g in gt.values()}
    del outputs
    report_size = None
    if "val_report" in split_names(args.slices):
        _, rrows, _, rmetrics, report_size = score_split("val_report")
        metrics["report_protocol"] = {k: rmetrics[k] for k in ("methods", "student_gain_over_input")}
        rows += [r | {"image": f"{report_size}/{r['image']}"} for r in rrows]
    for spec in extra:  # every method on each extra link set, at every validation scale
        _, lrows, _, lmetrics, _ = score_split("val_full", spec)
        metrics.setdefault("links", {})[spec] = {k: lmetrics[k] for k in ("methods", "student_gain_over_input")}
        rows += lrows
        if report_size:
            _, lrows, _, lmetrics, _ = score_split("val_report", spec)
            metrics["links"][spec]["report_protocol"] = {k: lmetrics[k] for k in ("methods", "student_gain_over_input")}
            rows += [r | {"image": f"{report_size}/{r['image']}"} for r in lrows]
    metrics["student"] = model_cost(student)
    teacher = safetensors_metadata(args.teacher_model)
    info = settings(scale=scale, unsharp=unsharp, sizes=sizes, student_arch=meta.get("arch", "?"),
                    teacher={"arch": teacher.get("arch"), "kind": teacher.get("kind")}, report_size=report_size,
                    link=link, val_links=extra, train_links=link_list(degrade_p.get("train_links"), "train_links", video=True))
    video = p["video"]
    if video["dir"]:
        vmetrics, info["video"] = score_video(video, args.teacher_video, scale, unsharp,
                                              lambda rgb: run_model(student, rgb, device=device))
        metrics["video"] = vmetrics
    write_scores_csv(args.scores, rows)
    write_json(args.settings, info)
    write_json(args.metrics, metrics)


def score_video(video: dict, teacher_video: str, scale: float, unsharp: tuple, student) -> tuple[dict, dict]:
    """(eval.json ``video``, eval_settings.json ``video``): received, Lanczos, unsharp and the student
    on the clips of ``evaluate.video.dir``, the teacher's rows merged from ``teacher_video``."""
    files = clip_files(video["dir"])
    try:
        teacher = json.loads(Path(teacher_video).read_text())["video"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SharpkdError(f"{teacher_video}: not a teacher_video stage output ({exc}); run dvc repro teacher_video") \
            from None
    if not teacher or teacher.get("dir") != video["dir"] or teacher.get("scale") != scale:
        raise SharpkdError(f"{teacher_video} was not measured on evaluate.video.dir {video['dir']!r} at degrade.scale "
                           f"{scale}: run dvc repro teacher_video")
    result = score_clips(files, video["links"], frames=video["frames"], start=video["start"], scale=scale,
                         methods={"student": student}, unsharp=unsharp, log=print)
    result = merge_method(result, teacher, "teacher", teacher_video)
    summary = eval_summary(result)
    for spec, link in summary["links"].items():
        print(format_link_table(spec, link["mean"], summary["n_clips"], summary["frames_per_clip"]))
    return summary, settings_record(result, dir=video["dir"], scale=scale, links=list(result["mean"]),
                                    frames=video["frames"], start=video["start"], unsharp=unsharp,
                                    teacher_from=teacher_video)


if __name__ == "__main__":
    stage.main(run)
