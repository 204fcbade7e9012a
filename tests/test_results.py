"""Results tables are generated from metrics JSON, never typed by hand."""

import json

import pytest

from sharpkd.evaluation.figures import write_scores_csv
from tools.results import ablation_table, paired, runtimes_table, table, update


def eval_json(student_psnr=31.0):
    return {"methods": {"student": {"psnr": student_psnr, "ssim": 0.95},
                        "identity": {"psnr": 30.0, "ssim": 0.93},
                        "lanczos": {"psnr": 30.5, "ssim": 0.94}},
            "n_images": 3, "student": {"parameters": 5804, "macs_per_1080p_frame": 2.99e9}}


def settings(arch="sharp", **more):
    return {"unsharp": {"radius": 1.0, "amount": 1.0}, "student": {"arch": arch}} | more


@pytest.fixture
def root(tmp_path):
    d = tmp_path / "metrics" / "p"
    (d / "ablation").mkdir(parents=True)
    (d / "eval.json").write_text(json.dumps(eval_json()))
    (d / "eval_settings.json").write_text(json.dumps(settings()))
    (d / "ablation" / "a.json").write_text(json.dumps(eval_json(32.0)))
    (d / "ablation" / "a-settings.json").write_text(json.dumps(settings()))
    return tmp_path


def test_table_rows_in_method_order_with_gains(root):
    text = table(root / "metrics" / "p")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "method" not in line]
    assert rows[0].startswith("| degraded input") and rows[-1].startswith("| **default student (`sharp`)")
    assert rows[-1].endswith("| 31.000 | 0.9500 | +1.000 | 5,804 | 2.99 | — | — |")
    assert "measured" not in text  # no benchmark files: no claim about where


def full_run(student_psnr=31.0):
    ev = eval_json(student_psnr)
    ev["report_protocol"] = {"methods": {m: {"psnr": v["psnr"] + 1, "ssim": v["ssim"]} for m, v in ev["methods"].items()}}
    return ev


def test_table_with_report_scale_ablation_rows_and_benchmarks(root):
    d = root / "metrics" / "p"
    info = {"sizes": ["1280x720", "1920x1080"], "report_protocol_size": "464x256",
            "teacher": {"arch": "VDSR", "kind": "vdsr"}}
    (d / "eval_settings.json").write_text(json.dumps(settings(**info)))
    for name, psnr, arch in (("seed", 25.0, "seed"), ("gt_only", 30.9, "sharp")):
        (d / "ablation" / f"{name}.json").write_text(json.dumps(full_run(psnr)))
        (d / "ablation" / f"{name}-settings.json").write_text(json.dumps(settings(arch, **info)))
    (d / "teacher.json").write_text(json.dumps({"gain_over_input_db": 2.0, "parameters": 664704,
                                                "macs_per_1080p_frame": 1.378e12}))
    ev = full_run()
    ev["methods"] |= {"teacher_as_is": {"psnr": 30.2, "ssim": 0.931}, "teacher": {"psnr": 32.0, "ssim": 0.96}}
    ev["report_protocol"]["methods"] |= {"teacher_as_is": {"psnr": 31.2, "ssim": 0.94},
                                         "teacher": {"psnr": 33.0, "ssim": 0.97}}
    (d / "eval.json").write_text(json.dumps(ev))
    (d / "bench").mkdir()
    machine = {"cpu": "AMD EPYC", "cpu_cores": 2, "torch": "2.14.1"}
    for row, fps, macs in (("student", 10.3, 2.99e9), ("c16b1", 10.3, 2.99e9), ("seed", 0.65, 25.68e9),
                           ("teacher", 0.048, 1.378e12)):
        (d / "bench" / f"{row}-cpu.json").write_text(json.dumps({"fps": fps, "macs_per_frame": macs, "threads": 2,
                                                                "machine": machine}))
    text = table(d)
    lines = text.splitlines()
    assert lines[0] == ("| method | PSNR (dB) | SSIM | ΔPSNR vs input | PSNR at 464x256 | SSIM at 464x256 | params | "
                        "GMAC / 1080p | CPU fps 1080p | GPU fps 1080p |")
    body = {line.split(" | ")[0][2:]: line for line in lines[2:] if line.startswith("| ")}
    assert body["teacher VDSR, as downloaded (pretrained, not adapted)"].endswith(
        "| 30.200 | 0.9310 | +0.200 | 31.200 | 0.9400 | 664,704 | 1,378.00 | 0.048 | — |")
    assert body["teacher VDSR, adapted"].endswith("| 32.000 | 0.9600 | +2.000 | 33.000 | 0.9700 | 664,704 | 1,378.00 | 0.048 | — |")
    assert body["the report's student (`seed`), same loss and budget"].endswith("| 25.000 | 0.9500 | -5.000 | 26.000 | 0.9500 | 5,804 | 2.99 | 0.65 | — |")
    assert body["`sharp` c16b1 (16 channels, 1 block), without distillation (ground truth only)"].endswith("| 30.900 | 0.9500 | +0.900 | 31.900 | 0.9500 | 5,804 | 2.99 | 10.3 | — |")
    assert list(body)[-1] == "**default student (`sharp`), distilled**"
    assert "full size (1280x720, 1920x1080) and resized to 464x256" in text
    assert "CPU fps measured on AMD EPYC, 2 cores (PyTorch 2.14.1, 2 threads; " in text and "via torch" in text
    assert "GPU fps not measured" in text
    # a row timed on another machine is named under that machine only
    other = machine | {"cpu_isa": "AVX512"}
    (d / "bench" / "teacher-cpu.json").write_text(json.dumps({"fps": 0.1, "median_ms": 1e4, "threads": 2, "machine": other}))
    text = table(d)
    assert "CPU fps measured on AMD EPYC, 2 cores (PyTorch 2.14.1, 2 threads; c16b1 via torch, seed via torch, student via torch)" in text
    assert "CPU fps measured on AMD EPYC, 2 cores, AVX512 kernels (PyTorch 2.14.1, 2 threads; teacher via torch)" in text


