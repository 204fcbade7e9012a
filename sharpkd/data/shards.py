"""Image sets stored as a few safetensors shard files instead of thousands of loose PNGs.

A *split* (``train``, ``val``, ``val_full`` ...) is written to ``<dir>/<split>-000.safetensors``,
``<split>-001.safetensors`` ...; each shard maps image names to HxWxC uint8 tensors (sizes may
differ).  Shards are filled in name order up to ``max_bytes`` each, in the layout
:func:`sharpkd.files.write_safetensors` gives (header keys sorted, tensors in name order), so the
same images always give the same bytes, which keeps DVC hashes stable across reruns.

Two ways through a split: whole (:func:`write_split`, :func:`read_split`: a dict in memory), or
one image at a time (:class:`ShardWriter`, :class:`SplitReader`), which holds one image, not the
split: the data stages stream with these, so their memory does not grow with the image count.
The two write the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np
from safetensors.numpy import load_file

from sharpkd.errors import SharpkdError
from sharpkd.files import atomic_path

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
    with ShardWriter(directory, split, max_bytes) as writer:
        for name in sorted(images):
            writer.add(name, images[name])
    return writer.written


class ShardWriter:
    """Writes the shards of ``split`` from images added one at a time, in strictly increasing name
    order: the bytes :func:`write_split` writes for the same images, holding no image.

    Each image's bytes go to a temporary file beside the shards as it is added; when the next image
    would take the shard past ``max_bytes`` (or at :meth:`close`) the shard is written whole
    (its header, then those bytes) under its final name, atomically.  A split with no image is one
    shard with no tensor.  As a context manager it closes on success and removes its temporary
    file on an error.  Existing shards of the split are removed first.
    """

    def __init__(self, directory: str | os.PathLike, split: str, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.directory = Path(directory)
        self.split = split
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        for old in shard_paths(self.directory, split):
            old.unlink()
        self.written: list[Path] = []
        self._entries: list[tuple[str, tuple[int, ...], int, int]] = []
        self._size = 0
        self._last: str | None = None
        fd, tmp = tempfile.mkstemp(prefix=f".{split}.data-", suffix=".tmp", dir=self.directory)
        self._tmp = Path(tmp)
        self._data = os.fdopen(fd, "w+b")

    def add(self, name: str, image: np.ndarray) -> None:
        """Append one uint8 image; names must come in strictly increasing order."""
        if self._last is not None and name <= self._last:
            raise ValueError(f"{self.split}/{name}: images must be added in increasing name order (after {self._last!r})")
        arr = np.ascontiguousarray(image)
        if arr.dtype != np.uint8:
            raise ValueError(f"{self.split}/{name}: shards hold uint8 images, got {arr.dtype}")
        if self._entries and self._size + arr.nbytes > self.max_bytes:
            self._flush()
        self._entries.append((name, arr.shape, self._size, self._size + arr.nbytes))
        self._data.write(memoryview(arr).cast("B"))
        self._size += arr.nbytes
        self._last = name

    def _flush(self) -> None:
        header = {name: {"dtype": "U8", "shape": list(shape), "data_offsets": [begin, end]}
                  for name, shape, begin, end in self._entries}
        text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        text += b" " * (-len(text) % 8)
        path = self.directory / f"{self.split}-{len(self.written):03d}.safetensors"
        self._data.flush()
        self._data.seek(0)
        with atomic_path(path) as tmp, open(tmp, "wb") as out:
            out.write(len(text).to_bytes(8, "little") + text)
            shutil.copyfileobj(self._data, out, 1 << 20)
        self._data.seek(0)
        self._data.truncate()
        self.written.append(path)
        self._entries, self._size = [], 0

    def close(self) -> list[Path]:
        """Write the last shard; returns every file written."""
        if self._entries or not self.written:
            self._flush()
        self._discard()
        return self.written

    def _discard(self) -> None:
        self._data.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._discard()


class SplitReader:
    """The images of ``split`` one at a time, read from the shard files as asked (plain reads, no
    memory map, so only the image asked for is in memory).

    ``names``: every image name, sorted; :meth:`shape` from the headers alone; :meth:`get` one
    image (a fresh writable array); iterating yields ``(name, image)`` in name order.
    """

    def __init__(self, directory: str | os.PathLike, split: str) -> None:
        paths = shard_paths(directory, split)
        if not paths:
            raise SharpkdError(f"no shards for split {split!r} in {directory}: run the earlier pipeline stages (dvc repro)")
        self._where: dict[str, tuple[Path, tuple[int, ...], int, int]] = {}
        for path in paths:
            header, start = _read_header(path)
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                if info.get("dtype") != "U8":
                    raise SharpkdError(f"{path}: {name} is {info.get('dtype')}, shards hold uint8 images")
                begin, end = info["data_offsets"]
                self._where[name] = (path, tuple(info["shape"]), start + begin, end - begin)
        self.names = sorted(self._where)

    def __len__(self) -> int:
        return len(self.names)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._where[name][1]

    def get(self, name: str) -> np.ndarray:
        path, shape, offset, size = self._where[name]
        out = np.empty(shape, np.uint8)
        if out.nbytes != size:
            raise SharpkdError(f"{path}: {name} holds {size} bytes for shape {shape}")
        with open(path, "rb") as f:
            f.seek(offset)
            if f.readinto(memoryview(out).cast("B")) != size:
                raise SharpkdError(f"{path}: {name} is cut short")
        return out

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        for name in self.names:
            yield name, self.get(name)


def _read_header(path: Path) -> tuple[dict, int]:
    """The JSON header of a safetensors file and where its data begins."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n < 100_000_000:
                raise ValueError(f"header length {n}")
            return json.loads(f.read(n)), 8 + n
    except (OSError, ValueError) as exc:
        raise SharpkdError(f"{path} is not a readable shard ({exc})") from None


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
