"""Stage resize: decode every downloaded image to RGB and resize it (the report: 464x256)."""

import argparse

from tqdm import tqdm

from sharpkd import stage
from sharpkd.data.prepare import resize_image
from sharpkd.files import atomic_dir
from sharpkd.images import iter_image_files, load_rgb
from sharpkd.data.shards import write_split


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--raw", required=True, help="folder written by the download stage")
    ap.add_argument("--out", required=True, help="folder for the image shards")
    args = ap.parse_args()
    p = stage.load_params("resize")
    images = {}
    for path in tqdm(iter_image_files(args.raw), desc="resize", unit="img"):
        images[path.name] = resize_image(load_rgb(path), p["mode"], p["width"], p["height"])
    with atomic_dir(args.out) as tmp:
        write_split(tmp, "images", images)
    print(f"resize: {len(images)} images ({p['mode']})")


if __name__ == "__main__":
    stage.main(run)
