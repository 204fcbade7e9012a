"""Stage teacher_video: the teacher on the video set of ``evaluate.video`` (real clips sent over
video links), its scores per clip and link for the evaluate stage to merge.  Apart from the teacher
stage, so that the video set never reruns the teacher's adaptation; with ``evaluate.video.dir``
empty it writes ``{"video": null}``."""

import argparse

from sharpkd import stage
from sharpkd.evaluation.video_links import clip_files, link_settings, score_clips
from sharpkd.files import write_json
from sharpkd.inference.tiled import SelfEnsemble, prepare, run_model
from sharpkd.training.teacher import load_teacher


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True, help="teacher weights (teacher stage)")
    ap.add_argument("--metrics", required=True, help="the teacher's video scores (JSON)")
    args = ap.parse_args()
    video = stage.load_params("evaluate")["video"]
    scale = stage.load_params("degrade")["scale"]
    t = stage.load_params("teacher")
    if not video["dir"]:
        write_json(args.metrics, {"video": None})
        print("teacher_video: no video set (evaluate.video.dir is empty)")
        return
    files = clip_files(video["dir"])
    device = stage.resolve_device(t["device"])
    model = prepare(load_teacher(args.model, device=device), device)
    net = SelfEnsemble(model) if t.get("self_ensemble", False) else model

    def teacher(rgb):
        return run_model(net, rgb, tile=t["tile"], overlap=t["overlap"], device=device)

    result = score_clips(files, video["links"], frames=video["frames"], start=video["start"], scale=scale,
                         methods={"teacher": teacher}, log=print)
    settings = link_settings(scale, list(result["mean"]), video["frames"], video["start"])
    settings["teacher"] = {"tile": t["tile"], "overlap": t["overlap"], "self_ensemble": net is not model}
    write_json(args.metrics, {"video": {"dir": video["dir"]} | settings | result})


if __name__ == "__main__":
    stage.main(run)
