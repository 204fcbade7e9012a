"""Make a pipeline-trained student the one shipped inside the package (a repository tool).

``python tools/ship.py --profile photos [--name balanced] [--root CHECKOUT]`` copies ``models/<profile>/student.safetensors``
to the file of the shipped student ``name`` (:data:`sharpkd.app.shipped.SHIPPED`; ``balanced`` is
``sharpkd/weights/student-balanced.safetensors``) and writes its card beside it (``.json``): the model
card of the training stage plus the run's evaluation and what identifies the run
(:func:`sharpkd.nets.card.shipped_card`).  It refuses weights that are not the output ``dvc.lock``
records.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import yaml

from sharpkd.nets.card import shipped_card
from sharpkd.errors import SharpkdError
from sharpkd import provenance
from sharpkd.files import atomic_path, write_json

ROOT = Path(__file__).resolve().parents[1]


def _read(path: Path, loader=json.loads):
    if not path.is_file():
        raise SharpkdError(f"{path} not found: run the pipeline for this profile first (`dvc repro` or `dvc exp run`)")
    return loader(path.read_text())


def ship(profile: str, root: str | Path = ROOT, dest: str | Path | None = None, name: str = "balanced",
         revision: str | None = None) -> Path:
    """Ship ``root``'s run of ``profile`` as student ``name``; ``revision`` (default: ``root``'s git
    HEAD) is the code revision the run used, recorded in the card."""
    from sharpkd.app.shipped import SHIPPED

    if name not in SHIPPED:
        raise SharpkdError(f"no shipped student is named {name!r}: add it to sharpkd.app.shipped.SHIPPED first "
                           f"(now: {', '.join(SHIPPED)})")
    root = Path(root)
    dest = Path(dest) if dest is not None else root / "sharpkd" / "weights"
    target = dest / SHIPPED[name][0]
    weights = root / "models" / profile / "student.safetensors"
    # the evaluate stage's own settings file (data/<profile>/) describes this run; the copy kept beside
    # the metrics may be another run's
    settings = root / "data" / profile / "eval_settings.json"
    if not settings.is_file():
        settings = root / "metrics" / profile / "eval_settings.json"
    card = shipped_card(_read(root / "models" / profile / "student.json"),
                        _read(root / "metrics" / profile / "eval.json"),
                        _read(settings),
                        _read(root / "dvc.lock", yaml.safe_load), weights, profile=profile,
                        revision=revision or provenance.revision(root).get("commit", "unknown"))
    dest.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        shutil.copyfile(weights, tmp)
    write_json(target.with_suffix(".json"), card)
    return target


def commit_of(rev: str, repo: Path | None = None) -> str:
    """The full sha of commit ``rev`` of the repository at ``repo`` (default: this checkout; one error
    line when it has no such commit)."""
    import subprocess

    repo = repo or ROOT
    out = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=repo,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SharpkdError(f"--revision {rev}: not a commit of {repo}")
    return out.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="photos")
    ap.add_argument("--name", default="balanced", help="which shipped student it becomes (sharpkd.app.shipped.SHIPPED)")
    ap.add_argument("--root", type=Path, default=ROOT,
                    help="the checkout whose run to ship (its models/, metrics/, dvc.lock and git revision); "
                         "the weights go into this checkout's sharpkd/weights")
    ap.add_argument("--revision", help="the code revision the run used, a commit of this repository (default: "
                                        "the root's git HEAD; give it when that HEAD only adds the profile's params "
                                        "and dvc.lock to a commit of this repository)")
    args = ap.parse_args(argv)
    try:
        revision = commit_of(args.revision) if args.revision else None
        print("shipped", ship(args.profile, root=args.root, dest=ROOT / "sharpkd" / "weights", name=args.name,
                              revision=revision))
    except SharpkdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
