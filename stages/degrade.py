"""Stage degrade: bilinear down to `scale`, optionally a link's codec, bilinear back up, on every split.

Training crops go through the ``codec`` link, or each through one link drawn from
``train_links`` (seeded by ``seed`` and the crop's name; a video link ``h264v:...`` codes the crop
as one frame of a seeded moving sequence, sharpkd/data/video_link.py); the validation splits go through the
``codec`` link (the primary set) and, as extra validation sets, through each of ``val_links``.
Images are read, degraded and written one at a time, so memory does not grow with their number.
"""

import argparse
from collections import Counter
from contextlib import ExitStack

from sharpkd import stage
from sharpkd.data.degrade import degrade, link_list, link_name, link_params, link_split, parse_link, train_assignment, val_links
from sharpkd.files import atomic_dir, write_json
from sharpkd.data.shards import ShardWriter, SplitReader, split_names
from sharpkd.data.video_link import degrade_crop, video_settings


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--slices", required=True, help="folder written by the slice stage")
    ap.add_argument("--out", required=True, help="folder for the degraded shards")
    ap.add_argument("--links-out", required=True, help="folder for the validation images through each of val_links")
    ap.add_argument("--provenance", required=True, help="JSON record: the link of every training crop")
    args = ap.parse_args()
    p = stage.load_params("degrade")
    link = link_params(p)
    primary = link_name(**link)
    extra = val_links(p)
    mixture = link_list(p.get("train_links"), "train_links", video=True)
    splits = split_names(args.slices)
    assignment = {}
    with atomic_dir(args.out) as tmp:
        for split in splits:
            images = SplitReader(args.slices, split)
            if split == "train":
                assignment = train_assignment(images.names, p)
            with ShardWriter(tmp, split) as shards:
                for name, img in images:
                    if split == "train" and mixture:  # one link per crop, drawn from train_links
                        shards.add(name, degrade_crop(img, assignment[name], p["scale"], p.get("seed", 0), name))
                    else:  # the primary link: with train_links [] the training crops' bytes are as before
                        shards.add(name, degrade(img, p["scale"], **link))
    manifest = {}
    with atomic_dir(args.links_out) as tmp:
        for split in (s for s in splits if s != "train"):
            if not extra:
                continue
            with ExitStack() as stack:  # one writer per link, each image read once
                writers = {spec: stack.enter_context(ShardWriter(tmp, link_split(split, spec))) for spec in extra}
                for name, img in SplitReader(args.slices, split):
                    for spec, shards in writers.items():
                        shards.add(name, degrade(img, p["scale"], **parse_link(spec)))
            for spec in extra:
                manifest.setdefault(spec, {})[split] = link_split(split, spec)
        write_json(tmp / "links.json", {"scale": p["scale"], "val_links": manifest})
    counts = Counter(assignment.values())
    write_json(args.provenance, {
        "scale": p["scale"], "primary_link": primary, "train_links": mixture, "seed": p.get("seed", 0),
        "train_counts": dict(sorted(counts.items())), "train_crops": assignment, "val_links": extra,
    } | video_settings(mixture))
    mix = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
    print(f"degrade: scale {p['scale']}, codec {link['codec']} ({primary}); training crops: {mix}"
          + (f"; extra validation sets: {', '.join(extra)}" if extra else ""))


if __name__ == "__main__":
    stage.main(run)
