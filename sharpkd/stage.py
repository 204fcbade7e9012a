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
    """The ``section`` of ``params.yaml`` as a dict (a missing section is an error).  Every
    section of the file is checked against :data:`PARAMS_SCHEMA` first: an unknown key, a value of
    the wrong type or out of its range is a :class:`SharpkdError` naming the key and its section."""
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise SharpkdError(f"{path} not found: run stages from the repository root") from None
    except yaml.YAMLError as exc:
        raise SharpkdError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(params, dict):
        raise SharpkdError(f"{path} must hold a mapping of sections, got {type(params).__name__}")
    if section not in params:
        raise SharpkdError(f"{path} has no section {section!r}")
    for name in PARAMS_SCHEMA:  # the whole file: a bad value stops the first stage, not the one using it
        if name in params:
            check_params(name, params[name], path)
    value = params[section]
    return Params(value, section, str(path)) if isinstance(value, dict) else value


class Params(dict):
    """A params section: a key the stage needs and the file lacks is a :class:`SharpkdError`
    naming the key and its section (not a ``KeyError``); sub-sections are :class:`Params` too."""

    def __init__(self, data: dict, where: str, path: str) -> None:
        super().__init__({k: Params(v, f"{where}.{k}", path) if isinstance(v, dict) else v for k, v in data.items()})
        self.where, self.path = where, path

    def __missing__(self, key):
        raise SharpkdError(f"{self.path}: section {self.where} has no key {key!r}; add it (params.yaml lists every key)")


# --------------------------------------------------------------------------------------------
# the schema of params.yaml: every section's keys, their types and ranges


