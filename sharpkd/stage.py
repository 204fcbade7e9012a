"""Plumbing shared by the pipeline's stage scripts (``stages/*.py``).

A stage script parses its paths from the command line (``dvc.yaml`` is the single place that
names files), reads its own section of ``params.yaml`` and calls the library.  ``main`` turns a
:class:`~sharpkd.errors.SharpkdError` (or an ``OSError``) into a one-line message and exit status 1.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Callable

import yaml

from sharpkd.errors import SharpkdError, one_line, os_error_message
from sharpkd.process import ERROR_FILE_ENV, resolve_device, sigterm_as_interrupt

__all__ = ["load_params", "main", "resolve_device"]

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


def main(fn: Callable[[], None]) -> None:
    """Run a stage's ``fn``; user errors become one line ``error: <message>`` on stderr and exit 1
    (an :class:`OSError` -- disk full, permission denied -- too, naming the file); SIGINT and
    SIGTERM exit 130 after the temporary files are removed.

    In a process started by :func:`sharpkd.training.distributed.launch` (``SHARPKD_ERROR_FILE``
    set) the message goes to that file instead and an interrupt prints nothing: the launcher
    prints one line for all its processes."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    # one line per warning (a skipped file, say), not the library source line that raised it
    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {one_line(message)}\n"
    try:
        with sigterm_as_interrupt():
            fn()
    except SharpkdError as exc:
        _report(one_line(exc))
        sys.exit(1)
    except OSError as exc:
        _report(os_error_message(exc))
        sys.exit(1)
    except KeyboardInterrupt:
        if not os.environ.get(ERROR_FILE_ENV):
            print("interrupted", file=sys.stderr)
        sys.exit(130)


def _report(message: str) -> None:
    """``error: <message>`` on stderr, or the message into the launcher's error file."""
    path = os.environ.get(ERROR_FILE_ENV)
    if path:
        try:
            Path(path).write_text(message + "\n")
            return
        except OSError:
            pass
    print(f"error: {message}", file=sys.stderr)
