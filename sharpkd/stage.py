"""Plumbing shared by the pipeline's stage scripts (``stages/*.py``).

A stage script parses its paths from the command line (``dvc.yaml`` is the single place that
names files), reads its own section of ``params.yaml`` and calls the library.  ``main`` turns a
:class:`~sharpkd.errors.SharpkdError` (or an ``OSError``) into a one-line message and exit status 1.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Callable, Iterator

import yaml

from .errors import SharpkdError, one_line, os_error_message

log = logging.getLogger("sharpkd")


def load_params(section: str, path: str | Path = "params.yaml") -> dict:
    """The ``section`` of ``params.yaml`` as a dict (a missing section is an error)."""
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise SharpkdError(f"{path} not found: run stages from the repository root") from None
    except yaml.YAMLError as exc:
        raise SharpkdError(f"{path} is not valid YAML: {exc}") from None
    if section not in params:
        raise SharpkdError(f"{path} has no section {section!r}")
    return params[section]


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without a GPU is an error."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SharpkdError("device 'cuda' requested but no CUDA GPU is visible; use device: auto or cpu")
    if name not in ("cpu", "cuda"):
        raise SharpkdError(f"device must be auto, cpu or cuda, got {name!r}")
    return name


_INTERRUPTED: list[int] = []


def interrupt_requested() -> bool:
    """True once SIGINT or SIGTERM arrived inside :func:`sigterm_as_interrupt`.  Loops check it
    after each item because a library may swallow the :class:`KeyboardInterrupt` (numpy, say,
    while it asks an object for its array interface)."""
    return bool(_INTERRUPTED)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`KeyboardInterrupt` like Ctrl-C (SIGINT) does, so
    that ``finally`` blocks and :func:`~sharpkd.fsutil.atomic_path` remove temporary files when a
    job is cancelled (``kill``, a CI timeout, ``docker stop``); both are also recorded for
    :func:`interrupt_requested`.  An error that leaves the block after a signal arrived is
    re-raised as that :class:`KeyboardInterrupt` (a library may turn the interrupt into its own
    error: safetensors raises ``ValueError`` when SIGTERM lands during a model load), so the
    signal decides the outcome.  No-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        _INTERRUPTED.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    _INTERRUPTED.clear()
    try:
        yield
    except Exception as exc:
        if _INTERRUPTED:
            raise KeyboardInterrupt(f"signal {_INTERRUPTED[0]}") from exc
        raise
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        _INTERRUPTED.clear()


def main(fn: Callable[[], None]) -> None:
    """Run a stage's ``fn``; user errors become one line ``error: <message>`` on stderr and exit 1
    (an :class:`OSError` -- disk full, permission denied -- too, naming the file); SIGINT and
    SIGTERM exit 130 after the temporary files are removed."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    # one line per warning (a skipped file, say), not the library source line that raised it
    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {one_line(message)}\n"
    try:
        with sigterm_as_interrupt():
            fn()
    except SharpkdError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:
        print(f"error: {os_error_message(exc)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