class _Check:
    """One value's rule; ``__call__(value, where)`` raises :class:`SharpkdError` when it fails."""

    def __init__(self, describe: str, ok: Callable[[object], bool]) -> None:
        self.describe, self.ok = describe, ok

    def __call__(self, value, where: str) -> None:
        if not self.ok(value):
            raise SharpkdError(f"{where} must be {self.describe}, got {value!r}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    import math

    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _int(lo: int, hi: int | None = None) -> _Check:
    top = f" to {hi}" if hi is not None else " or more"
    return _Check(f"an integer from {lo}{top}", lambda v: _is_int(v) and lo <= v and (hi is None or v <= hi))


def _num(lo: float, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False) -> _Check:
    text = ("a number " + (f"above {lo}" if lo_open else f"of at least {lo}")
            + ("" if hi is None else (f" and below {hi}" if hi_open else f" and at most {hi}")))

    def ok(v) -> bool:
        if not _is_num(v) or (v <= lo if lo_open else v < lo):
            return False
        return hi is None or (v < hi if hi_open else v <= hi)

    return _Check(text, ok)


def _choice(*names: str) -> _Check:
    return _Check("one of " + ", ".join(names), lambda v: isinstance(v, str) and v in names)


def _str(optional: bool = True) -> _Check:
    return _Check("a string" + (" (or empty)" if optional else ""),
                  lambda v: isinstance(v, str) or (optional and v is None))


_BOOL = _Check("true or false", lambda v: isinstance(v, bool))
_MAPPING = _Check("a mapping", lambda v: isinstance(v, dict))
_DEVICE = _choice("auto", "cpu", "cuda")


def _list(item: _Check, min_len: int = 0, max_len: int | None = None) -> _Check:
    size = (f"{min_len}" if max_len == min_len else f"{min_len} to {max_len}" if max_len is not None
            else f"at least {min_len}")
    return _Check(f"a list of {size} item(s), each {item.describe}",
                  lambda v: isinstance(v, list) and min_len <= len(v) <= (max_len or len(v))
                  and all(item.ok(x) for x in v))


def _optional(check: _Check) -> _Check:
    return _Check(check.describe + " (or empty)", lambda v: v is None or check.ok(v))


def _regex() -> _Check:
    import re

    def ok(v) -> bool:
        if v is None or v == "":
            return True
        try:
            re.compile(v)
            return True
        except (re.error, TypeError):
            return False

    return _Check("a regular expression (or empty)", ok)


PROFILE = _Check("a plain name: letters, digits, '_' and '-', starting with a letter or digit (it names folders "
                 "under data/, models/ and metrics/)",
                 lambda v: isinstance(v, str) and __import__("re").fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", v)
                 is not None)

_MB = _optional(_num(0, lo_open=True))
PARAMS_SCHEMA: dict = {
    "profile": PROFILE,
    "download": {"source": _choice("sample", "dir", "url"), "dir": _str(), "url": _str(), "sha256": _str(),
                 "max_download_mb": _MB, "max_member_mb": _MB, "max_total_mb": _MB, "max_ratio": _MB},
    "resize": {"mode": _choice("fixed", "none"), "width": _int(1, 16384), "height": _int(1, 16384)},
    "slice": {"rows": _int(1, 1000), "cols": _int(1, 1000), "crop_height": _optional(_int(0, 16384)),
              "crop_width": _optional(_int(0, 16384)), "min_size": _int(1, 16384),
              "val_fraction": _num(0, 1, lo_open=True, hi_open=True), "seed": _int(0),
              "report_size": _optional(_list(_int(1, 16384), 0, 2)), "group_pattern": _regex()},
    "degrade": {"scale": _num(0, 1, lo_open=True), "codec": _choice("none", "jpeg", "h264"),
                "jpeg_quality": _int(1, 100), "h264_crf": _int(0, 51),
                "train_links": _optional(_list(_str(optional=False))),
                "val_links": _optional(_list(_str(optional=False))), "seed": _int(0)},
    "teacher": {"kind": _choice("restormer", "vdsr", "checkpoint"),
                "restormer": {"dim": _int(1, 1024), "num_blocks": _list(_int(1, 64), 4, 4),
                              "num_refinement_blocks": _int(0, 64), "heads": _list(_int(1, 64), 4, 4),
                              "ffn_expansion_factor": _num(0, 16, lo_open=True), "bias": _BOOL,
                              "LayerNorm_type": _choice("WithBias", "BiasFree")},
                "vdsr_path": _str(), "checkpoint": _str(), "sha256": _str(),
                "adapt": {"steps": _int(0, 10_000_000), "lr": _num(0, 1, lo_open=True), "patch": _int(8, 4096),
                          "batch": _int(1, 4096), "seed": _int(0), "checkpoint_every": _int(1)},
                "allow_worse_than_input": _BOOL, "gate": _choice("input", "lanczos"), "self_ensemble": _BOOL,
                "tile": _int(8, 16384),
                "overlap": _int(0, 4096), "device": _DEVICE, "nproc": _int(1, 4096)},
    "train": {"arch": _choice("sharp", "report"), "arch_config": _optional(_MAPPING),  # checked by build_student
              "epochs": _int(1, 1_000_000), "steps_per_epoch": _int(0), "batch": _int(1, 4096), "patch": _int(8, 4096),
              "lr": _num(0, 1, lo_open=True), "seed": _int(0), "device": _DEVICE,
              "int8": {"steps": _int(0), "lr": _num(0, 1, lo_open=True), "first_bits": _int(2, 8)},
              "zoom": _num(0, 1, lo_open=True),
              "loss": {k: _num(0) for k in ("l1_gt", "ssim", "vgg_feature", "deep_feature", "l1_teacher", "l2_gt",
                                            "l2_teacher", "l2_teacher_zoom")},
              "vgg": {"backbone": _choice("vgg19_relu3_1", "vgg16"), "path": _str(),
                      "layers": _optional(_list(_str(optional=False))), "deep_layer": _str(), "sha256": _str(),
                      "url": _str(), "cache_dir": _str()}},
    "evaluate": {"unsharp_radii": _list(_num(0, 100, lo_open=True), 1), "unsharp_amounts": _list(_num(0, 100), 1),
                 "grid_images": _int(0, 1000), "device": _DEVICE,
                 "video": {"dir": _str(), "frames": _int(2, 100_000), "start": _int(0, 10_000_000),
                           "links": _list(_str(optional=False), 1)}},
}
"""What ``params.yaml`` may hold: per section, each key's rule (a nested dict is a sub-section).
Keys may be absent (the stage's default applies); a key that is not listed is an error."""


def check_params(section: str, value, path: str | Path = "params.yaml") -> None:
    """Check ``value``, the ``section`` of ``params.yaml``, against :data:`PARAMS_SCHEMA`;
    :class:`SharpkdError` names the file, the key and its section.  A section the schema does not
    list is not checked."""
    if section not in PARAMS_SCHEMA:
        return
    _check_node(PARAMS_SCHEMA[section], value, section, str(path))


def _check_node(rule, value, where: str, path: str) -> None:
    if isinstance(rule, _Check):
        try:
            rule(value, where)
        except SharpkdError as exc:
            raise SharpkdError(f"{path}: {exc}") from None
        return
    if not isinstance(value, dict):
        raise SharpkdError(f"{path}: {where} must be a mapping of keys ({', '.join(rule)}), got {value!r}")
    unknown = sorted(str(k) for k in value if k not in rule)
    if unknown:
        raise SharpkdError(f"{path}: unknown key(s) {', '.join(map(repr, unknown))} in section {where}; "
                           f"it takes {', '.join(rule)}")
    for key, sub in value.items():
        _check_node(rule[key], sub, f"{where}.{key}", path)


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
