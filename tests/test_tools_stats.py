"""The statistics of experiments/seeds.py."""

import math

import pytest

from experiments.seeds import interval, summarise


def test_interval_is_the_t_interval_of_the_mean():
    got = interval([1.0, 2.0, 3.0])
    # mean 2, sd 1, t(0.975, 2) = 4.302653: half-width 4.302653 / sqrt(3)
    assert got["mean"] == 2.0 and got["sd"] == pytest.approx(1.0)
    assert got["ci95_high"] - 2.0 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert got["ci95_low"] == pytest.approx(4.0 - got["ci95_high"])


def test_summarise_pairs_by_seed_and_by_image():
    per_image = {"gt_only": {0: [30.0, 31.0, 32.0], 1: [30.2, 31.0, 31.8]},
                 "distilled": {0: [30.1, 31.2, 31.9], 1: [30.4, 31.1, 31.8]}}
    r = summarise(per_image)
    assert r["arms"]["gt_only"]["psnr"] == pytest.approx([31.0, 31.0])
    assert r["seed_paired"]["mean"] == pytest.approx(((0.1 + 0.2 - 0.1) / 3 + (0.2 + 0.1 + 0.0) / 3) / 2)
    assert r["image_paired"]["images"] == 3
    assert r["image_paired"]["ahead"] == 2  # image 3: -0.1 and 0.0 average below zero
    assert r["image_paired"]["mean"] == pytest.approx(r["seed_paired"]["mean"])  # same mean, other spread


def _seeds_root(tmp_path, lr=0.001, train_links=None):
    """A checkout-shaped folder: params.yaml (a tiny training) and the shards experiments/seeds.py reads."""
    import numpy as np
    import yaml

    from sharpkd.data.shards import write_split

    rng = np.random.default_rng(0)
    gt = {f"t{i}": rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for i in range(3)}
    val = {"v0": rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)}
    d = tmp_path / "data" / "p"
    for folder, noise in (("slices", 0), ("degraded", 9), ("teacher", 3)):
        shift = lambda a: np.clip(a.astype(int) + noise, 0, 255).astype(np.uint8)  # noqa: E731
        write_split(d / folder, "train", {k: shift(v) for k, v in gt.items()})
        write_split(d / folder, "val_full", {k: shift(v) for k, v in val.items()})
    train = {"arch": "sharp", "arch_config": {}, "epochs": 1, "steps_per_epoch": 2, "batch": 2, "patch": 16,
             "lr": lr, "seed": 0, "zoom": 0.5, "loss": {"l2_gt": 1.0, "l2_teacher": 1.0}}
    degrade = {"scale": 0.6} | ({"train_links": train_links} if train_links is not None else {})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": train, "degrade": degrade}))
    return tmp_path


def _count_training(monkeypatch) -> list:
    """The ``l2_teacher`` weight of every run trained from now on (the real training still runs)."""
    import sharpkd.training.distill

    trained, real = [], sharpkd.training.distill.train_student

    def counting(p, *a, **k):
        trained.append(p["loss"]["l2_teacher"])
        return real(p, *a, **k)

    monkeypatch.setattr(sharpkd.training.distill, "train_student", counting)
    return trained


