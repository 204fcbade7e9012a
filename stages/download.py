"""Stage download: gather the source photographs (sample | dir | url) into one folder."""

import argparse

from sharpkd import stage
from sharpkd.data.sources import ArchiveLimits, collect
from sharpkd.files import write_json


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, help="folder for the usable image files")
    ap.add_argument("--provenance", required=True, help="provenance JSON (file, source, size, sha256)")
    args = ap.parse_args()
    p = stage.load_params("download")
    prov = collect(p["source"], args.out, dir=p.get("dir") or None, url=p.get("url") or None,
                   sha256=p.get("sha256") or None, limits=ArchiveLimits.from_params(p))
    write_json(args.provenance, prov)
    print(f"download: {prov['count']} images from {p['source']}, {prov['skipped_count']} skipped")


if __name__ == "__main__":
    stage.main(run)
