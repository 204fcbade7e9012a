"""The download stage's logic: collect source images, safely extracting archives.

* :func:`extract_archive` unpacks the image files of a zip/tar archive after checking every
  member name (no absolute paths, no ``..``, no links or devices).
* :func:`collect` gathers decodable images from one of three sources -- ``"sample"`` (the colour
  photographs shipped inside scikit-image), ``"dir"`` (a local folder) or ``"url"`` (an archive,
  fetched and verified by :func:`sharpkd.fetch.fetch`) -- into a flat output folder and returns
  a provenance record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import stat
import tarfile
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from tqdm import tqdm

from sharpkd.errors import ArchiveError, ImageDecodeError, SharpkdError, one_line, os_error_message
from sharpkd.fetch import CHUNK_SIZE, default_filename, fetch, sha256_file
from sharpkd.files import atomic_path
from sharpkd.images import has_image_extension, iter_visible_files, load_rgb

SOURCES = ("sample", "dir", "url")

SAMPLE_FILES = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "retina.jpg",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
)
"""Colour photographs shipped inside scikit-image's ``skimage/data`` (no network needed).
``motorcycle_left``/``motorcycle_right`` are a stereo pair (near duplicates)."""

# --------------------------------------------------------------------------------------------
# Archives


def _member_parts(archive: Path, name: str) -> list[str]:
    """Validate a member name; return its path components.  Raises ArchiveError if unsafe."""
    if "\x00" in name:
        raise ArchiveError(f"{archive}: member {name!r} has a NUL byte in its name; archive refused")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise ArchiveError(f"{archive}: member {name!r} has an absolute path; archive refused")
    parts = [p for p in re.split(r"[\\/]", name) if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"{archive}: member {name!r} points outside the archive ('..'); archive refused")
    return parts


@dataclasses.dataclass(frozen=True)
class ArchiveLimits:
    """Resource limits for an image archive (``params.yaml`` ``download`` section, sizes in MiB).

    * ``max_download_mb``: the archive itself (Content-Length and the bytes actually received).
    * ``max_member_mb``: one member, uncompressed.
    * ``max_total_mb``: all extracted members together, uncompressed.
    * ``max_ratio``: uncompressed / compressed size, of one zip member and of the whole archive;
      members (and archives) that inflate to less than :data:`RATIO_FLOOR_BYTES` are exempt, so a
      small flat PNG that compresses well is never refused.

    The header sizes are checked before anything is written, and the bytes are counted again while
    they are copied: a member whose header understates its size stops at the budget.
    """

    max_member_mb: float = 512
    max_total_mb: float = 4096
    max_ratio: float = 100
    max_download_mb: float = 4096

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise SharpkdError(f"download.{f.name} must be a positive number, got {value!r}")

    @classmethod
    def from_params(cls, params: dict | None) -> "ArchiveLimits":
        """The limits named in ``params`` (missing or null keys keep their defaults)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (params or {}).items() if k in names and v is not None})

    @staticmethod
    def _bytes(mb: float) -> int:
        return int(mb * (1 << 20))

    @property
    def member_bytes(self) -> int:
        return self._bytes(self.max_member_mb)

    @property
    def total_bytes(self) -> int:
        return self._bytes(self.max_total_mb)

    @property
    def download_bytes(self) -> int:
        return self._bytes(self.max_download_mb)

    def ratio_bytes(self, packed: int) -> int:
        """The most bytes ``packed`` compressed bytes may inflate to."""
        return max(RATIO_FLOOR_BYTES, int(self.max_ratio * packed))


RATIO_FLOOR_BYTES = 1 << 20
"""Below this many uncompressed bytes the compression ratio is not checked."""


class _Member:
    __slots__ = ("name", "parts", "is_dir", "open", "size", "packed")

    def __init__(self, name: str, parts: list[str], is_dir: bool, open_: Callable[[], BinaryIO] | None,
                 size: int = 0, packed: int | None = None):
        self.name, self.parts, self.is_dir, self.open = name, parts, is_dir, open_
        self.size, self.packed = size, packed  # declared uncompressed size; compressed size (zip)


