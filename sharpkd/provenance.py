"""Where a measurement came from: the code revision and the command line that made it.

Benchmarks and experiments add :func:`record` to the JSON they write, beside
:func:`sharpkd.inference.bench.machine`; ``tools/docs.py`` renders all three under each generated
table.  Pipeline stages need none of it: ``dvc.lock`` records their code, params and outputs.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

#: the checkout this package was imported from, when it was imported from one
SOURCE_ROOT = Path(__file__).resolve().parents[1]


def revision(root: str | Path = SOURCE_ROOT) -> dict:
    """``{"commit": sha, "dirty": bool}`` of the git checkout at ``root`` (dirty: uncommitted
    changes to tracked files), or ``{"version": ...}`` of the installed package where ``root`` is
    not a checkout (``pip install`` from PyPI or a wheel)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=20)
        if commit.returncode == 0 and (Path(root) / "sharpkd").is_dir():
            status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=20)
            return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib import metadata

    try:
        return {"version": metadata.version("sharpkd")}
    except metadata.PackageNotFoundError:
        return {"version": "unknown"}


def command_line(argv: list[str] | None = None) -> str:
    """The command as a person would retype it: ``sharpkd bench ...`` for the installed command,
    ``python experiments/x.py ...`` for a script (path relative to the checkout where it lies in one)."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return ""
    head = Path(argv[0])
    if head.suffix == ".py":
        try:
            shown = head.resolve().relative_to(SOURCE_ROOT).as_posix()
        except ValueError:
            shown = str(head)
        return shlex.join(["python", shown, *argv[1:]])
    return shlex.join([head.name, *argv[1:]])


def record(argv: list[str] | None = None) -> dict:
    """``{"revision": ..., "command": ...}`` for a JSON that reports a measurement."""
    return {"revision": revision(), "command": command_line(argv)}


__all__ = ["SOURCE_ROOT", "command_line", "record", "revision"]
