"""Verified downloads of single files (model weights, image archives) into the torch hub cache.

:func:`fetch` returns a local copy of a URL (or a local path / ``file://`` URL) whose SHA-256 has
been checked, downloading it once into ``$TORCH_HOME/hub/checkpoints``.  Nothing is ever used
when its hash differs, and a failed transfer leaves nothing under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from sharpkd import __version__
from sharpkd.errors import DownloadError, one_line

CHUNK_SIZE = 1 << 20
TIMEOUT_S = 60.0
"""Socket timeout for one network operation (connect or one read)."""

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def sha256_file(path: str | os.PathLike) -> str:
    """Lower-case hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            h.update(chunk)
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (torch's own default, ``~/.cache/torch/hub/checkpoints``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def _normalise_sha256(sha256: str | None, what: str) -> str:
    value = (sha256 or "").strip().lower()
    if not value:
        raise DownloadError(f"{what}: no sha256 given; a 64-character hex SHA-256 of the file is required")
    if not _SHA256_RE.match(value):
        raise DownloadError(f"{what}: {sha256!r} is not a SHA-256 (expected 64 hex characters)")
    return value


def _local_source(url: str) -> Path | None:
    """The filesystem path for a plain path or ``file://`` URL; ``None`` for network URLs."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):  # C:\... on Windows
        return Path(url)
    return None


def default_filename(url: str) -> str:
    local = _local_source(url)
    if local is not None:
        return local.name
    return Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name


class _Failed(Exception):
    """Internal: a download attempt failed for ``reason`` (turned into DownloadError)."""


def _copy_stream(src: BinaryIO, out: BinaryIO, total: int | None, name: str, progress: bool,
                 max_bytes: int | None = None) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    if max_bytes is not None and total is not None and total > max_bytes:
        raise _Failed(f"it is {total} bytes, more than the limit of {max_bytes} bytes (max_download_mb)")
    with tqdm(
        total=total, desc=name, unit="B", unit_scale=True, unit_divisor=1024,
        disable=None if progress else True, leave=False,
    ) as bar:
        while chunk := src.read(CHUNK_SIZE):
            if max_bytes is not None and n + len(chunk) > max_bytes:  # do not trust Content-Length alone
                raise _Failed(f"it is more than the limit of {max_bytes} bytes (max_download_mb); stopped there")
            h.update(chunk)
            try:
                out.write(chunk)
            except OSError as e:
                raise _Failed(f"cannot write the download into the cache ({e.strerror or e})") from None
            n += len(chunk)
            bar.update(len(chunk))
    if total is not None and n < total:
        raise _Failed(f"the transfer stopped after {n} of {total} bytes (truncated download)")
    return h.hexdigest(), n


def _download_to(url: str, out: BinaryIO, name: str, progress: bool,
                 max_bytes: int | None = None) -> tuple[str, int]:
    """Stream ``url`` (network or local) into ``out``; return (sha256, bytes)."""
    local = _local_source(url)
    if local is not None:
        try:
            src = open(local, "rb")
        except OSError as e:
            raise _Failed(f"cannot open the local file ({e.strerror or e})") from None
        with src:
            return _copy_stream(src, out, os.fstat(src.fileno()).st_size, name, progress, max_bytes)
    request = urllib.request.Request(url, headers={"User-Agent": f"sharpkd/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.strip().isdigit() else None
            return _copy_stream(resp, out, total, name, progress, max_bytes)
    except urllib.error.HTTPError as e:
        raise _Failed(f"the server answered HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise _Failed(f"cannot connect ({e.reason}); check that this machine is online") from None
    except http.client.IncompleteRead as e:
        raise _Failed(f"the connection closed early after {len(e.partial)} bytes (truncated download)") from None
    except (http.client.HTTPException, OSError) as e:
        raise _Failed(f"the connection failed ({type(e).__name__}: {e})") from None
    except ValueError as e:  # unknown URL type and the like
        raise _Failed(f"unusable URL ({e})") from None


def fetch(
    url: str,
    sha256: str,
    *,
    filename: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    max_bytes: int | None = None,
) -> Path:
    """Return the path of a verified copy of ``url`` in the cache, downloading it if needed.

    ``cache_dir`` defaults to ``$TORCH_HOME/hub/checkpoints`` and ``filename`` to the URL's
    basename.  A cached file whose SHA-256 matches is returned without touching the network; a
    cached file with another hash is never used.  The download streams into
    ``<filename>.part-XXXX`` beside the target while hashing (tqdm progress bar when ``progress``
    and stderr is a terminal) and is renamed into place only after the hash matches.  ``url`` may
    also be a local path or ``file://`` URL (copied and verified the same way).  With
    ``max_bytes`` a larger download is refused (by its Content-Length, and by counting the bytes
    as they arrive, so a server that lies about the length stops at the limit too).

    Raises :class:`DownloadError` (partial file removed, nothing under the final name) naming the
    file, the URL, the expected SHA-256 and the path where the file can be placed by hand.
    """
    name = filename or default_filename(url)
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise DownloadError(f"cannot derive a file name from {url!r}; pass filename=")
    expected = _normalise_sha256(sha256, f"{name} ({url})")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / name

    def failure(reason: str) -> DownloadError:
        return DownloadError(one_line(
            f"could not get {name} from {url}: {reason}; to install it by hand, download that file "
            f"yourself and place it at {target} (its sha256 must be {expected})"
        ))

    stale = ""
    if target.is_file():
        actual = sha256_file(target)
        if actual == expected:
            return target
        stale = f"; the file already at {target} has sha256 {actual} and was not used"
        warnings.warn(f"{target}: sha256 {actual} does not match {expected}; downloading it again", stacklevel=2)

    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd, part_name = tempfile.mkstemp(prefix=f"{name}.part-", dir=cache)
    except OSError as e:
        raise failure(f"cannot write to the cache folder {cache} ({e.strerror or e}){stale}") from None
    part = Path(part_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest, n = _download_to(url, out, name, progress, max_bytes)
        if digest != expected:
            raise _Failed(f"the downloaded {n} bytes have sha256 {digest}, not the expected one")
        os.chmod(part, 0o644)
        os.replace(part, target)
    except _Failed as e:
        raise failure(f"{e}{stale}") from None
    except OSError as e:
        raise failure(f"cannot write {part} ({e.strerror or e}){stale}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
    return target


__all__ = ["default_cache_dir", "default_filename", "fetch", "sha256_file"]