def test_seeds_runs_every_seed_and_arm_once_and_resumes_only_under_the_same_settings(tmp_path, monkeypatch):
    import sharpkd.training.distill
    from experiments.seeds import run

    root, out = _seeds_root(tmp_path), tmp_path / "seeds.json"
    first = run("p", 2, root=root, out=out)
    assert {a: sorted(r) for a, r in first["per_image"].items()} == {"gt_only": [0, 1], "distilled": [0, 1]}
    assert first["arms"]["distilled"]["seeds"] == [0, 1] and first["image_paired"]["images"] == 1

    def no_training(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(sharpkd.training.distill, "train_student", no_training)
    again = run("p", 2, root=root, out=out)  # everything is in out already
    assert again["per_image"] == {a: {int(s): v for s, v in r.items()} for a, r in first["per_image"].items()}
    _seeds_root(tmp_path, train_links=[])  # no mixture, said explicitly: the same settings
    assert "train_links" not in run("p", 2, root=root, out=out)
    _seeds_root(tmp_path, train_links=["none", "h264v:23"])  # crops through a mixture: not the same runs
    with pytest.raises(AssertionError, match="trained again"):
        run("p", 2, root=root, out=out)
    _seeds_root(tmp_path, lr=0.002)  # other settings: the saved runs are not reused
    with pytest.raises(AssertionError, match="trained again"):
        run("p", 2, root=root, out=out)


def test_seeds_keeps_the_ground_truth_arm_and_redoes_the_distilled_one_under_another_teacher(tmp_path, monkeypatch):
    import sharpkd.training.distill
    from experiments.seeds import run

    root, out = _seeds_root(tmp_path), tmp_path / "seeds.json"
    weights = root / "models" / "p" / "teacher.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"teacher one")
    first = run("p", 2, root=root, out=out)
    assert first["teacher"]["sha256"] is not None
    weights.write_bytes(b"teacher two")  # another teacher: only the arms that learn from it are redone
    trained = _count_training(monkeypatch)
    second = run("p", 2, root=root, out=out)
    assert trained == [1.0, 1.0]  # the distilled arm's two seeds, no gt_only run
    assert second["per_image"]["gt_only"] == {int(s): v for s, v in first["per_image"]["gt_only"].items()}
    assert second["teacher"]["sha256"] != first["teacher"]["sha256"]



def test_seeds_upcycled_arm_trains_from_labels_computed_once_and_keeps_the_saved_arms(tmp_path, monkeypatch):
    import torch

    import sharpkd.training.distill
    import sharpkd.training.losses
    from experiments.seeds import run
    from sharpkd.training.teacher import build_teacher, save_teacher

    root, out = _seeds_root(tmp_path), tmp_path / "seeds.json"
    weights = root / "models" / "p" / "teacher.safetensors"
    weights.parent.mkdir(parents=True)
    restormer = {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1, "heads": [1, 1, 1, 1],
                 "ffn_expansion_factor": 2.0}
    save_teacher(build_teacher({"kind": "restormer", "restormer": restormer}), weights)
    first = run("p", 2, root=root, out=out)  # gt_only and distilled only
    trained, labelled = [], []
    real_train, real_label = sharpkd.training.distill.train_student, sharpkd.training.losses.label_zoomed

    def counting(p, data, *a, **k):
        trained.append((p["loss"]["l2_teacher"], p["loss"].get("l2_teacher_zoom", 0.0), data.zoom_pool is not None))
        return real_train(p, data, *a, **k)

    def labelling(teacher, crops, *a, **k):
        labelled.append(len(crops))
        return real_label(teacher, crops, *a, **k)

    monkeypatch.setattr(sharpkd.training.distill, "train_student", counting)
    monkeypatch.setattr(sharpkd.training.losses, "label_zoomed", labelling)
    second = run("p", 2, root=root, out=out, upcycle=0.5)
    # only the new arm trains: ground truth only plus the zoom term, from the pool
    assert trained == [(0.0, 0.5, True), (0.0, 0.5, True)] and labelled == [3]
    for arm in ("gt_only", "distilled"):
        assert second["per_image"][arm] == {int(s): v for s, v in first["per_image"][arm].items()}
    assert second["upcycle_weight"] == 0.5 and "upcycled-gt_only" in second["comparisons"]
    cached = list((root / ".sharpkd" / "state" / "p").glob("upcycle-*/*.npy"))
    assert len(cached) == 3  # one label per training crop, read back by a later call
    trained.clear()
    third = run("p", 2, root=root, out=out, upcycle=0.5)
    assert trained == [] and third["per_image"] == second["per_image"]


def test_seeds_run_killed_midway_resumes_from_its_state(tmp_path, monkeypatch):
    import sharpkd.training.loop
    from experiments.seeds import run

    root = _seeds_root(tmp_path)
    p = root / "params.yaml"
    p.write_text(p.read_text().replace("epochs: 1", "epochs: 2"))
    want = run("p", 2, root=root)  # uninterrupted, no output file
    real = sharpkd.training.loop.fit
    calls = []

    def dying(*a, on_step=None, **k):
        calls.append(1)

        def step(s):
            if len(calls) == 1 and s == 3:  # the first run dies after its first epoch (2 steps)
                raise KeyboardInterrupt
        return real(*a, on_step=step, **k)

    monkeypatch.setattr(sharpkd.training.loop, "fit", dying)
    monkeypatch.setattr("sharpkd.training.distill.fit", dying)
    with pytest.raises(KeyboardInterrupt):
        run("p", 2, root=root, out=tmp_path / "s.json")
    assert len(list((root / ".sharpkd" / "state" / "p" / "seeds" / "gt_only").glob("student-*.pt"))) == 1
    got = run("p", 2, root=root, out=tmp_path / "s.json")
    assert got["per_image"] == want["per_image"]
    assert not list((root / ".sharpkd" / "state" / "p" / "seeds").rglob("*.pt"))


def test_seeds_arms_train_the_ground_truth_arm_before_the_teacher_exists_and_the_other_arm_later(tmp_path, monkeypatch):
    import shutil

    import sharpkd.training.distill
    from experiments.seeds import run
    from sharpkd.errors import SharpkdError

    root, out = _seeds_root(tmp_path), tmp_path / "seeds.json"
    want = run("p", 2, root=root)  # both arms in one call, no output file
    shutil.rmtree(root / "data" / "p" / "teacher")  # the teacher stage has not run yet
    first = run("p", 2, root=root, out=out, arms=["gt_only"])
    assert first["per_image"]["gt_only"] == want["per_image"]["gt_only"] and not first["per_image"]["distilled"]
    assert list(first["arms"]) == ["gt_only"] and "seed_paired" not in first  # nothing to pair yet
    with pytest.raises(SharpkdError, match="no shards for split 'train'"):
        run("p", 2, root=root, out=out, arms=["distilled"])  # the distilled arm needs the teacher's outputs
    _seeds_root(tmp_path)  # the teacher's outputs are there now
    trained = _count_training(monkeypatch)
    second = run("p", 2, root=root, out=out, arms=["distilled"])
    assert trained == [1.0, 1.0]  # the ground-truth runs come from the first call
    assert second["per_image"] == want["per_image"] and second["seed_paired"] == pytest.approx(want["seed_paired"])
    with pytest.raises(SharpkdError, match="--arms: no arm zoom"):
        run("p", 2, root=root, out=out, arms=["zoom"])  # the zoom arm needs --zoom


def test_seeds_scores_every_run_on_the_extra_link_sets_too(tmp_path):
    import numpy as np
    import yaml

    from experiments.seeds import run
    from sharpkd.data.shards import read_split, write_split

    root, out = _seeds_root(tmp_path), tmp_path / "seeds.json"
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["degrade"]["val_links"] = ["h264:23"]
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    val = read_split(root / "data" / "p" / "slices", "val_full")
    write_split(root / "data" / "p" / "degraded_links", "val_full.h264_23",
                {k: np.clip(v.astype(int) - 20, 0, 255).astype(np.uint8) for k, v in val.items()})
    r = run("p", 2, root=root, out=out)
    link = r["links"]["h264:23"]
    assert set(r["per_link"]["h264:23"]) == {"gt_only", "distilled"} and link["arms"]["gt_only"]["seeds"] == [0, 1]
    assert link["seed_paired"]["n"] == 2 and link["image_paired"]["images"] == 1
    assert link["arms"]["gt_only"]["psnr"] != r["arms"]["gt_only"]["psnr"]  # scored on the coded images, not the clean
    again = run("p", 2, root=root, out=out)  # read back from the report, nothing retrained
    assert again["per_link"] == r["per_link"]
    assert again["links"]["h264:23"]["seed_paired"]["mean"] == link["seed_paired"]["mean"]


def test_seeds_calls_training_different_arms_at_once_share_one_report(tmp_path, monkeypatch):
    """A ground-truth-only call and a distilled call running side by side: each writes the other's
    finished runs back with its own, and the ground-truth call keeps the report's teacher."""
    import sharpkd.training.distill
    from experiments.seeds import run

    root, out = _seeds_root(tmp_path), tmp_path / "seeds.json"
    want = run("p", 2, root=root)
    run("p", 1, root=root, out=out, arms=["gt_only"])  # before the teacher's weights exist
    weights = root / "models" / "p" / "teacher.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"teacher")
    real = sharpkd.training.distill.train_student
    beside = []

    def with_another_call(p, *a, **k):
        if not beside:  # meanwhile the other call finishes ground-truth seed 1
            monkeypatch.setattr(sharpkd.training.distill, "train_student", real)
            beside.append(run("p", 2, root=root, out=out, arms=["gt_only"]))
            monkeypatch.setattr(sharpkd.training.distill, "train_student", with_another_call)
        return real(p, *a, **k)

    monkeypatch.setattr(sharpkd.training.distill, "train_student", with_another_call)
    got = run("p", 2, root=root, out=out, arms=["distilled"])
    assert sorted(beside[0]["per_image"]["gt_only"]) == [0, 1]
    assert got["per_image"] == want["per_image"] and got["seed_paired"]["n"] == 2  # nothing lost either way
    monkeypatch.setattr(sharpkd.training.distill, "train_student", real)
    again = run("p", 2, root=root, out=out, arms=["gt_only"])  # trains nothing, keeps the distilled runs
    assert again["per_image"] == want["per_image"] and again["teacher"] == got["teacher"]
    assert again["teacher"]["sha256"] is not None


def test_seeds_command_line_names_a_bad_arm_in_one_error_line(tmp_path, monkeypatch, capsys):
    import sys

    from experiments import seeds

    root = _seeds_root(tmp_path)
    out = tmp_path / "seeds.json"
    monkeypatch.setattr(sys, "argv", ["seeds.py", "--profile", "p", "--seeds", "2", "--arms", "zoom",
                                      "--root", str(root), "--out", str(out)])
    with pytest.raises(SystemExit) as exc:
        seeds.main()
    assert str(exc.value.code).startswith("error: --arms: no arm zoom in this call") and "\n" not in str(exc.value.code)
    assert not out.exists()  # nothing written


def test_video_bench_takes_a_shipped_student_or_weights_not_both(capsys):
    from experiments.video_bench import main

    assert main(["--student", "balanced", "--weights", "x.safetensors"]) == 1
    assert capsys.readouterr().err.strip() == "error: give --student or --weights, not both"
    assert main(["--student", "nosuch"]) == 1
    assert capsys.readouterr().err.startswith("error: --student must be one of ")
