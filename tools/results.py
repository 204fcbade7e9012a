"""README tables generated from the committed metrics (never typed by hand).

``python tools/results.py --update README.md`` rewrites every block between
``<!-- results:PROFILE -->`` and ``<!-- /results:PROFILE -->`` with the table built from
``metrics/PROFILE/{eval,eval_settings,teacher}.json``, ``metrics/PROFILE/bench/*.json`` and the saved runs of
``metrics/PROFILE/ablation/``, redraws ``metrics/PROFILE/curves.png`` from the training logs, and every ``<!-- ablation:PROFILE -->`` block with the
side-by-side table of the runs whose ``eval.json`` were saved as ``metrics/PROFILE/ablation/NAME.json``, and the
``<!-- video -->`` block with the runs of ``experiments/video_bench.py --out metrics/video/NAME.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from sharpkd.files import atomic_path

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


# Runs saved under metrics/PROFILE/ablation/ that get a row of their own in the results table
# (their student only; every run scores the same validation images): run -> (the row's label, the
# bench row of its speed, metrics/PROFILE/bench/<row>-cpu.json; None: the default student's row
# when the run's arch is the default's, else the row named after its arch).
ABLATION_ROWS = {
    "seed": ("the report's student (`{arch}`), same loss and budget", None),
    "gt_only": ("`{arch}` c16b1 (16 channels, 1 block), without distillation (ground truth only)", "c16b1"),
    "c16b1": ("`{arch}` c16b1, distilled (float)", "c16b1"),
    "int8": ("`{arch}` c16b1, distilled, then int8 (`--student fast`)", "fast"),
    "quality": ("`{arch}` c32b2 (32 channels, 2 blocks), distilled (`--student quality`)", "quality"),
    "c8b1_clean": ("`{arch}` c8b1 (8 channels, 1 block), distilled, clean pairs (float)", "lite"),
    "lite": ("`{arch}` c8b1, ground truth only, clean and H.264 pairs (`--student lite`)", "lite"),
}
# The label of the profile's own run (its eval.json), where it is not the embedded default's student.
MAIN_ROWS = {
    "photos": "**`{arch}` c32b2, distilled on the link mixture, then int8 (`--student balanced`: its expert for coded frames)**",
}


def _stage_settings(metrics_dir: Path) -> Path:
    """Where the evaluate stage wrote the settings of ``metrics_dir``'s run: ``data/<profile>/``."""
    return Path(metrics_dir).parent.parent / "data" / Path(metrics_dir).name / "eval_settings.json"


def settings(metrics_dir: Path) -> dict:
    """How the run was evaluated: ``eval_settings.json`` of the evaluate stage (a cached DVC output
    at ``data/<profile>/``, present after ``dvc repro`` or ``dvc pull``), else the copy kept beside
    the metrics (``metrics/<profile>/``: written by :func:`keep_settings` and ``--save-run``), so a
    fresh clone renders the tables as committed."""
    metrics_dir = Path(metrics_dir)
    return _load(_stage_settings(metrics_dir)) or _load(metrics_dir / "eval_settings.json") or {}


def keep_settings(metrics_dir: Path) -> Path | None:
    """Copy the evaluate stage's ``eval_settings.json`` beside the metrics of ``metrics_dir``
    (committed with them; not a DVC output: an uncached output would turn the stage's run-cache
    off).  None when the stage's file is absent (nothing to refresh)."""
    metrics_dir = Path(metrics_dir)
    source = _stage_settings(metrics_dir)
    if not source.is_file() or not metrics_dir.is_dir():
        return None
    out = metrics_dir / "eval_settings.json"
    if not out.is_file() or out.read_bytes() != source.read_bytes():
        with atomic_path(out) as tmp:
            tmp.write_bytes(source.read_bytes())
    return out


def frame_size(bench: dict) -> tuple[int, int]:
    """(width, height) a ``sharpkd bench`` JSON timed (files from before ``--width``/``--height``: 1920x1080)."""
    return bench.get("width", 1920), bench.get("height", 1080)


def _bench(metrics_dir: Path) -> dict:
    """``{row: {"cpu": result, "cuda": result}}`` from ``metrics_dir/bench/<row>-<cpu|cuda>.json``
    (written by ``sharpkd bench --out``)."""
    out: dict[str, dict] = {}
    for path in sorted(Path(metrics_dir, "bench").glob("*-*.json")):
        row, kind = path.stem.rsplit("-", 1)
        r = json.loads(path.read_text())
        if frame_size(r) == (1920, 1080):  # the table's fps are per 1080p frame
            out.setdefault(row, {})[kind] = r
    return out


