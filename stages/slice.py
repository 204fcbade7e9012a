"""Stage slice: split source images into train/validation (by source, seeded) and crop them."""

import argparse

from sharpkd import stage
from sharpkd.data import slice_image, split_sources
from sharpkd.errors import SharpkdError
from sharpkd.fsutil import atomic_dir, write_json
from sharpkd.shards import read_split, write_split


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", required=True, help="folder written by the resize stage")
    ap.add_argument("--out", required=True, help="folder for train/val crop shards and full validation images")
    ap.add_argument("--split", required=True, help="JSON record of the split (committed)")
    args = ap.parse_args()
    p = stage.load_params("slice")
    images = read_split(args.images, "images")
    crops: dict[str, dict] = {"train": {}, "val": {}}
    skipped = {}
    usable = {}
    for name, img in images.items():
        try:
            usable[name] = slice_image(name, img, p["rows"], p["cols"], p["min_size"])
        except SharpkdError as exc:
            print(f"warning: skipped {exc}")
            skipped[name] = str(exc)
    split = split_sources(list(usable), p["val_fraction"], p["seed"], p["group_pattern"])
    for side in ("train", "val"):
        for name in getattr(split, side):
            crops[side].update(usable[name])
    with atomic_dir(args.out) as tmp:
        write_split(tmp, "train", crops["train"])
        write_split(tmp, "val", crops["val"])
        write_split(tmp, "val_full", {n: images[n] for n in split.val})
    record = split.as_dict() | {"skipped": skipped, "n_skipped": len(skipped),
                                "n_train_crops": len(crops["train"]), "n_val_crops": len(crops["val"])}
    write_json(args.split, record)
    print(f"slice: {len(split.train)} train / {len(split.val)} val source images, "
          f"{len(crops['train'])} / {len(crops['val'])} crops, {len(skipped)} skipped")


if __name__ == "__main__":
    stage.main(run)
