"""Stage resize: decode every downloaded image to RGB and resize it (the report: 464x256).

Images are read, resized and written one at a time, in name order, so memory does not grow with
their number.  Images are keyed by file name: of several files with one name (in different
folders) the last in path order is kept, and every file is decoded.
"""

import argparse

from tqdm import tqdm

from sharpkd import stage
from sharpkd.data.prepare import resize_image
from sharpkd.files import atomic_dir
from sharpkd.images import iter_image_files, load_rgb
from sharpkd.data.shards import ShardWriter


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--raw", required=True, help="folder written by the download stage")
    ap.add_argument("--out", required=True, help="folder for the image shards")
    args = ap.parse_args()
    p = stage.load_params("resize")
    files = iter_image_files(args.raw)
    by_name = {path.name: path for path in files}  # the last file of a name wins
    shadowed = [path for path in files if by_name[path.name] != path]
    with atomic_dir(args.out) as tmp, ShardWriter(tmp, "images") as shards:
        for path in shadowed:  # decoded, so an unreadable one fails the stage as any other does
            load_rgb(path)
        for name in tqdm(sorted(by_name), desc="resize", unit="img"):
            shards.add(name, resize_image(load_rgb(by_name[name]), p["mode"], p["width"], p["height"]))
    print(f"resize: {len(by_name)} images ({p['mode']})")


if __name__ == "__main__":
    stage.main(run)