def _num(value, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def link_label(spec: str) -> str:
    """A column title for link ``spec``: ``h264:23`` -> ``H.264 CRF 23``, ``jpeg:75`` -> ``JPEG q75``."""
    codec, _, value = spec.partition(":")
    return {"h264": f"H.264 CRF {value}", "jpeg": f"JPEG q{value}"}.get(codec, "no codec" if spec == "none" else spec)


def _link_order(ev: dict, info: dict) -> list[str]:
    """The extra link sets of ``eval.json`` in params order (``eval_settings.json``), else by codec and number."""
    links = list(ev.get("links") or {})
    order = [s for s in info.get("val_links") or [] if s in links]
    def natural(spec: str):
        codec, _, value = spec.partition(":")
        return codec, int(value) if value.isdigit() else -1, spec

    return order + sorted((s for s in links if s not in order), key=natural)


def _on_links(ev: dict, method: str, specs: list[str]) -> dict:
    """``{spec: {"psnr", "ssim", "gain"}}`` of ``method`` on each extra link set of ``ev`` (gain:
    PSNR over that set's own received input)."""
    out = {}
    for spec in specs:
        m = ((ev.get("links") or {}).get(spec) or {}).get("methods") or {}
        if method in m:
            out[spec] = m[method] | {"gain": m[method]["psnr"] - m["identity"]["psnr"] if "identity" in m else None}
    return out


def _rows(metrics_dir: Path) -> tuple[dict, dict, list[str], list[tuple]]:
    """``(eval.json, eval settings, link specs, rows)`` of a profile's results table; each row is
    ``(label, full-size scores, report-size scores, params, macs, bench row, {link: scores})``."""
    ev = _load(metrics_dir / "eval.json")
    if ev is None:
        raise FileNotFoundError(f"{metrics_dir / 'eval.json'} not found: run `dvc repro` first")
    info = settings(metrics_dir)
    teacher = _load(metrics_dir / "teacher.json") or {}
    report = ev.get("report_protocol")
    rmethods = (report or {}).get("methods", {})
    runs = _runs(metrics_dir)
    methods = ev["methods"]
    t = info.get("teacher") or {}
    adapted = "teacher_as_is" in methods
    specs = _link_order(ev, info)

    rows = []  # (label, full-size scores, report-size scores, params, macs, bench row, {link: scores})
    for name in ("identity", "bicubic", "lanczos", "unsharp"):
        if name in methods:
            rows.append((LABELS[name], methods[name], report and report["methods"].get(name), None, None, None,
                         _on_links(ev, name, specs)))
    t_params, t_macs = teacher.get("parameters"), teacher.get("macs_per_1080p_frame")
    if "teacher" in methods:
        arch = t.get("arch") or t.get("kind") or "teacher"
        if adapted:
            what = ("as downloaded (pretrained, not adapted)" if t.get("kind") != "restormer"
                    else "before adaptation (random init)")
            rows.append((f"teacher {arch}, {what}", methods["teacher_as_is"], rmethods.get("teacher_as_is"),
                         t_params, t_macs, "teacher", _on_links(ev, "teacher_as_is", specs)))
        rows.append((f"teacher {arch}, " + ("adapted" if adapted else "as is"), methods["teacher"],
                     rmethods.get("teacher"), t_params, t_macs, "teacher", _on_links(ev, "teacher", specs)))
    arch = (info.get("student") or {}).get("arch", "student")
    for stem, (label, bench_row) in ABLATION_ROWS.items():
        if stem in runs:
            run, run_arch = runs[stem]
            st = run["student"]
            rows.append((label.format(arch=run_arch), run["methods"]["student"],
                         (run.get("report_protocol") or {}).get("methods", {}).get("student"),
                         st["parameters"], st["macs_per_1080p_frame"],
                         bench_row or ("student" if run_arch == arch else run_arch),  # same arch, same speed
                         _on_links(run, "student", specs)))
    st = ev["student"]
    label = MAIN_ROWS.get(metrics_dir.name, "**default student (`{arch}`), distilled**").format(arch=arch)
    rows.append((label, methods["student"],
                 rmethods.get("student"), st["parameters"], st["macs_per_1080p_frame"], "student",
                 _on_links(ev, "student", specs)))

    return ev, info, specs, rows


def table(metrics_dir: str | Path) -> str:
    """Markdown: one row per method; PSNR/SSIM at full size (and at the report's protocol size
    when evaluated), the gain over the degraded input, parameters, MACs per 1080p frame and the
    1080p frame rates of ``metrics_dir/bench``."""
    metrics_dir = Path(metrics_dir)
    ev, info, specs, rows = _rows(metrics_dir)
    report = ev.get("report_protocol")
    bench = _bench(metrics_dir)
    base = ev["methods"]["identity"]

    rsize = info.get("report_protocol_size") if report else None
    head = ["method", "PSNR (dB)", "SSIM", "ΔPSNR vs input"]
    if rsize:
        head += [f"PSNR at {rsize}", f"SSIM at {rsize}"]
    for spec in specs:
        head += [f"PSNR at {link_label(spec)}", f"Δ vs received at {link_label(spec)}"]
    head += ["params", "GMAC / 1080p", "CPU fps 1080p", "GPU fps 1080p"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for label, full, small, params, macs, key, on_links in rows:
        cells = [label, f"{full['psnr']:.3f}", f"{full['ssim']:.4f}", f"{full['psnr'] - base['psnr']:+.3f}"]
        if rsize:
            cells += [_num(small and small["psnr"], ".3f"), _num(small and small["ssim"], ".4f")]
        for spec in specs:
            got = on_links.get(spec) or {}
            cells += [_num(got.get("psnr"), ".3f"), _num(got.get("gain"), "+.3f")]
        b = bench.get(key, {}) if key else {}
        fps = {k: b[k]["fps"] for k in ("cpu", "cuda") if k in b}
        cells += [_num(params, ","), _num(macs and macs / 1e9, ",.2f"),
                  _num(fps.get("cpu"), ".3g" if fps.get("cpu", 1) < 1 else ".1f"), _num(fps.get("cuda"), ".1f")]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    sizes = ", ".join(info.get("sizes", [])) or "their stored size"
    note = (f"{ev['n_images']} held-out validation images scored whole at full size ({sizes})"
            + (f" and resized to {rsize} (the report's protocol)" if rsize else "") + ". "
            "SSIM: skimage `structural_similarity` (gaussian_weights, sigma 1.5, population covariance, "
            "data_range 255, RGB); PSNR: RGB, data_range 255; "
            + (f"unsharp radius {info['unsharp']['radius']}, amount {info['unsharp']['amount']}." if "unsharp" in info
               else ""))
    if specs:
        note += (" " + ", ".join(link_label(s) for s in specs) + ": the same validation images (full size) with the "
                 "60% frame coded by that link before the upscale, every method restoring what it received; "
                 "Δ vs received: PSNR gain over that set's own received input.")
    where = []
    for kind, name in (("cpu", "CPU"), ("cuda", "GPU")):
        machines = {json.dumps(r[kind].get("machine", {}), sort_keys=True) for r in bench.values() if kind in r}
        for m in sorted(machines):
            m = json.loads(m)
            here = {row: r[kind] for row, r in bench.items() if kind in r and r[kind].get("machine", {}) == m}
            threads = sorted({r.get("threads") for r in here.values()} - {None})
            desc = m.get("gpu") if kind == "cuda" else machine_label(m)
            runtimes = sorted(f"{row} via {r.get('runtime', 'torch')}" for row, r in here.items())
            where.append(f"{name} fps measured on {desc} (PyTorch {m.get('torch', '?')}"
                         + (f", {'/'.join(map(str, threads))} threads" if kind == "cpu" and threads else "")
                         + (f"; {', '.join(runtimes)}" if runtimes else "") + ")")
    if bench and not any("cuda" in r for r in bench.values()):
        where.append("GPU fps not measured")
    if where:
        note += " " + "; ".join(where) + "; `—`: not applicable or not measured."
    lines.append(note)
    return "\n".join(lines) + "\n"


def speed_plot(metrics_dir: str | Path) -> Path | None:
    """``metrics_dir/speed.png``: every row of the results table that has a CPU benchmark
    (``bench/<row>-cpu.json``) as PSNR gain over the degraded input (full size, primary set) against
    ms per 1080p frame, log x; the rows without one (the classical baselines) as horizontal lines.
    None when the profile has no benchmarks."""
    metrics_dir = Path(metrics_dir)
    bench = _bench(metrics_dir)
    if not any("cpu" in b for b in bench.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev, _, _, rows = _rows(metrics_dir)
    base = ev["methods"]["identity"]["psnr"]
    fig, ax = plt.subplots(figsize=(10, 5), dpi=100)
    machines, placed = set(), []
    for label, full, _small, _params, _macs, key, _links in rows:
        gain = full["psnr"] - base
        label = label.replace("**", "").replace("`", "")
        cpu = bench.get(key, {}).get("cpu") if key else None
        if cpu is None:
            if gain > 0:
                ax.axhline(gain, ls=":", color="tab:gray", lw=1)
                ax.text(0.01, gain, f" {label}", fontsize=7, va="bottom", color="tab:gray", transform=ax.get_yaxis_transform())
            continue
        machines.add(machine_label(cpu.get("machine", {})))
        ax.scatter(cpu["median_ms"], gain, s=36, color="tab:red" if key == "teacher" else "tab:blue", zorder=3)
        placed.append((cpu["median_ms"], gain, f"{label} ({cpu.get('runtime', 'torch')})"))
    texts: list[tuple[float, float]] = []  # labels top down; one within 3x in time and 0.1 dB moves down
    for ms, gain, label in sorted(placed, key=lambda p: -p[1]):
        y = gain
        for m, ty in texts:
            if 1 / 3 < m / ms < 3 and ty - y < 0.1:
                y = ty - 0.1
        texts.append((ms, y))
        ax.annotate(label, (ms, gain), xytext=(ms * 1.15, y), fontsize=7, va="center",
                    arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5} if y != gain else None)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.axvline(1000 / 24, ls="--", color="tab:green", lw=1)
    ax.text(1000 / 24, 0.02, " 24 fps", fontsize=7, color="tab:green", transform=ax.get_xaxis_transform())
    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi * 40)  # room for the labels of the slowest points
    ax.set(xlabel="ms per 1920x1080 frame (median of `sharpkd bench`)",
           ylabel="PSNR gain over the degraded input (dB), full size",
           title=f"{ev['n_images']} validation images; timed on " + " and ".join(sorted(machines)))
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    out = metrics_dir / "speed.png"
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out


def _runs(metrics_dir: Path) -> dict[str, tuple[dict, str]]:
    """Saved runs: ``{name: (eval.json, student arch)}`` from ``ablation/<name>.json`` and
    ``ablation/<name>-settings.json``."""
    out = {}
    for path in sorted(Path(metrics_dir, "ablation").glob("*.json")):
        if path.stem.endswith("-settings"):
            continue
        info = _load(path.with_name(f"{path.stem}-settings.json")) or {}
        out[path.stem] = (json.loads(path.read_text()), (info.get("student") or {}).get("arch", "?"))
    return out


def ablation_table(metrics_dir: str | Path) -> str:
    """Markdown: one row per saved run (student PSNR/SSIM on the same validation images)."""
    runs = _runs(Path(metrics_dir))
    if not runs:
        raise FileNotFoundError(f"no runs saved under {Path(metrics_dir, 'ablation')}")
    lines = ["| run | student | params | GMAC/1080p | PSNR (dB) | SSIM | ΔPSNR vs input |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, (ev, arch) in runs.items():
        s, base = ev["methods"]["student"], ev["methods"]["identity"]
        st = ev["student"]
        lines.append(f"| {name} | {arch} | {st['parameters']:,} | {st['macs_per_1080p_frame'] / 1e9:.2f} | "
                     f"{s['psnr']:.3f} | {s['ssim']:.4f} | {s['psnr'] - base['psnr']:+.3f} |")
    return "\n".join(lines) + "\n"


def _tsv(path: Path) -> tuple[list[float], list[float]]:
    """A dvclive metric file (``step<TAB>value`` with a header) as (steps, values)."""
    steps, values = [], []
    for line in path.read_text().splitlines()[1:]:
        if line.strip():
            a, b = line.split("\t")[:2]
            steps.append(float(a))
            values.append(float(b))
    return steps, values


def curves(metrics_dir: str | Path) -> Path | None:
    """``metrics_dir/curves.png``: validation PSNR per epoch of the run (dvclive, ``train/plots``)
    and of the saved ablation runs (``ablation/<run>-val_psnr.tsv``) against the degraded input,
    Lanczos and the teacher, beside the run's training loss.  None when the run has no curves."""
    metrics_dir = Path(metrics_dir)
    live = metrics_dir / "train" / "plots" / "metrics"
    if not (live / "val_psnr.tsv").exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = _load(metrics_dir / "eval.json") or {}
    info = settings(metrics_dir)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    x, y = _tsv(live / "val_psnr.tsv")
    ax.plot([s + 1 for s in x], y, "o-", label=f"{(info.get('student') or {}).get('arch', 'student')} (this run)")
    for path in sorted((metrics_dir / "ablation").glob("*-val_psnr.tsv")):
        x2, y2 = _tsv(path)
        ax.plot([s + 1 for s in x2], y2, ".--", label=path.name[: -len("-val_psnr.tsv")])
    styles = {"identity": ("degraded input", "k"), "lanczos": ("Lanczos", "tab:gray"), "teacher": ("teacher", "tab:red")}
    for name, (label, colour) in styles.items():
        if name in ev.get("methods", {}):
            ax.axhline(ev["methods"][name]["psnr"], ls=":", color=colour, label=label)
    ax.set(xlabel="epoch", ylabel="validation PSNR (dB), full images", title="student on the validation images")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if (live / "train_loss.tsv").exists():
        x, y = _tsv(live / "train_loss.tsv")
        bx.plot([s + 1 for s in x], y, "o-")
        bx.set_yscale("log")
    bx.set(xlabel="epoch", ylabel="mean training loss", title="training loss (this run)")
    bx.grid(alpha=0.3)
    fig.tight_layout()
    out = metrics_dir / "curves.png"
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out


def _link_label(spec: str) -> str:
    return "clean" if spec == "none" else spec.replace("h264:", "H.264 CRF ").replace("jpeg:", "JPEG q")


def frontier_table(metrics_dir: str | Path) -> str:
    """The runs of ``experiments/frontier.py`` in ``metrics_dir/frontier/``, fastest first: training
    links and steps, cost, time per 1080p frame, and gain over the received frame per link."""
    runs = [json.loads(p.read_text()) for p in sorted((Path(metrics_dir) / "frontier").glob("*.json"))]
    if not runs:
        return "(no frontier runs)\n"
    links = sorted(runs[0]["gain"], key=lambda k: (k != "none", k))  # clean first
    head = ["run", "student config", "trained on", "steps", "params", "GMAC / 1080p", "ms / 1080p", "fps"]
    head += [f"Δ dB {_link_label(k)}" for k in links]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for r in sorted(runs, key=lambda r: r["ms_per_1080p"]):
        cfg = ", ".join(f"{k} {v}" for k, v in r["config"].items()) or "default"
        counts = {x: r["train_links"].count(x) for x in dict.fromkeys(r["train_links"])}
        mix = ("clean" if r["train_links"] == ["none"] else "mixture: " + ", ".join(
            f"{_link_label(x)}{f' ×{n}' if n > 1 else ''}" for x, n in counts.items()))
        cells = [r["name"], f"`{r['arch']}` {cfg}", mix, f"{r['steps']:,}", f"{r['parameters']:,}",
                 f"{r['macs_per_1080p_frame'] / 1e9:.2f}", f"{r['ms_per_1080p']:.1f}", f"{r['fps_1080p']:.1f}"]
        cells += [f"{r['gain'][k]:+.3f}" if k in r["gain"] else "—" for k in links]
        rows.append("| " + " | ".join(cells) + " |")
    inputs = ", ".join(f"{_link_label(k)} {runs[0]['input_psnr'][k]:.3f} dB" for k in links)
    text = "\n".join(rows) + f"\n\nReceived frame (the input every gain is over): {inputs}.\n"
    for r in runs:  # what more training buys: the clean validation gain after each epoch
        if len(r.get("curve") or []) >= 6:
            points = ", ".join(f"{c['step']:,}: {c['val_psnr'] - r['input_psnr']['none']:+.3f}" for c in r["curve"])
            text += f"\nPSNR gain on clean frames vs training steps, {r['name']}: {points} dB.\n"
    return text


def seeds_table(metrics_dir: str | Path, name: str = "") -> str:
    """``metrics_dir/seeds.json`` (``metrics_dir/seeds-NAME.json`` with ``name``; ``experiments/seeds.py
    --out``): each arm's validation PSNR per seed, mean and sd, the paired differences with their
    95% intervals, and which student and budget they trained."""
    file = f"seeds-{name}.json" if name else "seeds.json"
    r = _load(Path(metrics_dir) / file)
    if not r:
        return f"(no {file})\n"
    labels = {"gt_only": "ground truth only", "distilled": "distilled",
              "zoom": f"distilled + l2_teacher_zoom (weight {r.get('zoom_weight', '?')})"}
    rows = ["| arm | PSNR per seed (dB) | mean | sd |", "|---|---|---:|---:|"]
    order = ["gt_only", "distilled", "zoom"]
    by_arm = lambda kv: order.index(kv[0]) if kv[0] in order else len(order)  # noqa: E731
    for arm, a in sorted(r["arms"].items(), key=by_arm):
        rows.append(f"| {arm} | {', '.join(f'{v:.3f}' for v in a['psnr'])} | {a['mean']:.3f} | {a['sd']:.3f} |")
    comparisons = r.get("comparisons") or {"distilled-gt_only": {"seed_paired": r["seed_paired"],
                                                                  "image_paired": r["image_paired"]}}
    text = "\n".join(rows) + "\n"
    for name, c in comparisons.items():
        a, b = name.split("-", 1)
        s, i = c["seed_paired"], c["image_paired"]
        text += (f"\n{labels.get(a, a).capitalize()} minus {labels.get(b, b)}: {s['mean']:+.3f} dB over {s['n']} "
                 f"seeds (95% t-interval {s['ci95_low']:+.3f} to {s['ci95_high']:+.3f}); per validation image, "
                 f"averaged over the seeds, {i['mean']:+.3f} dB (95% t-interval {i['ci95_low']:+.3f} to "
                 f"{i['ci95_high']:+.3f}, over {i['images']} images), ahead on {i['ahead']} of {i['images']}.\n")
    for spec, lk in (r.get("links") or {}).items():  # the same runs scored on the validation images through a link
        if "seed_paired" not in lk:
            continue
        s, i = lk["seed_paired"], lk["image_paired"]
        means = "; ".join(f"{labels.get(arm, arm)} {a['mean']:.3f} dB (sd {a['sd']:.3f})" for arm, a in
                          sorted(lk["arms"].items(), key=by_arm))
        text += (f"\nThrough {link_label(spec)} (`{spec}`, the same images and runs): {means}; distilled minus ground "
                 f"truth only {s['mean']:+.3f} dB over {s['n']} seeds (95% t-interval {s['ci95_low']:+.3f} to "
                 f"{s['ci95_high']:+.3f}); per image {i['mean']:+.3f} dB ({i['ci95_low']:+.3f} to {i['ci95_high']:+.3f}), "
                 f"ahead on {i['ahead']} of {i['images']}.\n")
    teacher = r.get("teacher")
    if teacher and teacher.get("sha256"):
        steps = teacher.get("adapt_steps")
        text += (f"\nThe distilled arms learn from the teacher adapted {steps:,} steps (weights sha256 "
                 f"{teacher['sha256'][:12]}).\n" if isinstance(steps, int) else
                 f"\nThe distilled arms learn from the teacher with weights sha256 {teacher['sha256'][:12]}.\n")
    train = r.get("train")
    if train:  # the student and budget every run of this file shares (experiments/seeds.py settings)
        from sharpkd.nets.students import build_student

        cfg = build_student(train["arch"], **(train.get("arch_config") or {})).config  # defaults filled in
        size = (f" c{cfg['channels']}b{cfg['blocks']}" if {"channels", "blocks"} <= set(cfg) else
                f" {json.dumps(cfg, sort_keys=True)}" if cfg else "")
        steps = train.get("steps_per_epoch")
        per_epoch = f" of {steps:,} steps" if steps else ", each one pass over the training crops' pixels"
        text += (f"\nEvery run: `{train.get('arch')}`{size}, float32, {train.get('epochs')} epochs{per_epoch}, "
                 f"batches of {train.get('batch')} patches of {train.get('patch')}x{train.get('patch')}, "
                 f"learning rate {train.get('lr')}, scored on {r.get('val_images', '?')} full-size validation "
                 f"images at its best epoch.\n")
    return text
INT8_FORMS = {"fp32": "float32 (what `auto` runs)", "int8": "int8, NNCF defaults",
              "int8-minmax": "int8, activation ranges min/max",
              "int8-minmax-fp32-tail": "int8, min/max, last conv in float32",
              "int8-minmax-fp32-add": "int8, min/max, residual add in float32",
              "int8-native": "int8 in plain PyTorch fake quantization, min/max, 7-bit first layer, add in float32",
              "int8-native-8bit-head": "the same, 8-bit first layer",
              "fp32-finetuned": "float32, fine-tuned (the control of the next two rows)",
              "int8-qat": "int8, quantization-aware fine-tuning, residual add in float32",
              "int8-native-qat": "int8 in plain PyTorch fake quantization, the same fine-tuning"}


def int8_table(metrics_dir: str | Path) -> str:
    """``metrics_dir/bench/int8.json`` (``tools/int8_probe.py``): each form's time, speed-up, gain
    over the input and largest difference from the float32 graph."""
    r = _load(Path(metrics_dir) / "bench" / "int8.json")
    if not r:
        return "(no bench/int8.json)\n"
    rows = [f"| form of the student | ms / 1080p | speed-up | gain over the input "
            f"({r['validation_frames']} validation photos at 1920x1080) | largest difference from float32 "
            f"| OpenVINO against its PyTorch fake-quant module |",
            "|---|---:|---:|---:|---:|---:|"]
    for name, f in r["forms"].items():
        diff = "—" if name == "fp32" else f"{f['max_abs_diff_vs_fp32']} levels"
        ref = ("—" if "max_abs_diff_vs_reference" not in f else
               f"at most {f['max_abs_diff_vs_reference']} levels, on {100 * f['fraction_differing_vs_reference']:.3g}% "
               f"of values")
        rows.append(f"| {INT8_FORMS.get(name, name)} | {f['ms_per_1080p']:.1f} | {f['speedup_vs_fp32']:.2f}x "
                    f"| {f['gain_db']:+.3f} dB | {diff} | {ref} |")
    tuned = (f"; fine-tuned rows: {r['qat_steps']:,} steps at learning rate {r['qat_lr']:g}" if r.get("qat_steps")
             else "")
    return "\n".join(rows) + (f"\n\nNNCF {r['nncf']}, {r['calibration_frames']} calibration frames, {r['threads']} "
                              f"threads, fastest median of {r['passes']} interleaved passes of {r['runs']} calls{tuned}.\n")


RUNTIME_LABELS = {"torch": "PyTorch", "torch-compile": "torch.compile", "openvino": "OpenVINO",
                  "onnxruntime": "ONNX Runtime"}


def machine_label(m: dict) -> str:
    """``AMD EPYC, 2 cores, AVX512 kernels`` from a bench JSON's ``machine`` (``, AMX`` added where
    the CPU has AMX int8 tiles, and ``, oneDNN capped at AVX2``
    where ``ONEDNN_MAX_CPU_ISA`` made OpenVINO run that instruction set's kernels only: the
    kernels, not the clock, of a CPU of that class)."""
    isa = f", {m['cpu_isa']} kernels" if m.get("cpu_isa") else ""
    extra = ", AMX" if "amx_int8" in (m.get("cpu_features") or []) else ""
    cap = f", oneDNN capped at {m['onednn_isa_cap']}" if m.get("onednn_isa_cap") else ""
    cpu = re.sub(r"\((R|TM)\)", "", m.get("cpu", "?"))  # Intel(R) Xeon(R) Processor -> Intel Xeon Processor
    return f"{cpu}, {m.get('cpu_cores', '?')} cores{isa}{extra}{cap}"


def student_label(arch: str | None, config: dict | None) -> str:
    """```sharp` c32b2 int8`` from a bench JSON's ``arch`` and ``config`` (``seed``: the report's)."""
    cfg = config or {}
    if arch == "sharp":
        return f"`sharp` c{cfg.get('channels')}b{cfg.get('blocks')}" + (" int8" if cfg.get("int8") else "")
    return f"`{arch or '?'}`" + (" (the report's)" if arch in ("report", "seed") else "")


def runtimes_table(metrics_dir: str | Path) -> str:
    """Every ``sharpkd bench --compare --out metrics/PROFILE/bench/runtimes/NAME.json``: one row per
    runtime, grouped by machine, ``sharp`` students first, then by file name."""
    files = sorted((Path(metrics_dir) / "bench" / "runtimes").glob("*.json"))
    runs = [(f.stem, json.loads(f.read_text())) for f in files]
    if not runs:
        return "No runtime comparisons saved (`sharpkd bench --compare --out ...`).\n"
    lines = ["| machine | student | runtime | parameters | GMAC / 1080p frame | median ms | p95 ms | fps |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for _, r in sorted(runs, key=lambda x: (machine_label(x[1].get("machine", {})), x[1].get("arch") != "sharp", x[0])):
        fastest = min(r["runtimes"], key=lambda x: x["median_ms"])["runtime"]
        what = student_label(r.get("arch"), r.get("config"))
        for x in r["runtimes"]:
            name = RUNTIME_LABELS.get(x["runtime"], x["runtime"])
            name = f"**{name}**" if x["runtime"] == fastest else name
            lines.append(f"| {machine_label(r.get('machine', {}))}, {r.get('threads', '?')} threads | {what} | {name} | "
                         f"{r.get('parameters', 0):,} | {r.get('macs_per_frame', 0) / 1e9:.2f} | "
                         f"{x['median_ms']:.1f} | {x['p95_ms']:.1f} | {x['fps']:.1f} |")
    return "\n".join(lines) + ("\n\nBold: the fastest runtime of each file (one `--compare` call, one process). "
                               "A 1920x1080 uint8 frame; median and p95 of `--runs` calls after warm-up.\n")


VIDEO_SET_ORDER = ("received", "lanczos", "unsharp", "teacher", "student")
VIDEO_SET_LABELS = {"received": "received frame (bilinear up)", "lanczos": "Lanczos from the decoded 60% frame",
                    "unsharp": "unsharp mask (tuned on training crops)", "teacher": "teacher", "student": "student"}


def video_set_tables(metrics_dir: str | Path, run: str = "") -> str:
    """Markdown: one table per video link of ``eval.json`` ``video`` (the evaluate stage's video set,
    ``evaluate.video``; with ``run``, of the saved run ``ablation/<run>.json``): each method's PSNR
    (mean over clips), its gain over the received frame and over Lanczos, its temporal error and the
    frames where it is below the received frame.  An empty string when there is no ``video``."""
    metrics_dir = Path(metrics_dir)
    ev = _load(metrics_dir / "ablation" / f"{run}.json" if run else metrics_dir / "eval.json") or {}
    video = ev.get("video")
    if not video:
        return ""
    info = ((_load(metrics_dir / "ablation" / f"{run}-settings.json") or {}) if run else settings(metrics_dir)).get("video") or {}
    links = [s for s in info.get("links") or [] if s in video["links"]]
    links += sorted(s for s in video["links"] if s not in links)
    frames = video["frames_per_clip"] * video["n_clips"]
    out = []
    for spec in links:
        link = video["links"][spec]
        mean = link["mean"]
        rec, lz = mean["received"]["psnr"], (mean.get("lanczos") or {}).get("psnr")
        kbps = sum(c["kbps"] for c in link["clips"].values()) / max(1, len(link["clips"]))
        out.append(f"**`{spec}`** ({kbps:.0f} kbit/s on average)\n")
        out.append("| method | PSNR (dB) | Δ vs received | Δ vs Lanczos | temporal error | frames below received |")
        out.append("|---|---:|---:|---:|---:|---:|")
        methods = [m for m in VIDEO_SET_ORDER if m in mean] + sorted(m for m in mean if m not in VIDEO_SET_ORDER)
        for m in methods:
            v = mean[m]
            below = [c["methods"][m].get("frames_below_reference") for c in link["clips"].values() if m in c["methods"]]
            below_text = "—" if None in below or not below else f"{sum(below)} of {frames}"
            out.append(f"| {VIDEO_SET_LABELS.get(m, m)} | {v['psnr']:.3f} | {v['psnr'] - rec:+.3f} | "
                       f"{_num(None if lz is None else v['psnr'] - lz, '+.3f')} | {_num(v.get('temporal_error'), '.3f')} "
                       f"| {below_text} |")
        out.append("")
    note = (f"{video['n_clips']} clips of `{info.get('dir', '?')}`, {video['frames_per_clip']} frames each"
            + (f" from frame {info['start']}" if info.get("start") else "")
            + "; PSNR: mean over frames, then over clips (RGB, data_range 255); temporal error: mean over consecutive "
            "frames of mean |(o_t − o_t−1) − (g_t − g_t−1)| (0..255); frames below received: over all clips.")
    return "\n".join(out) + "\n" + note + "\n"


def video_table(folder: str | Path) -> str:
    """Markdown: one row per ``experiments/video_bench.py --out`` JSON in ``folder`` (``metrics/video``)."""
    rows = []
    for path in sorted(Path(folder).glob("*.json")):
        r = json.loads(path.read_text())
        c, f, sp = r["clip"], r["frames"], r["speed"]
        per = [t for t in sp.get("per_frame_ms") or [] if t]
        cut = ("each photo once" if c.get("hold", 1) <= 1 else f"{c['hold']}-frame pan per photo")
        stages = (f"{min(t['decode'] + t['to_rgb'] for t in per)} / {min(t['to_yuv'] + t['encode'] for t in per)}"
                  if per else "—")
        audio = "bit-identical" if r["audio"]["bit_identical"] else ("copied" if r["audio"]["survived"] else "lost")
        ratio = sp.get("pipeline_over_bench") or {}
        bench = sp.get("bench") or {}
        codecs, bound = sp.get("codecs_alone_fps") or {}, sp.get("pipeline_over_serial_bound") or {}
        rows.append(
            f"| {machine_label(r.get('machine', {}))} | {student_label(bench.get('arch'), bench.get('config'))} "
            f"| {f['ground_truth']} frames {c['size'][0]}x{c['size'][1]} ({c['photos_used']} photos, {cut}) "
            f"| {c['link_crf']} | {r['received']['psnr']:.2f} / {r['received']['ssim']:.4f} "
            f"| {r['sharpened']['psnr']:.2f} / {r['sharpened']['ssim']:.4f} | {f['received']} / {f['sharpened']}"
            f"{'' if f.get('same_timestamps') else ' (timestamps differ)'} | {audio} "
            f"| {r['sharpen']['preset']} crf {r['sharpen']['crf']}"
            f"{''.join(f', {k}={v}' for k, v in sorted(r.get('machine', {}).get('env', {}).items()))} "
            f"| {sp['pipeline_fps']['best']:.2f} / {sp['pipeline_fps']['median']:.2f} "
            f"| {sp['bench_fps']['best']:.2f} / {sp['bench_fps']['median']:.2f} "
            f"| {_num(ratio.get('median'), '.0%')} | {_num(codecs.get('median'), '.2f')} "
            f"| {_num(bound.get('median'), '.0%')} | {stages} |")
    head = ("| machine | student | clip | link crf | received PSNR / SSIM | sharpened PSNR / SSIM | frames in / out | audio "
            "| sharpen preset | pipeline fps best / median | `sharpkd bench` fps best / median "
            "| pipeline / bench (median) | codecs alone fps (median) | pipeline / serial bound (median) "
            "| decode+RGB / YUV+encode CPU ms per frame |\n"
            "|---|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|\n")
    return head + "".join(row + "\n" for row in rows)


def video_bound_lines(folder: str | Path) -> str:
    """Markdown bullets, one per ``metrics/video`` JSON that timed the codecs alone: the model's
    bench rate, the codecs' rate, the serial bound and what the pipeline kept of each."""
    out = []
    for path in sorted(Path(folder).glob("*.json")):
        r = json.loads(path.read_text())
        sp = r["speed"]
        if not sp.get("codecs_alone_fps") or not sp.get("pipeline_over_serial_bound"):
            continue
        bench = sp.get("bench") or {}
        need = 4 * sp["bench_fps"]["median"]
        out.append(
            f"* {student_label(bench.get('arch'), bench.get('config'))} on {machine_label(r.get('machine', {}))} "
            f"(`{path.name}`, medians): model alone {sp['bench_fps']['median']:.2f} fps, codecs alone "
            f"{sp['codecs_alone_fps']['median']:.2f} fps (80% would need {need:.0f} fps from them if the two "
            f"only took turns), serial bound {sp['serial_bound_fps']['median']:.2f} fps; the pipeline ran at "
            f"{sp['pipeline_fps']['median']:.2f} fps, {sp['pipeline_over_bench']['median']:.0%} of the bench rate "
            f"and {sp['pipeline_over_serial_bound']['median']:.0%} of the serial bound.")
    return "\n".join(out) + ("\n" if out else "")


def update(readme: str | Path, root: str | Path = ".") -> list[str]:
    """Rewrite the results blocks of ``readme``; returns the profiles updated."""
    readme = Path(readme)
    text = readme.read_text()
    done = []

    def repl(m: re.Match) -> str:
        profile = m.group(1)
        done.append(profile)
        keep_settings(Path(root) / "metrics" / profile)
        if curves(Path(root) / "metrics" / profile):
            done.append(f"{profile} (curves.png)")
        if speed_plot(Path(root) / "metrics" / profile):
            done.append(f"{profile} (speed.png)")
        return f"<!-- results:{profile} -->\n{table(Path(root) / 'metrics' / profile)}<!-- /results:{profile} -->"

    def repl_ablation(m: re.Match) -> str:
        profile = m.group(1)
        done.append(f"{profile} (ablation)")
        return (f"<!-- ablation:{profile} -->\n{ablation_table(Path(root) / 'metrics' / profile)}"
                f"<!-- /ablation:{profile} -->")

    new = re.sub(r"<!-- results:(\w+) -->.*?<!-- /results:\1 -->", repl, text, flags=re.S)
    new = re.sub(r"<!-- ablation:(\w+) -->.*?<!-- /ablation:\1 -->", repl_ablation, new, flags=re.S)

    def repl_seeds(m: re.Match) -> str:  # <!-- seeds:PROFILE --> or <!-- seeds:PROFILE:NAME --> (seeds-NAME.json)
        profile, name = m.group("profile"), m.group("name") or ""
        done.append(f"{profile} (seeds{':' + name if name else ''})")
        return f"{m.group('open')}\n{seeds_table(Path(root) / 'metrics' / profile, name)}{m.group('close')}"

    new = re.sub(r"(?P<open><!-- seeds:(?P<profile>\w+)(?::(?P<name>\w+))? -->)\n.*?"
                 r"(?P<close><!-- /seeds:(?P=profile)(?(name):(?P=name)) -->)", repl_seeds, new, flags=re.S)
    for kind, build in (("frontier", frontier_table), ("int8", int8_table),
                        ("runtimes", runtimes_table)):
        def repl_other(m: re.Match, kind=kind, build=build) -> str:
            done.append(f"{m.group(1)} ({kind})")
            return f"<!-- {kind}:{m.group(1)} -->\n{build(Path(root) / 'metrics' / m.group(1))}<!-- /{kind}:{m.group(1)} -->"

        new = re.sub(rf"<!-- {kind}:(\w+) -->.*?<!-- /{kind}:\1 -->", repl_other, new, flags=re.S)

    def repl_video(m: re.Match) -> str:
        done.append("video")
        return f"<!-- video -->\n{video_table(Path(root) / 'metrics' / 'video')}<!-- /video -->"

    new = re.sub(r"<!-- video -->.*?<!-- /video -->", repl_video, new, flags=re.S)
    if new != text:
        readme.write_text(new)
    return done


def save_run(name: str, metrics_dir: str | Path) -> list[Path]:
    """Keep the current run of a profile as ablation run ``name``: its ``eval.json`` as
    ``ablation/<name>.json``, its ``eval_settings.json`` as ``ablation/<name>-settings.json``, its per-image scores as ``ablation/<name>-scores.csv`` and its
    validation curve as ``ablation/<name>-val_psnr.tsv``."""
    if not re.fullmatch(r"[A-Za-z0-9_.]+", name):
        raise ValueError(f"run name {name!r}: use letters, digits, '_' and '.'")
    metrics_dir = Path(metrics_dir)
    sources = {metrics_dir / "eval.json": f"{name}.json",
               metrics_dir / "eval_scores.csv": f"{name}-scores.csv",
               metrics_dir / "train" / "plots" / "metrics" / "val_psnr.tsv": f"{name}-val_psnr.tsv"}
    missing = [str(p) for p in sources if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} not found: run `dvc repro` (or `dvc exp run`) first")
    written = []
    out = metrics_dir / "ablation" / f"{name}-settings.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(settings(metrics_dir), indent=2, sort_keys=True) + "\n")
    written.append(out)
    for src, dst in sources.items():
        out = metrics_dir / "ablation" / dst
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            tmp.write_bytes(src.read_bytes())
        written.append(out)
    return written


def _primary_link(info: dict) -> str:
    """The link of the primary validation set, from ``eval_settings.json`` (``none`` when not recorded)."""
    from sharpkd.data.degrade import link_name

    d = info.get("degradation") or {}
    return link_name(**{k: d[k] for k in ("codec", "jpeg_quality", "h264_crf") if k in d})


def paired(metrics_dir: str | Path, run: str, base: str | None = None) -> str:
    """The profile's student (or saved run ``base``'s) against saved run ``run``'s student, image
    by image (same validation images): mean and standard deviation of the PSNR difference, the
    images where it is better, and the mean SSIM difference, at each evaluated scale."""
    from sharpkd.evaluation.figures import read_scores_csv

    metrics_dir = Path(metrics_dir)
    other_path = metrics_dir / "ablation" / f"{run}-scores.csv"
    if not other_path.exists():
        raise FileNotFoundError(f"{other_path} not found: save the run with --save-run {run}")
    primary = _primary_link(settings(metrics_dir))

    def students(path):  # the primary set's rows (files with a link column also hold the extra link sets)
        return {r["image"]: r for r in read_scores_csv(path)
                if r["method"] == "student" and r.get("link", primary) == primary}

    ours_path = metrics_dir / "ablation" / f"{base}-scores.csv" if base else metrics_dir / "eval_scores.csv"
    if not ours_path.exists():
        raise FileNotFoundError(f"{ours_path} not found: save the run with --save-run {base}")
    ours, theirs = students(ours_path), students(other_path)
    if set(ours) != set(theirs):
        raise ValueError(f"{other_path} scores other images than {ours_path}")
    scales: dict[str, list[str]] = {}
    for image in sorted(ours):
        scales.setdefault(image.split("/", 1)[0] if "/" in image else "full size", []).append(image)
    lines = []
    for scale, images in sorted(scales.items(), key=lambda kv: kv[0] != "full size"):
        dp = np.array([ours[i]["psnr"] - theirs[i]["psnr"] for i in images])
        ds = np.array([ours[i]["ssim"] - theirs[i]["ssim"] for i in images])
        sd = float(dp.std(ddof=1)) if len(dp) > 1 else 0.0
        lines.append(f"{scale}: {base or 'student'} minus {run}: mean ΔPSNR {dp.mean():+.3f} dB (sd {sd:.3f}), better on "
                     f"{int((dp > 0).sum())} of {len(dp)} images; mean ΔSSIM {ds.mean():+.5f}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--update", metavar="README", help="rewrite the results blocks of this file")
    ap.add_argument("--profile", default="default", help="print the table of metrics/PROFILE")
    ap.add_argument("--save-run", metavar="NAME", help="keep metrics/PROFILE's current run as ablation run NAME")
    ap.add_argument("--paired", metavar="NAME", help="compare metrics/PROFILE's student with saved run NAME per image")
    ap.add_argument("--base", metavar="NAME", help="with --paired: compare saved run NAME's student instead")
    args = ap.parse_args(argv)
    try:
        if args.paired:
            print(paired(Path("metrics") / args.profile, args.paired, args.base), end="")
        elif args.save_run:
            for path in save_run(args.save_run, Path("metrics") / args.profile):
                print("wrote", path)
        elif args.update:
            print("updated:", ", ".join(update(args.update)) or "nothing")
        else:
            print(table(Path("metrics") / args.profile), end="")
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