class _Budget:
    """Checks declared and actual member sizes against :class:`ArchiveLimits`."""

    def __init__(self, archive: Path, limits: ArchiveLimits):
        self.archive, self.limits = archive, limits
        self.archive_bytes = archive.stat().st_size
        self.declared = 0  # sum of header sizes seen so far
        self.written = 0  # bytes actually extracted so far

    def _refuse(self, name: str, what: str) -> ArchiveError:
        return ArchiveError(f"{self.archive}: member {name!r} {what}; archive refused (nothing extracted)")

    def _mb(self, n: int) -> str:
        return f"{n / (1 << 20):g} MiB"

    def declare(self, name: str, size: int, packed: int | None) -> None:
        """Refuse a member by its header sizes, before anything is written."""
        lim = self.limits
        if size > lim.member_bytes:
            raise self._refuse(name, f"is {self._mb(size)} uncompressed, more than max_member_mb "
                                     f"({lim.max_member_mb:g} MiB)")
        if packed is not None and size > lim.ratio_bytes(packed):
            raise self._refuse(name, f"inflates {size / max(packed, 1):.0f}:1 ({packed} -> {size} bytes), more "
                                     f"than max_ratio ({lim.max_ratio:g}); a zip bomb?")
        self.declared += size
        if self.declared > lim.total_bytes:
            raise self._refuse(name, f"takes the archive past max_total_mb ({lim.max_total_mb:g} MiB "
                                     f"uncompressed in all)")
        if self.declared > lim.ratio_bytes(self.archive_bytes):
            raise self._refuse(name, f"takes the archive past max_ratio ({lim.max_ratio:g}:1 of its "
                                     f"{self.archive_bytes} bytes); a compression bomb?")

    def allowance(self, m: _Member) -> tuple[int, str]:
        """(the most bytes ``m`` may really inflate to, the refusal message if it goes beyond)."""
        lim = self.limits
        options = [
            (lim.member_bytes, f"inflates to more than max_member_mb ({lim.max_member_mb:g} MiB)"),
            (lim.total_bytes - self.written,
             f"takes the archive past max_total_mb ({lim.max_total_mb:g} MiB uncompressed in all)"),
            (lim.ratio_bytes(self.archive_bytes) - self.written,
             f"takes the archive past max_ratio ({lim.max_ratio:g}:1 of its {self.archive_bytes} bytes)"),
        ]
        if m.packed is not None:
            options.append((lim.ratio_bytes(m.packed), f"inflates more than max_ratio ({lim.max_ratio:g}:1)"))
        budget, why = min(options, key=lambda o: o[0])
        return max(budget, 0), f"{why}, although its header says {m.size} bytes"


def _zip_members(archive: Path, zf: zipfile.ZipFile, budget: _Budget) -> list[_Member]:
    members = []
    for info in zf.infolist():
        parts = _member_parts(archive, info.filename)
        fmt = stat.S_IFMT(info.external_attr >> 16)
        if fmt == stat.S_IFLNK:
            raise ArchiveError(f"{archive}: member {info.filename!r} is a symbolic link; archive refused")
        is_dir = info.is_dir() or fmt == stat.S_IFDIR
        if fmt not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise ArchiveError(f"{archive}: member {info.filename!r} is a device, fifo or socket; archive refused")
        if info.flag_bits & 0x1:
            raise ArchiveError(f"{archive}: member {info.filename!r} is encrypted; archive refused")
        if not is_dir and parts and _skip_reason(parts) is None:  # only what will be extracted counts
            budget.declare(info.filename, info.file_size, info.compress_size)
        members.append(_Member(info.filename, parts, is_dir, None if is_dir else (lambda i=info: zf.open(i)),
                               info.file_size, info.compress_size))
    return members


def _tar_members(archive: Path, tf: tarfile.TarFile, budget: _Budget) -> list[_Member]:
    members = []
    for m in tf:  # lazily: a member too large is refused at its header, before its data is inflated
        parts = _member_parts(archive, m.name)
        if m.issym() or m.islnk():
            raise ArchiveError(f"{archive}: member {m.name!r} is a link (to {m.linkname!r}); archive refused")
        if m.ischr() or m.isblk() or m.isfifo():
            raise ArchiveError(f"{archive}: member {m.name!r} is a device or fifo; archive refused")
        if not (m.isreg() or m.isdir()):
            raise ArchiveError(f"{archive}: member {m.name!r} has an unsupported type {m.type!r}; archive refused")
        if m.isreg() and parts and _skip_reason(parts) is None:
            budget.declare(m.name, m.size, None)
        members.append(_Member(m.name, parts, m.isdir(), None if m.isdir() else (lambda mm=m: tf.extractfile(mm)),
                               m.size))
    return members


