"""Stage slice: split source images into train/validation (by source, seeded), crop the training
images, and keep the validation images whole (plus, with ``report_size``, resized to the report's
protocol).

Crops are planned from the image sizes in the shard headers, then cut and written one at a time
in name order, so memory does not grow with the number of images.
"""

import argparse

from sharpkd import stage
from sharpkd.data.prepare import crop_boxes, report_size, resize_image, split_sources
from sharpkd.errors import SharpkdError
from sharpkd.files import atomic_dir, write_json
from sharpkd.data.shards import ShardWriter, SplitReader


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", required=True, help="folder written by the resize stage")
    ap.add_argument("--out", required=True, help="folder for training crop shards and validation images")
    ap.add_argument("--split", required=True, help="JSON record of the split (committed)")
    args = ap.parse_args()
    p = stage.load_params("slice")
    size = report_size(p.get("report_size"))
    crop = (int(p.get("crop_height") or 0), int(p.get("crop_width") or 0))
    if any(crop) and min(crop) < p["min_size"]:
        raise SharpkdError(f"slice.crop_height/crop_width ({crop[1]}x{crop[0]}) must be at least slice.min_size "
                           f"({p['min_size']}), or both 0 for grid cells")
    images = SplitReader(args.images, "images")
    skipped = {}
    usable = {}  # name -> {crop name: box}
    for name in images.names:
        h, w = images.shape(name)[:2]
        try:
            usable[name] = crop_boxes(name, h, w, p["rows"], p["cols"], p["min_size"], *crop)
        except SharpkdError as exc:
            print(f"warning: skipped {exc}")
            skipped[name] = str(exc)
    split = split_sources(list(usable), p["val_fraction"], p["seed"], p["group_pattern"])
    train = sorted((key, name, box) for name in split.train for key, box in usable[name].items())
    with atomic_dir(args.out) as tmp:
        with ShardWriter(tmp, "train") as shards:
            source, img = None, None
            for key, name, (t, l, b, r) in train:
                if name != source:
                    source, img = name, images.get(name)
                shards.add(key, img[t:b, l:r])
        with ShardWriter(tmp, "val_full") as shards:
            for n in split.val:
                shards.add(n, images.get(n))
        if size:
            with ShardWriter(tmp, "val_report") as shards:
                for n in split.val:
                    shards.add(n, resize_image(images.get(n), "fixed", *size))
    record = split.as_dict() | {"skipped": skipped, "n_skipped": len(skipped), "n_train_crops": len(train),
                                "crop": {"rows": p["rows"], "cols": p["cols"], "height": crop[0], "width": crop[1]},
                                "val_sizes": sorted({f"{images.shape(n)[1]}x{images.shape(n)[0]}" for n in split.val}),
                                "report_size": f"{size[0]}x{size[1]}" if size else None}
    write_json(args.split, record)
    print(f"slice: {len(split.train)} train / {len(split.val)} val source images, {len(train)} training crops, "
          f"{len(skipped)} skipped" + (f", validation also at {size[0]}x{size[1]}" if size else ""))


if __name__ == "__main__":
    stage.main(run)
