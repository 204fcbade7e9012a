"""The data stages stream (one image in memory at a time) and write the bytes of the whole-split
implementation: resize, slice and degrade run as stage scripts on tiny photos and their every
output file is compared with what the reference below writes from the same inputs.

The reference is the in-memory implementation (every image of a split in one dict, each shard
serialised by the safetensors library), kept here as the definition of the expected bytes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from safetensors.numpy import save

from sharpkd.data.degrade import degrade, link_list, link_name, link_params, link_split, parse_link, train_assignment, val_links
from sharpkd.data.prepare import report_size, resize_image, slice_image, split_sources
from sharpkd.data.shards import ShardWriter, SplitReader, read_split, shard_paths, write_split
from sharpkd.errors import SharpkdError
from sharpkd.files import stable_safetensors_bytes, write_json
from sharpkd.images import iter_image_files, load_rgb

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# the reference: whole splits in memory


def ref_write_split(directory, split, images, max_bytes=256 * 1024 * 1024):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    groups, size = [{}], 0
    for name in sorted(images):
        arr = np.ascontiguousarray(images[name])
        if groups[-1] and size + arr.nbytes > max_bytes:
            groups.append({})
            size = 0
        groups[-1][name] = arr
        size += arr.nbytes
    paths = []
    for i, group in enumerate(groups):
        path = directory / f"{split}-{i:03d}.safetensors"
        path.write_bytes(stable_safetensors_bytes(save(group)))
        paths.append(path)
    return paths


def ref_resize(raw, out, p):
    images = {}
    for path in iter_image_files(raw):
        images[path.name] = resize_image(load_rgb(path), p["mode"], p["width"], p["height"])
    ref_write_split(out, "images", images)


def ref_slice(images_dir, out, split_json, p):
    size = report_size(p.get("report_size"))
    crop = (int(p.get("crop_height") or 0), int(p.get("crop_width") or 0))
    images = read_split(images_dir, "images")
    skipped, usable = {}, {}
    for name, img in images.items():
        try:
            usable[name] = slice_image(name, img, p["rows"], p["cols"], p["min_size"], *crop)
        except SharpkdError as exc:
            skipped[name] = str(exc)
    split = split_sources(list(usable), p["val_fraction"], p["seed"], p["group_pattern"])
    train = {k: v for name in split.train for k, v in usable[name].items()}
    ref_write_split(out, "train", train)
    ref_write_split(out, "val_full", {n: images[n] for n in split.val})
    if size:
        ref_write_split(out, "val_report", {n: resize_image(images[n], "fixed", *size) for n in split.val})
    record = split.as_dict() | {"skipped": skipped, "n_skipped": len(skipped), "n_train_crops": len(train),
                                "crop": {"rows": p["rows"], "cols": p["cols"], "height": crop[0], "width": crop[1]},
                                "val_sizes": sorted({f"{images[n].shape[1]}x{images[n].shape[0]}" for n in split.val}),
                                "report_size": f"{size[0]}x{size[1]}" if size else None}
    write_json(split_json, record)


def ref_degrade(slices, out, links_out, provenance, p):
    link = link_params(p)
    extra = val_links(p)
    mixture = link_list(p.get("train_links"), "train_links")
    splits = sorted({f.name.rsplit("-", 1)[0] for f in Path(slices).glob("*-[0-9][0-9][0-9].safetensors")})
    assignment = {}
    for split in splits:
        images = read_split(slices, split)
        if split == "train":
            assignment = train_assignment(images, p)
        if split == "train" and mixture:
            res = {n: degrade(img, p["scale"], **parse_link(assignment[n])) for n, img in images.items()}
        else:
            res = {n: degrade(img, p["scale"], **link) for n, img in images.items()}
        ref_write_split(out, split, res)
    manifest = {}
    Path(links_out).mkdir(parents=True)
    for split in (s for s in splits if s != "train"):
        images = read_split(slices, split)
        for spec in extra:
            name = link_split(split, spec)
            ref_write_split(links_out, name, {n: degrade(v, p["scale"], **parse_link(spec)) for n, v in images.items()})
            manifest.setdefault(spec, {})[split] = name
    write_json(Path(links_out) / "links.json", {"scale": p["scale"], "val_links": manifest})
    counts = Counter(assignment.values())
    write_json(provenance, {
        "scale": p["scale"], "primary_link": link_name(**link), "train_links": mixture, "seed": p.get("seed", 0), "train_counts": dict(sorted(counts.items())),
        "train_crops": assignment, "val_links": extra})


# --------------------------------------------------------------------------------------------


def photos(folder: Path) -> None:
    """Photos of several sizes and modes; one name twice (in two folders), names whose crops sort
    between each other's (``a.png``, ``a.png.jpg``), one too small to slice."""
    rng = np.random.default_rng(0)

    def img(h, w):
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([np.sin(x / (3 + rng.random() * 5)), np.cos(y / 4), (x + y) % 7 / 7], axis=2)
        return np.clip(128 + 90 * base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)

    (folder / "sub").mkdir(parents=True)
    Image.fromarray(img(60, 96)).save(folder / "a.png")
    Image.fromarray(img(62, 90)).save(folder / "a.png.jpg", quality=90)
    Image.fromarray(img(50, 80)).save(folder / "dup.png")
    Image.fromarray(img(58, 100)).save(folder / "sub" / "dup.png")
    Image.fromarray(img(64, 64)[..., 0]).save(folder / "grey.png")
    Image.fromarray(img(10, 12)).save(folder / "tiny.png")
    for i in range(7):
        Image.fromarray(img(48 + 2 * i, 72 + 3 * i)).save(folder / f"GOPR{i % 3:04d}_{i:03d}.png")


