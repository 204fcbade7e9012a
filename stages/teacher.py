"""Stage teacher: build or load the teacher, adapt it to the degradation, gate it, run it on every split
(and on the extra validation sets of ``degrade.val_links``, written apart so the student does not
depend on them).

With ``teacher.nproc`` N > 1 the stage re-launches itself as N processes (as ``torchrun
--standalone --nproc_per_node N`` would); started by ``torchrun`` (several machines) it runs as
one of them, and ``teacher.nproc`` must equal the number started.  Adaptation is data-parallel,
inference is sharded by image index and put back together on rank 0, which writes every output.
"""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from sharpkd import stage
from sharpkd.files import atomic_dir, write_json
from sharpkd.training.gate import lanczos_margins, teacher_gain
from sharpkd.data.degrade import link_name, link_params, parse_link
from sharpkd.evaluation.classical import baseline_outputs
from sharpkd.inference.tiled import SelfEnsemble, prepare, resume_key, run_many
from sharpkd.data.shards import read_split, split_names, write_split
from sharpkd.training.teacher import adapt, build_teacher, describe, save_teacher
from sharpkd.errors import SharpkdError
from sharpkd.training.distributed import broadcast_module, distributed, gather_parts, launch, processes

# Validation scales: full size (the gate) and, when the slice stage wrote it, the report's
# protocol (validation images resized to slice.report_size).
VAL_SPLITS = ("val_full", "val_report")


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--slices", required=True, help="ground-truth shards (slice stage)")
    ap.add_argument("--degraded", required=True, help="degraded shards (degrade stage)")
    ap.add_argument("--links", required=True, help="validation images through each extra link (degrade stage)")
    ap.add_argument("--out", required=True, help="folder for the teacher's output shards")
    ap.add_argument("--links-out", required=True, help="folder for the teacher's outputs on the extra link sets")
    ap.add_argument("--model", required=True, help="teacher weights to write (.safetensors)")
    ap.add_argument("--metrics", required=True, help="teacher metrics JSON (the gate)")
    ap.add_argument("--state-dir", required=True, help="resume state while adapting (not an output; removed at the end)")
    args = ap.parse_args()
    p = stage.load_params("teacher")
    link = stage.load_params("degrade")  # the primary link and scale, which the Lanczos gate rebuilds
    link = {k: link[k] for k in ("scale", "codec", "jpeg_quality", "h264_crf") if k in link}
    nproc = processes(p.get("nproc", 1), "teacher.nproc")
    device = stage.resolve_device(p["device"])
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        launch(nproc, ["-m", "stages.teacher", *sys.argv[1:]])
        return
    with distributed("cpu" if device == "cpu" else None) as (rank, world, device_hint):
        if world != nproc:
            raise SharpkdError(f"teacher.nproc is {nproc} but {world} processes run: set teacher.nproc to the "
                               "number torchrun starts (every machine's together), which the adapted weights depend on")
        teach(args, p, link, device_hint or device, rank, world)