def test_speed_plot_only_where_there_are_benchmarks(root):
    from tools.results import speed_plot

    d = root / "metrics" / "p"
    assert speed_plot(d) is None and not (d / "speed.png").exists()
    (d / "bench").mkdir()
    (d / "bench" / "student-cpu.json").write_text(json.dumps({"fps": 30.0, "median_ms": 33.3, "machine": {"cpu": "x"}}))
    out = speed_plot(d)
    assert out == d / "speed.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_update_rewrites_only_marked_blocks(root):
    readme = root / "README.md"
    readme.write_text("intro\n<!-- results:p -->\nold\n<!-- /results:p -->\nmiddle\n"
                      "<!-- ablation:p -->\n<!-- /ablation:p -->\nend\n")
    update(readme, root)
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("end\n")
    assert "| a | sharp | 5,804 | 2.99 | 32.000 |" in text
    assert text.count("<!-- /results:p -->") == 1


def test_missing_metrics_are_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        table(tmp_path)
    with pytest.raises(FileNotFoundError):
        ablation_table(tmp_path)


def test_curves_drawn_from_the_training_logs(root):
    from PIL import Image

    from tools.results import curves

    d = root / "metrics" / "p"
    assert curves(d) is None  # no training logs: nothing drawn
    live = d / "train" / "plots" / "metrics"
    live.mkdir(parents=True)
    (live / "val_psnr.tsv").write_text("step\tval_psnr\n0\t30.5\n1\t31.0\n")
    (live / "train_loss.tsv").write_text("step\ttrain_loss\n0\t0.01\n1\t0.005\n")
    (d / "ablation" / "seed-val_psnr.tsv").write_text("step\tval_psnr\n0\t25.0\n1\t26.0\n")
    out = curves(d)
    assert out == d / "curves.png" and Image.open(out).size == (1100, 400)


