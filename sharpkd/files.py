"""File writing: outputs appear under their final name only when complete, with stable bytes.

* :func:`atomic_path` / :func:`atomic_dir`: write to a temporary name beside the target, rename on
  success, remove on failure; the temporary file is locked by its writer so that
  :func:`clean_stale_temps` removes only those whose writer is gone.
* :func:`write_json`: key-sorted, indented JSON.
* :func:`write_safetensors`: safetensors whose header is key-sorted, so the same tensors and
  metadata always give the same bytes (the safetensors library writes ``__metadata__`` in hash-map
  order, which changes a weight file's md5 in ``dvc.lock`` between identical runs).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it to ``final`` if the block succeeds.

    The temporary name keeps the final suffix (``.x.png.tmp-abc.png``) so that libraries that
    pick a format from the extension still work.  On any exception the temporary file is
    removed and ``final`` is left untouched.  While the block runs, the temporary file is held
    under an exclusive ``flock``, which tells :func:`clean_stale_temps` (another run's start-up
    cleanup) that its owner is alive.  ``final`` must be absent or a regular file
    (:func:`replace_problem`): a FIFO, a device or a symbolic link is refused with
    :class:`~sharpkd.errors.SharpkdError` before the block runs, never replaced.
    """
    from sharpkd.errors import SharpkdError

    final = Path(final)
    problem = replace_problem(final)
    if problem is not None:
        raise SharpkdError(f"{final}: {problem}")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_path, lock_fd = _locked_temp(final)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get ordinary permissions
        problem = replace_problem(final)  # something else may have appeared there meanwhile
        if problem is not None:
            raise SharpkdError(f"{final}: {problem}")
        os.replace(tmp_path, final)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and exc.errno and exc.filename in (str(tmp_path), tmp_path):
            # the user asked for `final`: name it, not the temporary file that is gone already
            raise OSError(exc.errno, exc.strerror or str(exc), str(final)) from None
        raise
    finally:
        os.close(lock_fd)


def _locked_temp(final: Path) -> tuple[Path, int]:
    """A new temporary file beside ``final`` and an open descriptor holding an exclusive
    ``flock`` on it.  A cleaner may take the lock of the fresh file in the instant before this
    process does and remove it; the name is then checked to still be the locked file, and a new
    one made if it is not."""
    import fcntl

    for _ in range(100):
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.tmp-", suffix=final.suffix, dir=final.parent)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without locks: written unlocked, and cleanup leaves such files
            return Path(tmp), fd
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(tmp))
        except FileNotFoundError:
            same = False
        if same:
            return Path(tmp), fd
        os.close(fd)
    raise OSError(f"cannot create a temporary file beside {final}")


def replace_problem(path: str | os.PathLike) -> str | None:
    """``None`` when ``path`` is absent or a regular file (an output may replace it), else why
    not: a symbolic link, a FIFO, a device, a socket or a folder is never replaced by an output
    (a rename would put a file in place of the link, or of the pipe a reader waits on)."""
    import stat

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be checked ({exc.strerror or exc})"
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return None
    kind = ("a symbolic link" if stat.S_ISLNK(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a folder" if stat.S_ISDIR(mode) else "not a regular file")
    return f"is {kind}; outputs only replace regular files: remove it or choose another path"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as pretty, key-sorted JSON (stable bytes for DVC), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def stable_safetensors_bytes(data: bytes) -> bytes:
    """Re-serialise a safetensors file's JSON header with sorted keys (tensor data untouched).

    Layout: 8-byte little-endian header length N, N bytes of JSON (space-padded to a multiple of
    8), then the tensor bytes, whose offsets are relative to the end of the header.
    """
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + n :]


def write_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (name -> torch tensor or numpy array) and string ``metadata`` as safetensors,
    atomically and deterministically (see :func:`stable_safetensors_bytes`)."""
    values = list(tensors.values())
    if values and type(values[0]).__module__.startswith("numpy"):
        from safetensors.numpy import save
    else:
        from safetensors.torch import save
    data = stable_safetensors_bytes(save(tensors, metadata=metadata))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` strings of a safetensors file (its header only; no tensor is read)."""
    from sharpkd.errors import SharpkdError

    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n < 100_000_000:
                raise ValueError(f"header length {n}")
            return dict(json.loads(f.read(n)).get("__metadata__") or {})
    except (OSError, ValueError) as exc:
        raise SharpkdError(f"{path} is not a readable safetensors file ({exc})") from None


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``final``; on success it replaces ``final``.

    A stage that dies half-way leaves ``final`` as it was (or absent), never half-filled.
    ``final`` must be absent or a real folder: anything else (a symbolic link, a file, a FIFO) is
    refused with :class:`~sharpkd.errors.SharpkdError` before the block runs, never replaced.
    """
    import shutil
    import stat

    from sharpkd.errors import SharpkdError

    final = Path(final)
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISDIR(os.lstat(final).st_mode):
            problem = replace_problem(final) or "is a file"
            raise SharpkdError(f"{final}: {problem.split(';')[0]}; a folder output only replaces a folder: "
                               "remove it or choose another path")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_TEMP_RE = None


def is_own_temp(name: str) -> bool:
    """True for a name :func:`atomic_path` makes: ``.{final}.tmp-XXXXXXXX{final's suffix}``."""
    import re

    global _TEMP_RE
    if _TEMP_RE is None:
        _TEMP_RE = re.compile(r"^\.(?P<final>.+)\.tmp-[A-Za-z0-9_]{8}(?P<suffix>(\.[^./]*)?)$")
    m = _TEMP_RE.match(name)
    return bool(m) and Path(m.group("final")).suffix == m.group("suffix")


def clean_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files :func:`atomic_path` left under ``folder`` (recursively) when a
    process was killed (SIGKILL, power loss) before it could remove them; returns what was removed.

    Only regular files whose name has exactly that pattern are touched: no folders, no links,
    nothing else.  A temporary file whose owner is still writing it (another run into the same
    folder) is locked by that owner and left alone; files that cannot be removed are left (and
    not returned)."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in filenames:
            path = Path(dirpath) / name
            if is_own_temp(name) and path.is_file() and not path.is_symlink():
                with contextlib.suppress(OSError):
                    if _remove_if_unlocked(path):
                        removed.append(path)
    return removed


def _remove_if_unlocked(path: Path) -> bool:
    """Remove ``path`` when no process holds its ``flock`` (its owner is gone); True if removed."""
    import fcntl

    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its owner is alive and writing it (or locks do not work here: cannot tell)
            return False
        if not os.path.samestat(os.fstat(fd), os.lstat(path)):
            return False  # renamed or replaced since it was opened
        path.unlink()
        return True
    finally:
        os.close(fd)
