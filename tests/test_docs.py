"""The documentation is generated from the committed metrics, and speaks of the project as it is."""

import re
import shutil
from pathlib import Path

import pytest

from tools import docs

ROOT = Path(__file__).resolve().parents[1]


def test_generated_docs_match_the_committed_metrics():
    """`python tools/docs.py` on the committed metrics changes nothing: stale docs fail here."""
    stale = [str(p.relative_to(ROOT)) for p, text in docs.render(ROOT).items() if p.read_text() != text]
    assert not stale, f"stale: {', '.join(stale)}; run `python tools/docs.py`"


def fresh_clone(tmp_path: Path) -> Path:
    """What a fresh clone has of the inputs: metrics/, the model cards, params.yaml and the profiles, the docs."""
    root = tmp_path / "clone"
    shutil.copytree(ROOT / "metrics", root / "metrics", ignore=shutil.ignore_patterns("*.png", "*.csv", "*.tsv"))
    (root / "sharpkd" / "weights").mkdir(parents=True)
    for card in (ROOT / "sharpkd" / "weights").glob("*.json"):
        shutil.copy(card, root / "sharpkd" / "weights" / card.name)
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    shutil.copytree(ROOT / "profiles", root / "profiles")
    shutil.copy(ROOT / "README.md", root / "README.md")
    shutil.copytree(ROOT / "docs", root / "docs")
    return root


def test_generator_is_deterministic_and_needs_no_data_folder(tmp_path):
    """Two runs in a checkout without data/, models/ or DVC give the same bytes as the committed files."""
    root = fresh_clone(tmp_path)
    (root / "metrics" / "photos" / "eval_scores.csv").write_bytes((ROOT / "metrics" / "photos" / "eval_scores.csv").read_bytes())
    for f in (ROOT / "metrics" / "photos" / "ablation").glob("*-scores.csv"):  # --paired reads these
        (root / "metrics" / "photos" / "ablation" / f.name).write_bytes(f.read_bytes())
    assert not (root / "data").exists()
    assert docs.main(["--root", str(root)]) == 0
    first = {p: p.read_bytes() for p in sorted(root.rglob("*.md"))}
    assert docs.main(["--root", str(root), "--check"]) == 0
    assert {p: p.read_bytes() for p in sorted(root.rglob("*.md"))} == first
    for rel in ("README.md", "docs/results.md", "docs/benchmarks.md", "docs/cli.md", "docs/pipeline.md"):
        assert first[root / rel] == (ROOT / rel).read_bytes(), rel


def test_check_names_a_stale_file_and_writing_fixes_it(tmp_path, capsys):
    root = _clone_with_photo_scores(tmp_path)
    readme = root / "README.md"
    readme.write_text(readme.read_text().replace("| clean (downscale only) | 36.932 |", "| clean (downscale only) | 99.999 |"))
    assert docs.main(["--root", str(root), "--check"]) == 1
    assert "README.md" in capsys.readouterr().err
    assert docs.main(["--root", str(root)]) == 0
    assert readme.read_bytes() == (ROOT / "README.md").read_bytes()


def test_unknown_block_is_an_error():
    with pytest.raises(ValueError, match="docs:nonsense"):
        docs.fill_blocks("<!-- docs:nonsense -->\n<!-- /docs:nonsense -->", ROOT)


def test_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 15_000
    # the two set-up commands; .ci/run depends on the test command
    assert "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[dev]' && dvc repro" in text
    assert ".venv/bin/python -m pytest" in text and ".venv/bin/python -m pytest" in (ROOT / ".ci" / "run").read_text()
    for install in ("pip install .", "pip install -e '.[pipeline]'", "pip install -e '.[dev]'"):
        assert install in text
    for block in ("students", "links", "realtime"):
        assert f"<!-- docs:{block} -->" in text
    for page in ("method", "pipeline", "cli", "results", "benchmarks", "development"):
        assert f"(docs/{page}.md)" in text and (ROOT / "docs" / f"{page}.md").exists()
    picture = re.search(r"!\[[^\]]*\]\(([^)]+\.png)\)", text).group(1)
    assert (ROOT / picture).is_file()


