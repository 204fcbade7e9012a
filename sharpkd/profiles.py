"""Run the pipeline on a profile: a params file under ``profiles/`` that overrides ``params.yaml``.

A profile holds only the keys it changes, in ``params.yaml``'s own sections; its ``profile`` key
names the run's folders (``data/<profile>``, ``models/<profile>``, ``metrics/<profile>``)::

    python -m sharpkd.profiles photos                       # dvc exp run with profiles/photos.yaml
    python -m sharpkd.profiles photos -- -n gt_only -S train.loss.l2_teacher=0
    python -m sharpkd.profiles photos --print               # the `dvc exp run` command, not run

It is DVC's own experiment run (``dvc exp run -S key=value ...``), so the run-cache, ``dvc exp
show`` and ``dvc metrics diff`` work on it as on any other run.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

from sharpkd.errors import SharpkdError, one_line

PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


def _yaml():
    import yaml

    return yaml


def load_profile(name: str, root: str | Path = ".") -> dict:
    """The overrides of ``profiles/<name>.yaml`` (or of the file ``name`` names)."""
    root = Path(root)
    path = Path(name) if name.endswith((".yaml", ".yml")) else root / "profiles" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (root / "profiles").glob("*.yaml"))
        raise SharpkdError(f"no profile {name!r} ({path} not found); profiles: {', '.join(known) or 'none'}")
    try:
        data = _yaml().safe_load(path.read_text())
    except _yaml().YAMLError as exc:
        raise SharpkdError(f"{path} is not valid YAML: {one_line(exc)}") from None
    if not isinstance(data, dict):
        raise SharpkdError(f"{path} must hold a mapping of params.yaml sections")
    return data


def overrides(profile: dict, params: dict, where: str = "profile") -> list[str]:
    """``key=value`` for every leaf of ``profile``, each key checked against ``params`` (an unknown
    key is an error naming it).  Mappings that ``params`` holds as one value (``arch_config``) and
    lists stay one value, written as YAML flow; a mapping is ``++key=value``."""
    yaml = _yaml()
    out: list[str] = []

    def walk(node: dict, base: dict, prefix: str) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if not isinstance(base, dict) or key not in base:
                raise SharpkdError(f"{where}: unknown key {dotted!r} (not in params.yaml)")
            if isinstance(value, dict) and isinstance(base[key], dict) and base[key]:
                walk(value, base[key], dotted + ".")
            else:
                text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
                text = text.removesuffix(chr(10) + "...")  # a scalar ends its document
                # A whole mapping replaces params.yaml's (often empty) one: Hydra's ``++`` (add or
                # override), since plain ``key=`` cannot add keys to a mapping that lacks them.
                out.append(f"{'++' if isinstance(value, dict) else ''}{dotted}={text}")

    walk(profile, params, "")
    name = profile.get("profile")
    if not isinstance(name, str) or not PROFILE_NAME.match(name):
        raise SharpkdError(f"{where}: 'profile' must be a plain name (letters, digits, _ . -), got {name!r}")
    return out


def command(name: str, extra: list[str], root: str | Path = ".") -> list[str]:
    params = _yaml().safe_load((Path(root) / "params.yaml").read_text())
    sets = overrides(load_profile(name, root), params, where=f"profile {name}")
    return [sys.executable, "-m", "dvc", "exp", "run", *[a for kv in sets for a in ("-S", kv)], *extra]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sharpkd.profiles", description=__doc__.split("\n")[0])
    parser.add_argument("profile", help="a name under profiles/ (e.g. photos) or a .yaml file")
    parser.add_argument("--print", action="store_true", help="print the dvc command instead of running it")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    try:
        cmd = command(args.profile, extra)
    except (SharpkdError, OSError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    if args.print:
        print(shlex.join(["dvc", *cmd[3:]]))
        return 0
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
