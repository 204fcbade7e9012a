"""README tables generated from the committed metrics (never typed by hand).

``python -m sharpkd.results --update README.md`` rewrites every block between
``<!-- results:PROFILE -->`` and ``<!-- /results:PROFILE -->`` with the table built from
``metrics/PROFILE/{eval,teacher}.json``, and every ``<!-- ablation:PROFILE -->`` block with the
side-by-side table of the runs whose ``eval.json`` were saved as ``metrics/PROFILE/ablation/NAME.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

LABELS = {
    "identity": "degraded input (identity)",
    "bicubic": "bicubic re-upsampling of the 60% frame",
    "lanczos": "Lanczos re-upsampling of the 60% frame",
    "unsharp": "unsharp mask (tuned on training crops)",
    "teacher": "teacher",
    "student": "student",
}


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def table(metrics_dir: str | Path) -> str:
    """Markdown: one row per method with PSNR, SSIM and the gain over the degraded input."""
    metrics_dir = Path(metrics_dir)
    ev = _load(metrics_dir / "eval.json")
    if ev is None:
        raise FileNotFoundError(f"{metrics_dir / 'eval.json'} not found: run `dvc repro` first")
    teacher = _load(metrics_dir / "teacher.json") or {}
    methods = ev["methods"]
    base = methods["identity"]
    lines = ["| method | PSNR (dB) | SSIM | ΔPSNR vs input | ΔSSIM vs input |", "|---|---:|---:|---:|---:|"]
    for name in sorted(methods, key=lambda k: list(LABELS).index(k) if k in LABELS else len(LABELS)):
        m = methods[name]
        label = LABELS.get(name, name)
        if name == "teacher" and teacher.get("teacher"):
            t = teacher["teacher"]
            label += f" ({t.get('arch', t.get('kind'))}, {t.get('params', 0):,} params"
            label += ", adapted)" if t.get("adapt", {}).get("steps") else ", as is)"
        if name == "student":
            s = ev["student"]
            label += f" ({s['arch']}, {s['parameters']:,} params, {s['macs_per_1080p_frame'] / 1e9:.2f} GMAC/1080p)"
        if name == "teacher" and "teacher_adapted" in teacher and "teacher_as_is" in teacher:
            before = teacher["teacher_as_is"]  # scored by the teacher stage on the same images
            what = ("teacher as downloaded (pretrained, not adapted)" if teacher.get("teacher", {}).get("kind") != "restormer"
                    else "teacher before adaptation (random init)")
            lines.append(f"| {what} | {before['psnr']:.3f} | {before['ssim']:.4f} | "
                         f"{before['psnr'] - base['psnr']:+.3f} | {before['ssim'] - base['ssim']:+.4f} |")
        lines.append(f"| {label} | {m['psnr']:.3f} | {m['ssim']:.4f} | {m['psnr'] - base['psnr']:+.3f} | "
                     f"{m['ssim'] - base['ssim']:+.4f} |")
    lines.append("")
    lines.append(f"{ev['n_images']} full validation images; SSIM: skimage `structural_similarity` "
                 "(gaussian_weights, sigma 1.5, population covariance, data_range 255, RGB); PSNR: RGB, data_range 255; "
                 f"unsharp radius {ev['unsharp']['radius']}, amount {ev['unsharp']['amount']}.")
    return "\n".join(lines) + "\n"


def ablation_table(metrics_dir: str | Path) -> str:
    """Markdown: one row per saved run (student PSNR/SSIM on the same validation images)."""
    runs = sorted(Path(metrics_dir, "ablation").glob("*.json"))
    if not runs:
        raise FileNotFoundError(f"no runs saved under {Path(metrics_dir, 'ablation')}")
    lines = ["| run | student | params | GMAC/1080p | PSNR (dB) | SSIM | ΔPSNR vs input |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for path in runs:
        ev = json.loads(path.read_text())
        s, base = ev["methods"]["student"], ev["methods"]["identity"]
        st = ev["student"]
        lines.append(f"| {path.stem} | {st['arch']} | {st['parameters']:,} | {st['macs_per_1080p_frame'] / 1e9:.2f} | "
                     f"{s['psnr']:.3f} | {s['ssim']:.4f} | {s['psnr'] - base['psnr']:+.3f} |")
    return "\n".join(lines) + "\n"


def update(readme: str | Path, root: str | Path = ".") -> list[str]:
    """Rewrite the results blocks of ``readme``; returns the profiles updated."""
    readme = Path(readme)
    text = readme.read_text()
    done = []

    def repl(m: re.Match) -> str:
        profile = m.group(1)
        done.append(profile)
        return f"<!-- results:{profile} -->\n{table(Path(root) / 'metrics' / profile)}<!-- /results:{profile} -->"

    def repl_ablation(m: re.Match) -> str:
        profile = m.group(1)
        done.append(f"{profile} (ablation)")
        return (f"<!-- ablation:{profile} -->\n{ablation_table(Path(root) / 'metrics' / profile)}"
                f"<!-- /ablation:{profile} -->")

    new = re.sub(r"<!-- results:(\w+) -->.*?<!-- /results:\1 -->", repl, text, flags=re.S)
    new = re.sub(r"<!-- ablation:(\w+) -->.*?<!-- /ablation:\1 -->", repl_ablation, new, flags=re.S)
    if new != text:
        readme.write_text(new)
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--update", metavar="README", help="rewrite the results blocks of this file")
    ap.add_argument("--profile", default="default", help="print the table of metrics/PROFILE")
    args = ap.parse_args(argv)
    try:
        if args.update:
            print("updated:", ", ".join(update(args.update)) or "nothing")
        else:
            print(table(Path("metrics") / args.profile), end="")
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