def test_every_cli_option_and_params_key_is_documented():
    cli, pipeline = (ROOT / "docs" / "cli.md").read_text(), (ROOT / "docs" / "pipeline.md").read_text()
    for flag in ("--student", "--weights", "--strength", "--tile", "--runtime", "--keep-partial", "--compare", "--pix-fmt"):
        assert f"`{flag}`" in cli
    for key in ("profile", "degrade.val_links", "train.int8.first_bits", "train.loss.l2_teacher_zoom", "evaluate.device"):
        assert f"| `{key}` |" in pipeline


def test_links_block_shows_the_codec_limits_the_gain():
    """README's claim, from the JSON: the student gains far more on a clean link than through H.264."""
    import json

    ev = json.loads((ROOT / "metrics" / "photos" / "eval.json").read_text())

    def gain(methods):
        return methods["student"]["psnr"] - methods["identity"]["psnr"]

    clean = gain(ev["methods"])
    assert all(gain(link["methods"]) < clean / 2 for link in ev["links"].values())
    # the default ships as a pair of experts: its column is the run's student plus the pair's difference
    pair = json.loads((ROOT / "metrics" / "photos" / "link_estimate.json").read_text())["photos"]
    shown = clean + pair["none"]["pair_minus_coded_expert"]
    assert all(gain(link["methods"]) + pair[spec]["pair_minus_coded_expert"] < shown / 2
               for spec, link in ev["links"].items())
    assert f"| {shown:+.3f} |" in (ROOT / "README.md").read_text()


HISTORY = [re.compile(p, re.I) for p in (r"\bsession\b", r"\bissues? #?\d+", r"\blent\b")]


def test_no_history_in_docs_and_code():
    """README, docs/ and the code describe the project as it is: no sessions, issue numbers or lent machines."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for folder in ("sharpkd", "stages", "tools", "experiments"):
        files += sorted((ROOT / folder).rglob("*.py"))
    hits = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if any(p.search(line) for p in HISTORY):
                hits.append(f"{rel}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_every_test_the_bad_input_table_names_exists():
    """Each row of docs/cli.md's bad-input table names tests; each of them is a test function."""
    import ast

    text = (ROOT / "docs" / "cli.md").read_text()
    table = text[text.index("| input | outcome | test |"):]
    table = table[: table.index("\n\n")]
    missing = []
    for row in table.splitlines()[2:]:
        current = None
        for ref in re.findall(r"`((?:tests/\w+\.py)?::\w+)`", row):
            path, _, name = ref.partition("::")
            current = path or current
            assert current, f"a test named without its file: {row[:60]}"
            names = {n.name for n in ast.walk(ast.parse((ROOT / current).read_text()))
                     if isinstance(n, ast.FunctionDef)}
            if name not in names:
                missing.append(f"{current}::{name}")
    assert not missing, missing


def _clone_with_photo_scores(tmp_path: Path) -> Path:
    """:func:`fresh_clone` plus the photo profile's per-image CSVs, which the results page reads."""
    root = fresh_clone(tmp_path)
    for f in (ROOT / "metrics" / "photos").glob("**/*.csv"):
        target = root / f.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.read_bytes())
    return root


def test_the_c8b1_seeds_section_appears_once_every_run_has_ended(tmp_path):
    """A report still being written (no summary yet) renders nothing; a finished one renders its
    section, its table block and a bullet, with the command that made it."""
    import json

    from experiments.seeds import summarise

    root = _clone_with_photo_scores(tmp_path)
    path = root / "metrics" / "photos" / docs.LITE_SEEDS
    per_image = {"gt_only": {s: [39.0 + s / 10, 38.0] for s in range(3)},
                 "distilled": {s: [39.05 + s / 10, 38.02] for s in range(3)}}
    config = {"profile": "photos", "train": {"arch": "sharp", "epochs": 30, "zoom": 0.5,
                                             "arch_config": {"channels": 8, "blocks": 1, "unshuffle": 2}},
              "zoom_weight": 0.0, "teacher": {"sha256": "0" * 64, "adapt_steps": 4000}}
    path.write_text(json.dumps(config | {"per_image": per_image}))
    assert docs.lite_seeds(root) is None
    assert "c8b1, from the 4,000-step teacher" not in docs.results_md(root)
    path.write_text(json.dumps(summarise(per_image) | config | {"per_image": per_image}))
    text = docs.results_md(root)
    assert "### The photo pool, c8b1, from the 4,000-step teacher" in text
    assert "<!-- seeds:photos:c8b1 -->" in text and "(c8b1u2, float32, 30 epochs)" in text
    assert "python experiments/seeds.py --profile photos --seeds 3 --root RUN --out metrics/photos/seeds-c8b1.json" in text
    assert "For c8b1 (the form of `lite`), from the same teacher: `distilled` minus `gt_only`: +0.035 dB" in text


