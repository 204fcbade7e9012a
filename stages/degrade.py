"""Stage degrade: bilinear down to `scale`, optionally a link's codec, bilinear back up, on every split."""

import argparse

from sharpkd import stage
from sharpkd.data import degrade_all
from sharpkd.degrade import link_params
from sharpkd.fsutil import atomic_dir
from sharpkd.shards import read_split, split_names, write_split


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--slices", required=True, help="folder written by the slice stage")
    ap.add_argument("--out", required=True, help="folder for the degraded shards")
    args = ap.parse_args()
    p = stage.load_params("degrade")
    link = link_params(p)
    with atomic_dir(args.out) as tmp:
        for split in split_names(args.slices):
            write_split(tmp, split, degrade_all(read_split(args.slices, split), p["scale"], **link))
    print(f"degrade: scale {p['scale']}, codec {link['codec']}")


if __name__ == "__main__":
    stage.main(run)
