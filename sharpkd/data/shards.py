"""Image sets stored as a few safetensors shard files instead of thousands of loose PNGs.

A *split* (``train``, ``val``, ``val_full`` ...) is written to ``<dir>/<split>-000.safetensors``,
``<split>-001.safetensors`` ...; each shard maps image names to HxWxC uint8 tensors (sizes may
differ).  Shards are filled in name order up to ``max_bytes`` each and written with
:func:`sharpkd.files.write_safetensors`, so the same images always give the same bytes, which
keeps DVC hashes stable across reruns.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
from safetensors.numpy import load_file

from sharpkd.errors import SharpkdError
from sharpkd.files import write_safetensors

DEFAULT_MAX_BYTES = 256 * 1024 * 1024


def shard_paths(directory: str | os.PathLike, split: str) -> list[Path]:
    """The shard files of ``split`` in ``directory``, in order."""
    return sorted(Path(directory).glob(f"{split}-[0-9][0-9][0-9].safetensors"))


def split_names(directory: str | os.PathLike) -> list[str]:
    """The splits that have shards in ``directory``, sorted."""
    return sorted({p.name.rsplit("-", 1)[0] for p in Path(directory).glob("*-[0-9][0-9][0-9].safetensors")})


def write_split(directory: str | os.PathLike, split: str, images: Mapping[str, np.ndarray],
                max_bytes: int = DEFAULT_MAX_BYTES) -> list[Path]:
    """Write ``images`` (name -> uint8 array) as the shards of ``split``; returns the files written.

    Existing shards of the same split are removed first, so a shrinking split leaves no stale file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for old in shard_paths(directory, split):
        old.unlink()
    groups: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name in sorted(images):
        arr = np.ascontiguousarray(images[name])
        if arr.dtype != np.uint8:
            raise ValueError(f"{split}/{name}: shards hold uint8 images, got {arr.dtype}")
        if groups[-1] and size + arr.nbytes > max_bytes:
            groups.append({})
            size = 0
        groups[-1][name] = arr
        size += arr.nbytes
    written = []
    for i, group in enumerate(groups):
        path = directory / f"{split}-{i:03d}.safetensors"
        write_safetensors(path, group)
        written.append(path)
    return written


def read_split(directory: str | os.PathLike, split: str, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Read every image of ``split`` (or only ``names``) into a name-sorted dict."""
    paths = shard_paths(directory, split)
    if not paths:
        raise SharpkdError(f"no shards for split {split!r} in {directory}: run the earlier pipeline stages (dvc repro)")
    out: dict[str, np.ndarray] = {}
    for path in paths:
        out.update(load_file(str(path)))
    if names is not None:
        wanted = list(names)
        missing = [n for n in wanted if n not in out]
        if missing:
            raise SharpkdError(f"split {split!r} in {directory} lacks {len(missing)} images, e.g. {missing[:3]}")
        out = {n: out[n] for n in wanted}
    return dict(sorted(out.items()))