def test_save_run_keeps_eval_and_curve(root, monkeypatch, capsys):
    from tools.results import main

    d = root / "metrics" / "p"
    monkeypatch.chdir(root)
    assert main(["--save-run", "gt_only", "--profile", "p"]) == 1  # no training log yet
    assert "val_psnr.tsv not found" in capsys.readouterr().err
    live = d / "train" / "plots" / "metrics"
    live.mkdir(parents=True)
    (live / "val_psnr.tsv").write_text("step\tval_psnr\n0\t30.5\n")
    assert main(["--save-run", "gt_only", "--profile", "p"]) == 1  # nor per-image scores
    write_scores_csv(d / "eval_scores.csv", [{"image": "a", "method": "student", "psnr": 30.0, "ssim": 0.9}])
    assert main(["--save-run", "gt_only", "--profile", "p"]) == 0
    assert json.loads((d / "ablation" / "gt_only-settings.json").read_text()) == settings()
    assert (d / "ablation" / "gt_only-scores.csv").read_text() == (d / "eval_scores.csv").read_text()
    assert (d / "ablation" / "gt_only.json").read_text() == (d / "eval.json").read_text()
    assert (d / "ablation" / "gt_only-val_psnr.tsv").read_text().endswith("30.5\n")
    assert main(["--save-run", "../x", "--profile", "p"]) == 1


def test_paired_compares_students_image_by_image_at_each_scale(root):
    d = root / "metrics" / "p"

    def rows(psnrs):
        out = []
        for i, p in enumerate(psnrs):
            for image in (f"im{i}", f"464x256/im{i}"):
                out += [{"image": image, "method": "student", "psnr": p, "ssim": 0.9},
                        {"image": image, "method": "identity", "psnr": 1.0, "ssim": 0.5}]
        return out

    write_scores_csv(d / "eval_scores.csv", rows([31.0, 30.0, 32.0]))
    with pytest.raises(FileNotFoundError, match="--save-run other"):
        paired(d, "other")
    write_scores_csv(d / "ablation" / "other-scores.csv", rows([30.0, 30.5, 31.0]))
    text = paired(d, "other").splitlines()
    assert text[0] == ("full size: student minus other: mean ΔPSNR +0.500 dB (sd 0.866), better on 2 of 3 images; "
                       "mean ΔSSIM +0.00000")
    assert text[1].startswith("464x256: student minus other: mean ΔPSNR +0.500 dB")
    with pytest.raises(FileNotFoundError, match="--save-run mine"):
        paired(d, "other", base="mine")
    write_scores_csv(d / "ablation" / "mine-scores.csv", rows([30.0, 31.5, 31.0]))  # two saved runs
    assert paired(d, "other", base="mine").splitlines()[0].startswith(
        "full size: mine minus other: mean ΔPSNR +0.333 dB (sd 0.577), better on 1 of 3 images")
    write_scores_csv(d / "ablation" / "other-scores.csv", rows([30.0, 30.5]))
    with pytest.raises(ValueError, match="other images"):
        paired(d, "other")


def with_links(ev, specs=("h264:23", "h264:28")):
    ev = json.loads(json.dumps(ev))
    ev["links"] = {s: {"methods": {m: {"psnr": v["psnr"] - 1 - i, "ssim": v["ssim"] - 0.01} for m, v in ev["methods"].items()},
                       "student_gain_over_input": {"psnr_db": 1.0, "ssim": 0.02}} for i, s in enumerate(specs)}
    ev["links"]["h264:28"]["methods"]["student"]["psnr"] = 28.5  # 28.0 received: +0.5
    return ev


def test_table_has_a_column_pair_per_link_set(root):
    d = root / "metrics" / "p"
    (d / "eval.json").write_text(json.dumps(with_links(eval_json())))
    (d / "eval_settings.json").write_text(json.dumps(settings(val_links=["h264:28", "h264:23"])))
    lines = table(d).splitlines()
    assert lines[0] == ("| method | PSNR (dB) | SSIM | ΔPSNR vs input | PSNR at H.264 CRF 28 | Δ vs received at H.264 CRF 28 | "
                        "PSNR at H.264 CRF 23 | Δ vs received at H.264 CRF 23 | params | GMAC / 1080p | CPU fps 1080p | "
                        "GPU fps 1080p |")  # in params order
    assert lines[-3].startswith("| **default student") and "| 28.500 | +0.500 | 30.000 | +1.000 |" in lines[-3]
    assert "| degraded input (identity) | 30.000 | 0.9300 | +0.000 | 28.000 | +0.000 | 29.000 | +0.000 |" in lines[2]
    assert "H.264 CRF 28, H.264 CRF 23: the same validation images" in lines[-1]