def _damaged(archive: Path, e: BaseException) -> ArchiveError:
    return ArchiveError(one_line(f"{archive}: damaged archive ({type(e).__name__}: {e or 'no detail'})"))


@contextlib.contextmanager
def _open_archive(archive: Path, budget: _Budget) -> Iterator[list[_Member]]:
    """Open a zip or tar archive and list (and check) its members."""
    with contextlib.ExitStack() as stack:
        try:
            if zipfile.is_zipfile(archive):
                zf = stack.enter_context(zipfile.ZipFile(archive))
                members = _zip_members(archive, zf, budget)
            elif tarfile.is_tarfile(archive):
                tf = stack.enter_context(tarfile.open(archive, "r:*"))
                members = _tar_members(archive, tf, budget)
            else:
                raise ArchiveError(
                    f"{archive}: not a zip or tar archive "
                    "(supported: .zip, .tar, .tar.gz/.tgz, .tar.bz2, .tar.xz)"
                )
        except SharpkdError:
            raise
        except MemoryError:
            raise ArchiveError(f"{archive}: not enough memory to list the archive; archive refused") from None
        except Exception as e:  # zipfile/tarfile/zlib/lzma raise many types on hostile bytes
            raise _damaged(archive, e) from None
        yield members


def _skip_reason(parts: list[str]) -> str | None:
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return "hidden or macOS metadata file"
    if not has_image_extension(parts[-1]):
        return f"not an image file (extension {Path(parts[-1]).suffix or 'none'!r})"
    return None


class _OverBudget(Exception):
    pass


def _copy_member(src: BinaryIO, out: BinaryIO, target: Path, budget: int) -> int:
    """Copy at most ``budget`` bytes; raise :class:`_OverBudget` on the first byte beyond it."""
    n = 0
    while chunk := src.read(min(CHUNK_SIZE, budget - n + 1)):
        n += len(chunk)
        if n > budget:
            raise _OverBudget
        try:
            out.write(chunk)
        except OSError as e:
            e.filename = e.filename or str(target)
            raise _WriteFailed(e) from None
    return n


