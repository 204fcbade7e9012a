"""The user's sharpkd cache folder: measurements of this machine kept between runs.

``sharpkd`` keeps two JSON files there: ``calibration.json`` (how fast each shipped student runs
here, for ``--student auto``) and ``peak.json`` (``sharpkd bench --peak``).  The folder is
``$SHARPKD_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/sharpkd``, else ``~/.cache/sharpkd``.

Files are written atomically (:func:`sharpkd.files.write_json`).  A file that cannot be read or
parsed is ignored with a one-line warning and rewritten by the next measurement: a cache is
never a reason to fail.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from sharpkd.errors import one_line

CACHE_ENV = "SHARPKD_CACHE_DIR"


def cache_dir() -> Path:
    """The cache folder (not created here)."""
    own = os.environ.get(CACHE_ENV)
    if own:
        return Path(own).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "sharpkd"


def read_cache(name: str) -> dict:
    """The JSON object in ``cache_dir()/name``; ``{}`` when it is missing, and ``{}`` with one
    warning when it is unreadable or not a JSON object."""
    path = cache_dir() / name
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        warnings.warn(f"ignoring the unreadable cache {path} ({one_line(exc)}); it will be rewritten")
        return {}
    if not isinstance(data, dict):
        warnings.warn(f"ignoring the cache {path} (not a JSON object); it will be rewritten")
        return {}
    return data


def write_cache(name: str, data: dict) -> Path:
    """Write ``data`` to ``cache_dir()/name`` atomically; returns the path.  Raises OSError."""
    from sharpkd.files import write_json

    path = cache_dir() / name
    write_json(path, data)
    return path


__all__ = ["CACHE_ENV", "cache_dir", "read_cache", "write_cache"]