def test_a_saved_run_without_links_gets_dashes_in_the_link_columns(root):
    d = root / "metrics" / "p"
    (d / "eval.json").write_text(json.dumps(with_links(eval_json())))
    (d / "ablation" / "gt_only.json").write_text(json.dumps(eval_json(30.9)))
    (d / "ablation" / "gt_only-settings.json").write_text(json.dumps(settings()))
    row = next(line for line in table(d).splitlines() if "without distillation" in line)
    assert "| +0.900 | — | — | — | — | 5,804 |" in row


@pytest.mark.parametrize("profile, has_links", [("default", True), ("photos", True), ("photos_464", False)])
def test_committed_runs_render_as_in_the_docs(profile, has_links):
    """The results tables of docs/results.md are what tools/results.py makes of the committed metrics
    alone (a fresh clone has no data/ or models/), old schema (metrics/photos_464 predates the link
    sets) and new alike."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "results.md").read_text()
    block = page.split(f"<!-- results:{profile} -->\n", 1)[1].split(f"<!-- /results:{profile} -->", 1)[0]
    assert ("links" in json.loads((root / "metrics" / profile / "eval.json").read_text())) == has_links
    assert table(root / "metrics" / profile) == block


@pytest.mark.parametrize("link", ["none", "jpeg:60"])
def test_paired_reads_only_the_primary_set(root, link):
    d = root / "metrics" / "p"
    deg = {"codec": link.partition(":")[0], "jpeg_quality": int(link.partition(":")[2] or 75)}
    (d / "eval_settings.json").write_text(json.dumps(settings(degradation=deg)))
    ours = [{"image": f"im{i}", "method": "student", "psnr": 31.0, "ssim": 0.9, "link": link} for i in range(2)]
    ours += [{"image": f"im{i}", "method": "student", "psnr": 20.0, "ssim": 0.5, "link": "h264:28"} for i in range(2)]
    write_scores_csv(d / "eval_scores.csv", ours)
    write_scores_csv(d / "ablation" / "old-scores.csv",  # an older file: no link column
                     [{"image": f"im{i}", "method": "student", "psnr": 30.0, "ssim": 0.9} for i in range(2)])
    assert paired(d, "old").startswith("full size: student minus old: mean ΔPSNR +1.000 dB")


def test_frontier_and_seeds_blocks_are_generated(tmp_path):
    from tools.results import frontier_table, seeds_table

    d = tmp_path / "metrics" / "p"
    (d / "frontier").mkdir(parents=True)
    run = {"name": "fast", "arch": "sharp", "config": {"channels": 16}, "train_links": ["none", "none", "h264:23"],
           "steps": 6000, "parameters": 3875, "macs_per_1080p_frame": 4.98e8, "ms_per_1080p": 30.0, "fps_1080p": 33.3,
           "gain": {"h264:23": 0.5, "none": 1.6}, "input_psnr": {"h264:23": 33.5, "none": 36.9}}
    (d / "frontier" / "fast.json").write_text(json.dumps(run))
    (d / "frontier" / "slow.json").write_text(json.dumps(run | {"name": "slow", "ms_per_1080p": 90.0}))
    text = frontier_table(d)
    assert text.index("| fast |") < text.index("| slow |")  # fastest first
    assert "Δ dB clean | Δ dB H.264 CRF 23" in text and "mixture: clean ×2, H.264 CRF 23" in text
    assert "+1.600 | +0.500" in text and "clean 36.900 dB" in text
    (d / "seeds.json").write_text(json.dumps({
        "arms": {"gt_only": {"psnr": [30.0, 30.2], "mean": 30.1, "sd": 0.141},
                 "distilled": {"psnr": [30.1, 30.3], "mean": 30.2, "sd": 0.141}},
        "seed_paired": {"n": 2, "mean": 0.1, "ci95_low": 0.1, "ci95_high": 0.1},
        "image_paired": {"mean": 0.1, "ci95_low": 0.0, "ci95_high": 0.2, "ahead": 3, "images": 4}}))
    assert "| distilled | 30.100, 30.300 | 30.200 | 0.141 |" in seeds_table(d)
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- frontier:p -->\nold\n<!-- /frontier:p -->\n<!-- seeds:p -->\n<!-- /seeds:p -->\n")
    update(readme, tmp_path)
    assert "| fast |" in readme.read_text() and "ahead on 3 of 4" in readme.read_text()
    # a named seeds file (experiments/seeds.py --out metrics/p/seeds-big.json) has a block of its own
    (d / "seeds-big.json").write_text(json.dumps(json.loads((d / "seeds.json").read_text()) | {
        "train": {"arch": "sharp", "arch_config": {"channels": 32, "blocks": 2, "unshuffle": 2}, "epochs": 10,
                  "steps_per_epoch": 0, "batch": 16, "patch": 64, "lr": 0.001}, "val_images": 4,
        "image_paired": {"mean": 0.1, "ci95_low": 0.0, "ci95_high": 0.2, "ahead": 1, "images": 4}}))
    readme.write_text("<!-- seeds:p -->\n<!-- /seeds:p -->\n<!-- seeds:p:big -->\nold\n<!-- /seeds:p:big -->\n")
    assert "p (seeds:big)" in update(readme, tmp_path)
    plain, big = readme.read_text().split("<!-- seeds:p:big -->")
    assert "ahead on 3 of 4" in plain and "Every run" not in plain
    assert "ahead on 1 of 4" in big and big.endswith("<!-- /seeds:p:big -->\n") and "old" not in big
    assert ("Every run: `sharp` c32b2, float32, 10 epochs, each one pass over the training crops' pixels, batches of 16 patches of 64x64, "
            "learning rate 0.001, scored on 4 full-size validation images at its best epoch.") in big


def test_video_table_from_video_bench_json(tmp_path):
    from tools.results import video_table

    d = tmp_path / "metrics" / "video"
    d.mkdir(parents=True)
    run = {"clip": {"size": [1920, 1080], "photos_used": 7, "hold": 10, "link_crf": 23},
           "frames": {"ground_truth": 70, "received": 70, "sharpened": 70, "same_timestamps": True},
           "received": {"psnr": 37.634, "ssim": 0.9626}, "sharpened": {"psnr": 37.626, "ssim": 0.9541},
           "audio": {"survived": True, "bit_identical": True},
           "sharpen": {"preset": "veryfast", "crf": 18},
           "speed": {"pipeline_fps": {"best": 1.99, "median": 1.47}, "bench_fps": {"best": 2.69, "median": 1.85},
                     "pipeline_over_bench": {"median": 0.757},
                     "per_frame_ms": [{"decode": 7, "to_rgb": 9, "to_yuv": 8, "encode": 48},
                                      {"decode": 6, "to_rgb": 9, "to_yuv": 7, "encode": 43}],
                     "bench": {"arch": "sharp", "config": {"channels": 32, "blocks": 2, "int8": {"first_bits": 7}}}},
           "machine": {"cpu": "Intel(R) Xeon(R) Processor", "cpu_cores": 2, "cpu_isa": "AVX512", "cpu_features": ["amx_int8"]}}
    (d / "a.json").write_text(json.dumps(run))
    run["speed"] |= {"codecs_alone_fps": {"median": 27.91}, "pipeline_over_serial_bound": {"median": 0.943}}
    (d / "b.json").write_text(json.dumps(run))
    table = video_table(d)
    assert table.count("\n") == 4
    row = ("| Intel Xeon Processor, 2 cores, AVX512 kernels, AMX | `sharp` c32b2 int8 | 70 frames 1920x1080 (7 photos, 10-frame pan per photo) | 23 | 37.63 / 0.9626 | 37.63 / 0.9541 "
           "| 70 / 70 | bit-identical | veryfast crf 18 | 1.99 / 1.47 | 2.69 / 1.85 | 76% | {} | 15 / 50 |")
    assert row.format("— | —") in table  # a run from before the codecs were timed alone
    assert row.format("27.91 | 94%") in table
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- video -->\nold\n<!-- /video -->\nb\n")
    assert "video" in update(readme, tmp_path)
    assert readme.read_text() == f"a\n<!-- video -->\n{table}<!-- /video -->\nb\n"


def test_seeds_block_with_a_zoom_arm_lists_every_comparison(tmp_path):
    from tools.results import seeds_table
    from experiments.seeds import summarise

    per_image = {"gt_only": {0: [30.0, 31.0], 1: [30.2, 31.2]}, "distilled": {0: [30.1, 31.0], 1: [30.3, 31.1]},
                 "zoom": {0: [30.4, 31.3], 1: [30.5, 31.2]}}
    report = summarise(per_image) | {"loss": {"l2_teacher_zoom": 0.0}, "zoom_weight": 1.0}
    assert set(report["comparisons"]) == {"distilled-gt_only", "zoom-gt_only", "zoom-distilled"}
    assert report["comparisons"]["zoom-gt_only"]["seed_paired"]["mean"] == pytest.approx(0.25)
    d = tmp_path / "metrics" / "p"
    d.mkdir(parents=True)
    (d / "seeds.json").write_text(json.dumps(report))
    text = seeds_table(d)
    assert "| zoom | 30.850, 30.850 | 30.850 |" in text
    assert "Distilled + l2_teacher_zoom (weight 1.0) minus ground truth only: +0.250 dB over 2 seeds" in text
    assert "minus distilled:" in text and "Distilled minus ground truth only" in text


def test_seeds_block_adds_a_line_per_link_set(tmp_path):
    from tools.results import seeds_table
    from experiments.seeds import summarise

    clean = {"gt_only": {0: [30.0, 31.0], 1: [30.2, 31.2]}, "distilled": {0: [30.1, 31.0], 1: [30.3, 31.1]}}
    coded = {"gt_only": {0: [28.0, 29.0], 1: [28.2, 29.0]}, "distilled": {0: [28.4, 29.2], 1: [28.5, 29.1]}}
    report = summarise(clean) | {"links": {"h264:28": summarise(coded)}}
    d = tmp_path / "metrics" / "p"
    d.mkdir(parents=True)
    (d / "seeds-mix.json").write_text(json.dumps(report))
    text = seeds_table(d, "mix")
    assert ("Through H.264 CRF 28 (`h264:28`, the same images and runs): ground truth only 28.550 dB (sd 0.071); "
            "distilled 28.800 dB (sd 0.000); distilled minus ground truth only +0.250 dB over 2 seeds") in text


def test_int8_block_is_generated_from_the_probe_json(tmp_path):
    from tools.results import int8_table

    d = tmp_path / "metrics" / "p"
    assert int8_table(d) == "(no bench/int8.json)\n"
    (d / "bench").mkdir(parents=True)
    (d / "bench" / "int8.json").write_text(json.dumps({
        "nncf": "3.4.0", "calibration_frames": 4, "validation_frames": 2, "threads": 2, "runs": 5, "passes": 1,
        "forms": {"fp32": {"gain_db": 2.3, "max_abs_diff_vs_fp32": 0, "ms_per_1080p": 90.0, "speedup_vs_fp32": 1.0},
                  "int8-minmax": {"gain_db": 1.9, "max_abs_diff_vs_fp32": 13, "ms_per_1080p": 50.0,
                                  "speedup_vs_fp32": 1.8},
                  "int8-native": {"gain_db": 1.8, "max_abs_diff_vs_fp32": 12, "ms_per_1080p": 47.0,
                                  "speedup_vs_fp32": 1.91, "max_abs_diff_vs_reference": 2,
                                  "fraction_differing_vs_reference": 0.00028}}}))
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- int8:p -->\nold\n<!-- /int8:p -->\n")
    update(readme, tmp_path)
    text = readme.read_text()
    assert "| int8, activation ranges min/max | 50.0 | 1.80x | +1.900 dB | 13 levels | — |" in text
    assert "| float32 (what `auto` runs) | 90.0 | 1.00x | +2.300 dB | — | — |" in text and "old" not in text
    assert "(2 validation photos at 1920x1080)" in text
    assert "| 47.0 | 1.91x | +1.800 dB | 12 levels | at most 2 levels, on 0.028% of values |" in text


def test_the_stage_settings_win_and_a_copy_is_kept_beside_the_metrics(tmp_path):
    """eval_settings.json is a cached DVC output under data/<profile>/ (an uncached output would turn
    the evaluate stage's run-cache off); --update keeps a copy in metrics/<profile>/ for fresh clones."""
    from tools.results import keep_settings
    from tools.results import settings as read_settings

    metrics = tmp_path / "metrics" / "p"
    metrics.mkdir(parents=True)
    (metrics / "eval_settings.json").write_text(json.dumps(settings(val_links=["h264:23"])))
    assert read_settings(metrics)["val_links"] == ["h264:23"]  # a fresh clone: the kept copy
    assert keep_settings(metrics) is None  # no stage output: the kept copy stays as it is
    stage = tmp_path / "data" / "p" / "eval_settings.json"
    stage.parent.mkdir(parents=True)
    stage.write_text(json.dumps(settings(val_links=["h264:28"])))
    assert read_settings(metrics)["val_links"] == ["h264:28"]  # the stage's own file wins
    assert keep_settings(metrics) == metrics / "eval_settings.json"
    assert (metrics / "eval_settings.json").read_bytes() == stage.read_bytes()


def test_runtimes_block_is_generated_per_machine(tmp_path):
    d = tmp_path / "metrics" / "p" / "bench" / "runtimes"
    d.mkdir(parents=True)

    def compare(arch, config, isa, ms):
        return {"arch": arch, "config": config, "threads": 2, "parameters": 5804, "macs_per_frame": 2.99e9,
                "machine": {"cpu": "AMD EPYC", "cpu_cores": 2} | ({"cpu_isa": isa} if isa else {}),
                "runtimes": [{"runtime": r, "median_ms": m, "p95_ms": m + 1, "fps": 1000 / m}
                             for r, m in zip(("torch", "openvino"), ms)]}

    (d / "seed-avx512.json").write_text(json.dumps(compare("seed", {}, "AVX512", (600.0, 200.0))))
    (d / "fast-avx512.json").write_text(json.dumps(compare("sharp", {"channels": 16, "blocks": 1, "int8": {"first_bits": 7}},
                                                           "AVX512", (120.0, 14.0))))
    (d / "default-avx2.json").write_text(json.dumps(compare("sharp", {"channels": 16, "blocks": 1}, "AVX2", (190.0, 80.0))))
    (d / "old.json").write_text(json.dumps(compare("sharp", {"channels": 16, "blocks": 1}, None, (50.0, 100.0))))
    amx = compare("sharp", {"channels": 32, "blocks": 2, "int8": {"first_bits": 7}}, "AVX512", (400.0, 25.0))
    amx["machine"] |= {"cpu": "Intel(R) Xeon(R)", "cpu_features": ["avx512_vnni", "amx_int8"]}
    (d / "default-amx.json").write_text(json.dumps(amx))
    lines = runtimes_table(tmp_path / "metrics" / "p").splitlines()
    rows = [line for line in lines if line.startswith("| AMD")]
    assert len(rows) == 8
    assert [line for line in lines if line.startswith("| Intel")][1].startswith(
        "| Intel Xeon, 2 cores, AVX512 kernels, AMX, 2 threads | `sharp` c32b2 int8 | **OpenVINO** | ")
    # grouped by machine; sharp students before the report's; the fastest runtime of each file in bold
    assert rows[0].startswith("| AMD EPYC, 2 cores, 2 threads | `sharp` c16b1 | **PyTorch** | 5,804 | 2.99 | 50.0 |")
    assert rows[2].startswith("| AMD EPYC, 2 cores, AVX2 kernels, 2 threads | `sharp` c16b1 | PyTorch |")
    assert "| **OpenVINO** |" in rows[3] and "| 80.0 | 81.0 | 12.5 |" in rows[3]
    assert rows[5].startswith("| AMD EPYC, 2 cores, AVX512 kernels, 2 threads | `sharp` c16b1 int8 | **OpenVINO** |")
    assert rows[6].startswith("| AMD EPYC, 2 cores, AVX512 kernels, 2 threads | `seed` (the report's) | PyTorch |")
    assert "No runtime comparisons saved" in runtimes_table(tmp_path / "none")
