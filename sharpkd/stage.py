"""Plumbing shared by the pipeline's stage scripts (``stages/*.py``).

A stage script parses its paths from the command line (``dvc.yaml`` is the single place that
names files), reads its own section of ``params.yaml`` and calls the library.  ``main`` turns a
:class:`~sharpkd.errors.SharpkdError` into a one-line message and exit status 1.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Callable

import yaml

from .errors import SharpkdError

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


def main(fn: Callable[[], None]) -> None:
    """Run a stage's ``fn``; user errors become ``error: <message>`` on stderr and exit 1."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    # one line per warning (a skipped file, say), not the library source line that raised it
    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"
    try:
        fn()
    except SharpkdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