def test_what_each_shipped_student_was_trained_on_comes_from_its_card():
    card = lambda links: {"evaluation": {"settings": {"train_links": links}}}  # noqa: E731
    clean = [{"name": "balanced", "card": card([])}, {"name": "fast", "card": {}}]
    assert docs.trained_on(clean) == "every student shipped was trained on clean pairs"
    mixed = clean + [{"name": "lite", "card": card(["none", "none", "h264v:23", "h264:23"])}]
    said = docs.trained_on(mixed)
    assert said.startswith("`balanced`, `fast` trained on clean pairs; `lite` on pairs through a mixture of links")
    assert "(none x2, h264v:23, h264:23;" in said


def test_the_temporal_section_says_whether_the_previous_frame_pays(tmp_path):
    """From experiments/temporal.py's report: a table per video link, and the verdict by the rule
    (+0.2 dB at CRF 23 with no more flicker) either way."""
    import json

    from experiments.temporal import summarise

    def report(gain: float, flicker: float) -> dict:
        runs = {}
        for k in range(2):
            for arm, extra, te in (("single", 0.0, 1.50), ("temporal", gain, 1.50 + flicker)):
                mean = {s: {arm: {"psnr": 33.0 + extra + k / 100, "temporal_error": te}, "lanczos": {"psnr": 32.8},
                            "received": {"psnr": 32.5}} for s in ("h264v:23", "h264v:28")}
                runs[f"{arm}:{k}"] = {"arm": arm, "seed": k, "val_psnr": 38.0 + extra, "mean": mean}
        timing = {a: {"ms_per_1080p_frame": 40.0, "macs_per_1080p_frame": 1.2e9, "runtime": "torch"}
                  for a in ("single", "temporal")}
        settings = {"arch_config": {"channels": 8, "blocks": 1, "unshuffle": 2}, "epochs": 30, "train_crops": 5220,
                    "links": ["none", "h264v:23"], "frames": 48}
        return {"settings": settings, "timing": timing, "machine": {"cpu": "AMD EPYC", "cpu_cores": 2},
                "summary": summarise(runs, ["single", "temporal"], ["h264v:23", "h264v:28"], 2), "runs": runs}

    path = tmp_path / docs.TEMPORAL
    path.parent.mkdir(parents=True)
    assert docs.temporal_md(tmp_path) == ""
    path.write_text(json.dumps({"settings": {}, "runs": {}}))  # still running: nothing yet
    assert docs.temporal_md(tmp_path) == ""
    path.write_text(json.dumps(report(0.05, 0.0)))
    text = docs.temporal_md(tmp_path)
    assert "| `h264v:23`: CRF 23 | 32.500 | 32.800 | 33.005 (+0.205; 1.500) | 33.055 (+0.255; 1.500) | +0.050 (+0.050 to +0.050) |" in text
    assert "+0.050 dB from the single-frame one" in text and "it does not pay at this size" in text
    path.write_text(json.dumps(report(0.3, 0.0)))
    assert "it pays at this size" in docs.temporal_md(tmp_path)
    path.write_text(json.dumps(report(0.3, 0.1)))  # more flicker: it does not ship
    assert "its temporal error is higher: it does not pay" in docs.temporal_md(tmp_path)