class _WriteFailed(Exception):
    def __init__(self, error: OSError):
        super().__init__(error)
        self.error = error


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike,
                    limits: ArchiveLimits | None = None) -> dict:
    """Extract the image members of a zip or tar (optionally gz/bz2/xz) archive into ``dest``.

    Every member is checked before anything is written: absolute names, ``..`` components,
    symbolic/hard links, devices and fifos (and duplicate names) make the whole archive refused
    with :class:`ArchiveError` naming the member.  Regular files whose extension is not an image
    extension, and hidden/``__MACOSX`` entries, are skipped; directories are implied by the files.

    Sizes are bounded by ``limits`` (:class:`ArchiveLimits`, defaults when ``None``): the
    members' header sizes are checked first (nothing written when one is too large), then every
    member is streamed with a byte budget; a member that inflates beyond it stops there, and the
    archive is refused with everything already extracted removed again.  A damaged archive is an
    :class:`ArchiveError` too, whatever the decompressor raised.

    Returns ``{"extracted": [...], "skipped": [...]}``: sorted member paths (``/``-separated).
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise ArchiveError(f"{archive}: archive not found")
    budget = _Budget(archive, limits or ArchiveLimits())
    with _open_archive(archive, budget) as members:
        files = [m for m in members if not m.is_dir and m.parts]
        seen: set[str] = set()
        for m in files:
            key = "/".join(m.parts)
            if key in seen:
                raise ArchiveError(f"{archive}: member {m.name!r} appears twice; archive refused")
            seen.add(key)
        wanted = [m for m in files if _skip_reason(m.parts) is None]
        skipped = sorted("/".join(m.parts) for m in files if _skip_reason(m.parts) is not None)

        made_dirs: list[Path] = []
        written: list[Path] = []

        def mkdirs(folder: Path) -> None:
            missing = [p for p in [folder, *folder.parents] if not p.exists()]
            for p in reversed(missing):
                try:
                    p.mkdir()
                except OSError as e:
                    raise ArchiveError(f"{archive}: {os_error_message(e, 'cannot create folder')}") from None
                made_dirs.append(p)
            if not folder.is_dir():
                raise ArchiveError(f"{archive}: cannot extract into {folder}: it is not a folder")

        try:
            mkdirs(dest)
            root = dest.resolve()
            extracted = []
            for m in wanted:
                target = dest.joinpath(*m.parts)
                if not target.resolve().is_relative_to(root):
                    raise ArchiveError(f"{archive}: member {m.name!r} would be written outside {dest}")
                allowance, why = budget.allowance(m)
                try:
                    mkdirs(target.parent)
                    with m.open() as src, atomic_path(target) as tmp, open(tmp, "wb") as out:
                        budget.written += _copy_member(src, out, tmp, allowance)
                except _OverBudget:
                    raise budget._refuse(m.name, why) from None
                except _WriteFailed as e:
                    raise ArchiveError(f"{archive}: cannot extract member {m.name!r}: "
                                       f"{os_error_message(e.error, 'cannot write')}") from None
                except SharpkdError:
                    raise
                except Exception as e:  # noqa: BLE001  (zlib.error, BadZipFile, EOFError, CRC errors, ...)
                    raise ArchiveError(one_line(f"{archive}: cannot extract member {m.name!r} "
                                                f"({type(e).__name__}: {e or 'no detail'}); damaged archive")) from None
                written.append(target)
                extracted.append("/".join(m.parts))
        except BaseException:
            for path in written:
                with contextlib.suppress(OSError):
                    path.unlink()
            for folder in reversed(made_dirs):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
    return {"extracted": sorted(extracted), "skipped": skipped}


# --------------------------------------------------------------------------------------------
# Collecting images (pipeline stage)


def _flat_name(rel: str, taken: set[str]) -> str:
    """``a/b/c.png`` -> ``a__b__c.png``, made unique (case-insensitively) with ``-2``, ``-3``..."""
    base = rel.replace("/", "__")
    name, k = base, 1
    stem, suffix = os.path.splitext(base)
    while name.lower() in taken:
        k += 1
        name = f"{stem}-{k}{suffix}"
    taken.add(name.lower())
    return name


def _candidates_from_dir(root: Path, origin_prefix: str, exclude: Path | None) -> tuple[list, list]:
    """(candidates, skipped) for a folder: candidates are (rel, src, origin)."""
    candidates, skipped = [], []
    excl = exclude.resolve() if exclude is not None else None
    for path in iter_visible_files(root):
        if excl is not None and path.resolve().is_relative_to(excl):
            continue
        rel = path.relative_to(root).as_posix()
        reason = _skip_reason(rel.split("/"))
        if reason is not None:
            skipped.append({"file": rel, "reason": reason})
        else:
            candidates.append((rel, path, f"{origin_prefix}{rel}"))
    return candidates, skipped


def _build(out_dir: Path, candidates: list, skipped: list, what: str, move: bool = False) -> tuple[list, list]:
    """Copy decodable candidates into a temp sibling of ``out_dir``, then swap it into place.

    ``move``: the candidates are temporary files on the same file system (an extracted archive):
    rename them instead of copying them a second time."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if out_dir.exists() and not out_dir.is_dir():
        raise SharpkdError(f"{out_dir}: exists and is not a folder; remove it or choose another output")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    images, skipped = [], list(skipped)
    try:
        taken: set[str] = set()
        for rel, src, origin in tqdm(candidates, desc="checking images", unit="img", disable=None):
            name = _flat_name(rel, taken)
            dst = tmp / name
            try:
                if move:
                    os.replace(src, dst)
                else:
                    shutil.copyfile(src, dst)
            except OSError as e:
                raise SharpkdError(os_error_message(e, f"cannot copy {origin} to")) from None
            try:
                h, w = load_rgb(dst).shape[:2]
            except ImageDecodeError as e:
                reason = getattr(e, "reason", str(e))
                warnings.warn(f"skipping {origin}: {reason}", stacklevel=3)
                skipped.append({"file": rel, "reason": reason})
                taken.discard(name.lower())
                dst.unlink()
                continue
            images.append({
                "file": name, "origin": origin, "bytes": dst.stat().st_size,
                "width": int(w), "height": int(h), "sha256": sha256_file(dst),
            })
        if not images:
            raise SharpkdError(
                f"no usable images in {what} ({len(skipped)} file(s) skipped); "
                "give a folder or archive that contains PNG/JPEG/TIFF/WebP/BMP photographs"
            )
        os.chmod(tmp, 0o755)
        if out_dir.exists():
            holder = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, holder / "old")
            try:
                os.replace(tmp, out_dir)
            except BaseException:
                os.replace(holder / "old", out_dir)
                raise
            finally:
                shutil.rmtree(holder, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(images, key=lambda d: d["file"]), sorted(skipped, key=lambda d: d["file"])


def collect(
    source: str,
    out_dir: str | os.PathLike,
    *,
    dir: str | os.PathLike | None = None,
    url: str | None = None,
    sha256: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    limits: ArchiveLimits | None = None,
) -> dict:
    """Gather decodable images from ``source`` into the flat folder ``out_dir``; return provenance.

    Sources: ``"sample"`` (:data:`SAMPLE_FILES` from scikit-image, no network), ``"dir"`` (the
    folder ``dir``, recursive, hidden entries ignored) and ``"url"`` (a zip/tar archive at ``url``
    with the given ``sha256``, fetched with :func:`fetch` into ``cache_dir`` and unpacked with
    :func:`extract_archive`), both bounded by ``limits`` (:class:`ArchiveLimits`).

    Each file is copied byte-for-byte as ``relative__path__name.ext`` and decoded with
    :func:`~sharpkd.images.load_rgb`; files that do not decode are skipped with a warning and
    non-image files are skipped silently, both listed under ``"skipped"``.  ``out_dir`` is built
    beside itself and renamed into place at the end (replacing an old one), so it is either
    complete or untouched.  Zero usable images raise :class:`SharpkdError`.

    Returns ``{"source", "count", "skipped_count", "images": [{"file", "origin", "bytes", "width",
    "height", "sha256"}], "skipped": [{"file", "reason"}]}`` (plus ``"dir"``, ``"url"``/``"sha256"``
    or ``"skimage_version"`` saying where the images came from), lists sorted by file.
    """
    out_dir = Path(out_dir)
    extra: dict = {}
    if source == "sample":
        import skimage
        from skimage import data as skdata

        root = Path(skdata.data_dir)
        candidates, skipped = [], []
        for name in SAMPLE_FILES:
            path = root / name
            if path.is_file():
                candidates.append((name, path, f"skimage/data/{name}"))
            else:
                skipped.append({"file": name, "reason": f"not found in {root} (scikit-image {skimage.__version__})"})
        extra["skimage_version"] = skimage.__version__
        images, skipped = _build(out_dir, candidates, skipped, f"scikit-image's data folder {root}")
    elif source == "dir":
        if dir is None or str(dir) == "":
            raise SharpkdError("source 'dir' needs a folder: set dir to the folder of images")
        root = Path(dir)
        if not root.is_dir():
            raise SharpkdError(f"image folder {root} does not exist or is not a folder")
        candidates, skipped = _candidates_from_dir(root, f"{Path(dir).as_posix()}/", exclude=out_dir)
        if not candidates:
            raise SharpkdError(
                f"no image files (.png .jpg .jpeg .bmp .tif .tiff .webp) in folder {root} "
                f"({len(skipped)} other file(s) found)"
            )
        extra["dir"] = str(dir)
        images, skipped = _build(out_dir, candidates, skipped, f"folder {root}")
    elif source == "url":
        if not url:
            raise SharpkdError("source 'url' needs url: the http(s) address of a zip or tar archive of images")
        if not (sha256 or "").strip():
            raise SharpkdError(
                f"source 'url' needs the archive's sha256 (none given for {url}); "
                "compute it with `sha256sum` on a trusted copy and set sha256"
            )
        limits = limits or ArchiveLimits()
        archive = fetch(url, sha256, filename=default_filename(url) or "images-archive", cache_dir=cache_dir,
                        max_bytes=limits.download_bytes)
        try:
            out_dir.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SharpkdError(os_error_message(e, "cannot create the output folder")) from None
        # beside out_dir (same file system): the extracted members are then moved, not copied again
        with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.extract-", dir=out_dir.parent) as tmp:
            info = extract_archive(archive, tmp, limits)
            pre_skipped = [{"file": f, "reason": _skip_reason(f.split("/")) or "skipped"} for f in info["skipped"]]
            candidates = [(rel, Path(tmp, *rel.split("/")), f"{url}#{rel}") for rel in info["extracted"]]
            images, skipped = _build(out_dir, candidates, pre_skipped, f"archive {url}", move=True)
        extra["url"] = url
        extra["sha256"] = sha256.strip().lower()
    else:
        raise SharpkdError(f"unknown image source {source!r}; use one of {', '.join(SOURCES)}")
    return {
        "source": source,
        **extra,
        "count": len(images),
        "skipped_count": len(skipped),
        "images": images,
        "skipped": skipped,
    }


__all__ = [
    "ArchiveLimits",
    "SAMPLE_FILES",
    "SOURCES",
    "collect",
    "extract_archive",
]
