"""User-facing errors.

Library code raises :class:`SharpkdError` (or a subclass) for every problem a user can fix:
bad input files, wrong hashes, missing weights, impossible params.  Stage scripts and the
``sharpkd`` command catch it, print the message (no traceback) and exit with status 1.
"""


class SharpkdError(Exception):
    """An error whose message is meant for the user; printed without a traceback."""


class ImageDecodeError(SharpkdError):
    """A file that is not a decodable image."""


class DownloadError(SharpkdError):
    """A download or checksum failure."""


class ArchiveError(SharpkdError):
    """An archive with unsafe or unusable members."""


class UsageError(SharpkdError):
    """A command line that cannot work as given (bad option value, unusable output folder):
    the ``sharpkd`` command prints it as one ``error:`` line and exits with status 2, as
    argparse does for its own usage errors."""


def one_line(text: object) -> str:
    """``text`` as a single line: line breaks (and the indentation after them) become one space.

    Every message printed for a user goes through this, so a library error that carries a
    newline (an OS message, a third-party exception) still prints as one line, and terminal
    escape codes (colours) are removed."""
    import re

    text = re.sub(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]", "", str(text))  # ANSI colour and cursor codes
    return re.sub(r"\s*[\r\n]+\s*", " ", text).strip()


def os_error_message(exc: OSError, what: str = "", path: object = None) -> str:
    """One line for an :class:`OSError` raised while reading or writing a file:
    ``cannot write /out/x.png: No space left on device (free some space ...)``.  ``path`` names
    the file instead of ``exc.filename`` (a final name rather than its temporary one)."""
    import errno

    reason = exc.strerror or str(exc) or type(exc).__name__
    name = path if path is not None else exc.filename if exc.filename is not None else ""
    hint = {
        errno.ENOSPC: "free some space or write to another disk",
        errno.EDQUOT: "free some space or write to another disk",
        errno.EACCES: "check the folder's permissions or choose another output folder",
        errno.EPERM: "check the folder's permissions or choose another output folder",
        errno.EROFS: "the file system is read-only; choose another output folder",
    }.get(exc.errno or 0)
    head = f"{what} {name}".strip() if what else str(name)
    text = f"{head}: {reason}" if head else reason
    return one_line(f"{text} ({hint})" if hint else text)


def state_dict_mismatch(expected: dict, got: dict, examples: int = 2) -> str:
    """One-line summary of how state dict ``got`` fails to fit a model whose state dict is
    ``expected`` (values are tensors or anything with ``.shape``): ``"3 missing, 2 unexpected
    keys, 1 with the wrong shape, e.g. missing 'a', 'b'; unexpected 'x'; ..."``."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shape = lambda v: tuple(getattr(v, "shape", ()))  # noqa: E731
    wrong = [k for k in expected if k in got and shape(expected[k]) != shape(got[k])]
    counts = []
    if missing:
        counts.append(f"{len(missing)} missing")
    if unexpected:
        counts.append(f"{len(unexpected)} unexpected")
    text = (", ".join(counts) + " keys") if counts else ""
    if wrong:
        text += (", " if text else "") + f"{len(wrong)} with the wrong shape"
    if not text:
        return "the tensors do not fit the model"
    samples = []
    if missing:
        samples.append("missing " + ", ".join(repr(k) for k in missing[:examples]))
    if unexpected:
        samples.append("unexpected " + ", ".join(repr(k) for k in unexpected[:examples]))
    if wrong:
        samples.append("; ".join(f"{k!r} is {list(shape(got[k]))} in the file, {list(shape(expected[k]))} in the model"
                                 for k in wrong[:examples]))
    return one_line(f"{text}, e.g. " + "; ".join(samples))