def teach(args, p: dict, link: dict, device: str, rank: int, world: int) -> None:
    """The stage's work in one process of ``world`` (rank 0 writes the outputs)."""
    present = set(split_names(args.slices))
    val_splits = [s for s in VAL_SPLITS if s in present]
    gt = {s: read_split(args.slices, s) for s in ["train", *val_splits]}
    deg = {s: read_split(args.degraded, s, list(gt[s])) for s in gt}
    # the extra validation sets (val_full.h264_23, ...): scored by the evaluate stage, never gated
    deg |= {s: read_split(args.links, s) for s in split_names(args.links)}
    link_splits = [s for s in deg if s not in gt]
    model = build_teacher(p)

    def run_teacher(split, desc, ensemble=False, to_all=False):
        """{name: output} of ``split`` on rank 0 (on every rank with ``to_all``), else None: each
        process runs every ``world``-th image (the x8 self-ensemble's passes with it)."""
        prepare(model, device)
        net = SelfEnsemble(model) if ensemble else model
        settings = dict(tile=p["tile"], overlap=p["overlap"], device=device)
        # each output is kept in the state dir as it is computed: a killed stage resumes there
        resume = Path(args.state_dir) / f"infer-{resume_key(net, **settings)[:16]}"
        mine = run_many(net, deg[split].values(), desc=desc, resume_dir=resume, part=(rank, world),
                        progress=rank == 0, **settings)
        outs = gather_parts(mine, len(deg[split]), to_all=to_all)
        return None if outs is None else dict(zip(deg[split], outs))

    a = p["adapt"]
    adapted = a["steps"] > 0
    shards = {}
    if adapted:
        shards = {f"as_is_{s}": run_teacher(s, f"teacher as is, {s}") for s in val_splits + link_splits}
        pairs = [(deg["train"][n], gt["train"][n]) for n in gt["train"]]
        record = adapt(model, pairs, steps=a["steps"], lr=a["lr"], patch=a["patch"], batch=a["batch"], seed=a["seed"],
                       device=device, state_dir=args.state_dir, checkpoint_every=a.get("checkpoint_every", 50))
        broadcast_module(model)  # every rank infers with rank 0's adapted weights
    # teacher.self_ensemble: every output of the (adapted) teacher is its x8 self-ensemble
    x8 = bool(p.get("self_ensemble", False))
    # the gate's outputs reach every rank, so a teacher that fails it stops every process alike
    full_sets = {"val_full", *(s for s in link_splits if s.startswith("val_full."))}
    shards |= {s: run_teacher(s, f"teacher, {s}", x8, to_all=s in full_sets) for s in val_splits + link_splits}
    gain = teacher_gain(list(gt["val_full"].values()), list(deg["val_full"].values()), list(shards["val_full"].values()),
                        allow_worse=p["allow_worse_than_input"])
    margins = lanczos_gate(args, p, link, gt["val_full"], shards)
    shards["train"] = run_teacher("train", "teacher, training crops", x8)
    if rank != 0:
        return

    on_links = {s for s in shards if s.removeprefix("as_is_") in link_splits}
    with atomic_dir(args.out) as tmp:
        for split, images in shards.items():
            if split not in on_links:
                write_split(tmp, split, images)
    with atomic_dir(args.links_out) as tmp:
        for split in sorted(on_links):
            write_split(tmp, split, shards[split])
        write_json(tmp / "links.json", {"splits": sorted(on_links)})  # never an empty folder
    save_teacher(model, args.model, p)
    d = describe(model)
    metrics = {"gain_over_input_db": round(gain, 4)} | {k: d[k] for k in ("parameters", "macs_per_1080p_frame") if k in d}
    passes = 8 if x8 else 1  # what its outputs cost: forward passes per image, and MACs per 1080p output frame
    metrics["forward_passes_per_output"] = passes
    if "macs_per_1080p_frame" in metrics:
        metrics["macs_per_1080p_output"] = metrics["macs_per_1080p_frame"] * passes
    metrics["gate"] = p.get("gate", "input")
    metrics["over_lanczos_db"] = {k: round(v, 4) for k, v in margins.items()}
    if adapted:
        metrics["adapt_train_l1"] = round(record["train_loss"], 6)
    write_json(args.metrics, metrics)
    for old in Path(args.state_dir).glob("teacher-*.pt"):
        old.unlink()
    for old in Path(args.state_dir).glob("infer-*"):  # the outputs kept for a resume
        shutil.rmtree(old, ignore_errors=True)
    print(f"teacher: {d['arch']}{' adapted' if adapted else ''}, {gain:+.3f} dB over the degraded input "
          f"on {len(gt['val_full'])} validation images")


def lanczos_gate(args, p: dict, link: dict, gts: dict, shards: dict) -> dict[str, float]:
    """The teacher's margin over Lanczos from the transmitted frame on the full validation images of
    every link set (the primary one and each of ``degrade.val_links``); with ``teacher.gate: lanczos``
    a margin that is not positive fails the stage (:func:`sharpkd.training.gate.lanczos_margins`).
    Every process computes it alike, so a failing gate stops them all."""
    links = {link_name(**link_params(link)): "val_full"}
    manifest = json.loads((Path(args.links) / "links.json").read_text()).get("val_links", {})
    links |= {spec: splits["val_full"] for spec, splits in manifest.items() if "val_full" in splits}
    names = list(gts)
    lanczos = {spec: [baseline_outputs(gts[n], link.get("scale", 0.6), methods=["lanczos"], link=parse_link(spec))["lanczos"]
                      for n in names] for spec in links}
    teacher = {spec: [shards[split][n] for n in names] for spec, split in links.items()}
    return lanczos_margins(list(gts.values()), teacher, lanczos, require=p.get("gate", "input") == "lanczos")


if __name__ == "__main__":
    stage.main(run)