CASES = {
    "grid": {"resize": {"mode": "none", "width": 464, "height": 256},
             "slice": {"rows": 2, "cols": 11, "crop_height": 0, "crop_width": 0, "min_size": 4, "val_fraction": 0.3,
                       "seed": 1, "report_size": [40, 24], "group_pattern": r"(GOPR\d+)_\d+"},
             "degrade": {"scale": 0.6, "codec": "none", "jpeg_quality": 75, "h264_crf": 23,
                         "train_links": ["none", "jpeg:60", "h264:30"], "val_links": ["jpeg:50", "h264:28"], "seed": 1}},
    "crops": {"resize": {"mode": "fixed", "width": 64, "height": 48},
              "slice": {"rows": 2, "cols": 3, "crop_height": 16, "crop_width": 24, "min_size": 16, "val_fraction": 0.2,
                        "seed": 0, "report_size": [], "group_pattern": ""},
              "degrade": {"scale": 0.5, "codec": "jpeg", "jpeg_quality": 70, "h264_crf": 23, "train_links": [],
                          "val_links": [], "seed": 0}},
}


def run_stage(folder: Path, name: str, *args: str) -> None:
    env = os.environ | {"PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", f"stages.{name}", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def files(folder: Path) -> dict[str, bytes]:
    return {f.relative_to(folder).as_posix(): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_streaming_stages_write_the_bytes_of_the_whole_split_reference(tmp_path, case):
    params = CASES[case]
    new, ref = tmp_path / "new", tmp_path / "ref"
    for d in (new, ref):
        photos(d / "raw")
    (new / "params.yaml").write_text(yaml.safe_dump(params))
    run_stage(new, "resize", "--raw", "raw", "--out", "resized")
    run_stage(new, "slice", "--images", "resized", "--out", "slices", "--split", "split.json")
    run_stage(new, "degrade", "--slices", "slices", "--out", "degraded", "--links-out", "degraded_links",
              "--provenance", "degrade.json")
    ref_resize(ref / "raw", ref / "resized", params["resize"])
    ref_slice(ref / "resized", ref / "slices", ref / "split.json", params["slice"])
    ref_degrade(ref / "slices", ref / "degraded", ref / "degraded_links", ref / "degrade.json", params["degrade"])
    (new / "params.yaml").unlink()
    got, want = files(new), files(ref)
    assert sorted(got) == sorted(want)
    assert len([k for k in want if k.startswith("slices/train-")]) == 1
    for name in want:
        assert got[name] == want[name], name


def test_shard_writer_matches_the_reference_across_shard_limits(tmp_path):
    rng = np.random.default_rng(0)
    images = {(f"é{i}" if i % 3 == 0 else f"img{i}"): rng.integers(0, 256, (rng.integers(1, 30), rng.integers(1, 30), 3),
                                                                    dtype=np.uint8) for i in range(40)}
    for max_bytes in (1, 500, 2000, 10**9):
        for data in (images, {}):
            a, b = tmp_path / f"a{max_bytes}{len(data)}", tmp_path / f"b{max_bytes}{len(data)}"
            want = ref_write_split(a, "s", data, max_bytes)
            got = write_split(b, "s", data, max_bytes)
            assert [p.name for p in got] == [p.name for p in want]
            assert [p.read_bytes() for p in got] == [p.read_bytes() for p in want]
            assert sorted(b.iterdir()) == got  # no temporary file left
            if data:
                reader = SplitReader(b, "s")
                assert reader.names == sorted(data) and all(np.array_equal(reader.get(n), data[n]) for n in data)
                assert all(np.array_equal(v, data[n]) for n, v in read_split(b, "s").items())


def test_shard_writer_refuses_unsorted_names_and_leaves_nothing_on_error(tmp_path):
    img = np.zeros((2, 2, 3), np.uint8)
    with pytest.raises(ValueError, match="increasing name order"):
        with ShardWriter(tmp_path, "s") as w:
            w.add("b", img)
            w.add("a", img)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="uint8"):
        with ShardWriter(tmp_path, "s") as w:
            w.add("a", img.astype(np.float32))
    assert list(tmp_path.iterdir()) == []


def test_split_reader_errors(tmp_path):
    with pytest.raises(SharpkdError, match="no shards"):
        SplitReader(tmp_path, "train")
    (tmp_path / "train-000.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(SharpkdError, match="not a readable shard"):
        SplitReader(tmp_path, "train")
    assert shard_paths(tmp_path, "train")