def test_the_default_is_checked_against_its_targets_from_its_card(tmp_path):
    """Per photo link set and development clip: the margin over Lanczos against the target, the
    received frame as the floor, the clean-pairs run for clean frames, and where the teacher itself
    falls short of the margin."""
    import json

    def methods(student: float, lanczos: float, teacher: float, ref: float, ref_name: str) -> dict:
        return {"student": {"psnr": student}, "lanczos": {"psnr": lanczos}, "teacher": {"psnr": teacher},
                ref_name: {"psnr": ref}}

    ev = {"methods": methods(40.0, 38.5, 40.2, 37.0, "identity"),
          "links": {"h264:23": {"methods": methods(34.5, 34.0, 34.6, 33.6, "identity")}},
          "video": {"links": {"h264v:1000k": {"clips": {
              "dog": {"methods": methods(30.0, 29.9, 29.95, 30.1, "received")},
              "cups": {"methods": methods(31.0, 30.5, 31.2, 30.0, "received")}}}}}}
    card = {"arch": "sharp", "arch_config": {"channels": 32, "blocks": 2, "unshuffle": 2},
            "evaluation": ev | {"settings": {"train_links": ["none", "h264v:23"]}}}
    weights = tmp_path / "sharpkd" / "weights"
    weights.mkdir(parents=True)
    (weights / "student-balanced.json").write_text(json.dumps(card))
    assert docs.default_targets_md(tmp_path).count("| yes |") == 3  # no clean run needed for the table
    run = tmp_path / "metrics" / "photos" / "ablation" / f"{docs.TARGETS['clean_run']}.json"
    run.parent.mkdir(parents=True)
    run.write_text(json.dumps({"methods": {"student": {"psnr": 40.1}}}))
    text = docs.default_targets_md(tmp_path)
    assert "trained on the link mixture `none`, `h264v:23`" in text
    assert "3 of 4 sets meet the margin and it is below the\nreceived frame on 1 (dog `h264v:1000k`)" in text
    assert "| dog, `h264v:1000k`: cap 1000 kbit/s at 1152x648 | 30.10 | +0.100 | +0.050 | -0.100 | no |" in text
    assert "Missed by: dog `h264v:1000k` +0.100 (teacher +0.050)." in text
    assert "On clean frames it is -0.100 dB from the same network trained on clean pairs" in text and ": met." in text
    assert "(1 of 1 misses), distilling from it cannot reach the target" in text
    run.write_text(json.dumps({"methods": {"student": {"psnr": 40.3}}}))
    assert "-0.300 dB" in docs.default_targets_md(tmp_path) and ": missed." in docs.default_targets_md(tmp_path)
    assert "Still images" not in docs.default_targets_md(tmp_path)  # no card for the images' student here
    first = docs._sharpkd().quality_order(coded=False)[0]  # images: ranked by the clean gain of the shipped cards
    (weights / f"student-{first}.json").write_text(json.dumps(
        {"arch": "sharp", "arch_config": {}, "evaluation": {"methods": {"student": {"psnr": 40.35}},
                                                            "student_gain_over_input": {"psnr_db": 3.35}}}))
    assert (f"the default `--student auto` runs `{first}` on them (first by the clean gain): +3.350 dB on clean "
            "frames, +0.050 dB from the clean-pairs run" in docs.default_targets_md(tmp_path).replace("\n", " "))


def test_the_link_mixture_seeds_section_appears_once_every_run_has_ended_with_a_line_per_link(tmp_path):
    import json

    from experiments.seeds import summarise

    root = _clone_with_photo_scores(tmp_path)
    path = root / "metrics" / "photos" / docs.MIX_SEEDS
    clean = {"gt_only": {s: [39.0 + s / 10, 38.0] for s in range(3)},
             "distilled": {s: [38.9 + s / 10, 37.97] for s in range(3)}}
    coded = {"gt_only": {s: [33.0 + s / 10, 32.0] for s in range(3)},
             "distilled": {s: [33.2 + s / 10, 32.1] for s in range(3)}}
    config = {"profile": "photos", "train": {"arch": "sharp", "epochs": 10, "zoom": 0.5,
                                             "arch_config": {"channels": 32, "blocks": 2, "unshuffle": 2}},
              "zoom_weight": 0.0, "teacher": {"sha256": "ab" * 32, "adapt_steps": 4000},
              "train_links": ["none", "h264v:23"]}
    path.write_text(json.dumps(config | {"per_image": clean}))  # still running: no summaries yet
    assert "through the link mixture, c32b2" not in docs.results_md(root)
    path.write_text(json.dumps(summarise(clean) | config | {"per_image": clean, "links": {"h264:28": summarise(coded)}}))
    text = docs.results_md(root)
    assert "### The photo pool through the link mixture, c32b2" in text and "<!-- seeds:photos:c32b2_mix -->" in text
    assert "the teacher adapted 4,000 steps on the link mixture `none`, `h264v:23` (sha256 abababababab)" in text
    assert "Through H.264 CRF 28 (`h264:28`, the same images and runs)" in text
    assert ("distillation hurts (the interval excludes zero) on clean frames for c32b2: -0.065 dB over 3 seeds"
            in text.replace("\n", " ").replace("  ", " "))
    assert "through H.264 CRF 28 +0.150 dB" in text
