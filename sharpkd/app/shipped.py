"""The students shipped inside the package (``sharpkd/weights/``): their names, files and cards.

Each has its model card beside its weights (``.json``, written by ``tools/ship.py``): what it
is, what it was trained on and how it scored.  Nothing here imports torch, so ``--help`` stays
fast.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from sharpkd.errors import SharpkdError, UsageError

#: name -> (weights file, what it is for).  ``balanced`` is what ``sharpkd`` runs without ``--student``.
SHIPPED = {
    "balanced": ("student-balanced.safetensors", "int8, the balance of quality and speed: two experts of one network, "
                 "picked per frame by a link estimate (trained on clean pairs for uncoded frames, on clean and "
                 "coded video pairs for coded ones)"),
    "fast": ("student-fast.safetensors", "int8, a smaller network for slower CPUs and higher frame rates"),
    "quality": ("student-quality.safetensors", "float, the balanced network trained on clean pairs: sharpest on frames that were not coded, slower"),
    "lite": ("student-lite.safetensors", "float, the smallest network, trained on clean and H.264 pairs: for CPUs without VNNI (AVX2 only)"),
}
DEFAULT_STUDENT = "balanced"

#: name -> (the clean-pairs expert's weights, the link estimate): a shipped student that is a pair of
#: experts of the same network.  Its own file (:data:`SHIPPED`) is the link-mixture expert; each frame
#: gets the clean-pairs one where the link estimate (:mod:`sharpkd.nets.link`) reads it as uncoded.
EXPERTS = {"balanced": ("student-balanced-clean.safetensors", "link-estimate.safetensors")}


def expert_files(weights: str | Path) -> tuple[Path, Path] | None:
    """``(clean-pairs expert, link estimate)`` when ``weights`` is the file of a shipped pair of experts
    (:data:`EXPERTS`), else ``None`` (any other student file runs alone)."""
    try:
        path = Path(weights).resolve()
    except OSError:
        return None
    folder = Path(str(resources.files("sharpkd") / "weights")).resolve()
    for name, (clean, estimate) in EXPERTS.items():
        if path == folder / SHIPPED[name][0]:
            pair = folder / clean, folder / estimate
            missing = [p for p in pair if not p.is_file()]
            if missing:
                raise SharpkdError(f"the shipped student {name} is a pair of experts, and {missing[0]} is missing "
                                   "from the installation; reinstall sharpkd")
            return pair
    return None


def shipped_weights(name: str = DEFAULT_STUDENT) -> Path:
    """Path of the shipped student ``name`` (:data:`SHIPPED`) inside the installed package."""
    if name not in SHIPPED:
        raise UsageError(f"--student must be one of {', '.join(SHIPPED)}, got {name!r}")
    path = Path(str(resources.files("sharpkd") / "weights" / SHIPPED[name][0]))
    if not path.is_file():
        raise SharpkdError(f"the shipped student weights are missing from the installation ({path}); "
                           "pass --weights PATH or reinstall sharpkd")
    return path


def shipped_card(name: str) -> dict:
    """The model card of the shipped student ``name`` (``{}`` when it is missing or unreadable)."""
    try:
        return json.loads(shipped_weights(name).with_suffix(".json").read_text())
    except (SharpkdError, OSError, ValueError):
        return {}


def shipped_config(name: str) -> dict:
    """The network config stored in the shipped weights' safetensors header (every setting, defaults
    included; ``{}`` when unreadable), read without loading the tensors."""
    from sharpkd.files import safetensors_metadata

    try:
        config = json.loads(safetensors_metadata(shipped_weights(name))["config"])
    except (SharpkdError, ValueError, KeyError, TypeError):
        return {}
    return config if isinstance(config, dict) else {}


def describe(name: str) -> str:
    """One line: the student's network and what the card says it gains over the received frame."""
    card = shipped_card(name)
    cfg = shipped_config(name) or card.get("arch_config") or {}
    net = f"{card.get('arch', '?')} c{cfg.get('channels', '?')}b{cfg.get('blocks', '?')}" if card else "?"
    gain = ""
    if name in EXPERTS:  # uncoded frames go to the clean-pairs expert: its card holds the clean gain
        net += " x2"
        try:
            card = json.loads((shipped_weights(name).parent / EXPERTS[name][0]).with_suffix(".json").read_text())
        except (SharpkdError, OSError, ValueError):
            card = {}
    g = ((card.get("evaluation") or {}).get("student_gain_over_input") or {}).get("psnr_db")
    if isinstance(g, (int, float)):
        gain = f", {g:+.2f} dB over the degraded input on the photo pool"
    return f"{name}: {SHIPPED[name][1]} ({net}{gain})"
