"""Training: deterministic, resumable after a kill, and data-parallel equal to one process."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sharpkd.data.degrade import degrade
from sharpkd.errors import SharpkdError
from sharpkd.training.distill import TrainData, steps_per_epoch, train_student as train
from sharpkd.training.loop import sample_batch

ROOT = Path(__file__).resolve().parents[1]


def make_data(seed: int = 0) -> TrainData:
    rng = np.random.default_rng(seed)

    def img(h, w):
        # smooth random field + edges: something a sharpening network can learn from
        base = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3)).astype(np.uint8)
        up = np.kron(base, np.ones((4, 4, 1), np.uint8))[:h, :w]
        return np.ascontiguousarray(up)

    gts = [img(40, 48) for _ in range(6)]
    vals = [img(37, 45) for _ in range(2)]
    return TrainData(degraded=[degrade(g) for g in gts], gt=gts, teacher=[g.copy() for g in gts],
                     val_degraded=[degrade(v) for v in vals], val_gt=vals)


PARAMS = {"arch": "report", "arch_config": {}, "epochs": 3, "steps_per_epoch": 3, "batch": 4, "patch": 24,
          "lr": 0.003, "seed": 0, "loss": {"l1_gt": 1.0, "ssim": 0.5, "l1_teacher": 0.5}, "vgg": {}}


def test_training_is_deterministic_and_logs_each_epoch():
    seen = []
    model_a, best_a, hist_a = train(PARAMS, make_data(), on_epoch=lambda e, m: seen.append(e))
    model_b, best_b, hist_b = train(PARAMS, make_data())
    assert seen == [1, 2, 3]
    assert best_a == best_b
    for (ka, va), (kb, vb) in zip(model_a.state_dict().items(), model_b.state_dict().items()):
        assert torch.equal(va, vb), ka
    assert [h["train_loss"] for h in hist_a] == [h["train_loss"] for h in hist_b]
    assert {"val_psnr", "val_ssim", "train_l1_gt", "train_ssim", "train_l1_teacher"} <= set(hist_a[0])


class Kill(Exception):
    pass


def test_killed_run_resumes_to_the_same_result(tmp_path):
    full, best_full, hist_full = train(PARAMS, make_data())

    def die(step):
        if step == 5:  # mid-epoch 2: the checkpoint of epoch 1 (step 3) is on disk
            raise Kill

    with pytest.raises(Kill):
        train(PARAMS, make_data(), state_dir=tmp_path, on_step=die)
    (state,) = tmp_path.glob("student-*.pt")
    assert torch.load(state, weights_only=True)["step"] == 3
    replayed = []
    resumed, best_res, hist_res = train(PARAMS, make_data(), state_dir=tmp_path, on_epoch=lambda e, m: replayed.append(e))
    assert replayed == [1, 2, 3]
    assert best_res == best_full
    assert [h["train_loss"] for h in hist_res] == [h["train_loss"] for h in hist_full]
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k


def test_a_state_from_other_params_is_never_resumed(tmp_path):
    train(PARAMS, make_data(), state_dir=tmp_path)
    other = PARAMS | {"lr": 0.001}
    _, _, hist = train(other, make_data(), state_dir=tmp_path)
    fresh = train(other, make_data())[2]
    assert [h["train_loss"] for h in hist] == [h["train_loss"] for h in fresh]
    assert len(list(tmp_path.glob("student-*.pt"))) == 1  # the other run's state was removed


def test_history_holds_numbers_worth_diffing_not_timings():
    _, best, hist = train(PARAMS | {"epochs": 1}, make_data())
    assert set(hist[0]) == {"epoch", "step", "train_loss", "train_l1_gt", "train_ssim", "train_l1_teacher",
                            "val_psnr", "val_ssim"}
    assert best == hist[0]


@pytest.mark.parametrize("batch,patch,expected", [(4, 24, 5), (4, 0, 2), (2, 64, 4), (5, 24, 4)])
def test_steps_per_epoch_zero_is_one_pass_over_the_crop_pixels(batch, patch, expected):
    data = make_data()  # 6 crops of 40x48 = 11,520 pixels
    params = PARAMS | {"steps_per_epoch": 0, "batch": batch, "patch": patch}
    # patch 64 exceeds the crops: the largest square that fits (40) is used, as in sample_batch
    assert steps_per_epoch(params, data) == expected
    assert steps_per_epoch(PARAMS, data) == 3
    with pytest.raises(SharpkdError, match="steps_per_epoch"):
        steps_per_epoch(PARAMS | {"steps_per_epoch": -1}, data)


def test_batches_split_across_processes_cover_the_global_batch():
    data = make_data()
    x, y, t = sample_batch(data.pairs, 7, 0, 4, 24)
    parts = [sample_batch(data.pairs, 7, 0, 4, 24, rank=r, world=2) for r in range(2)]
    assert torch.equal(torch.cat([parts[0][1][0:1], parts[1][1][0:1], parts[0][1][1:2], parts[1][1][1:2]]), y)


def test_teacher_terms_without_teacher_outputs_fail_clearly():
    data = make_data()
    data.teacher = None
    with pytest.raises(SharpkdError, match="teacher"):
        train(PARAMS, data)


DDP_SCRIPT = r"""
import json, sys, torch, torch.distributed as dist
sys.path.insert(0, {root!r})
from sharpkd.training.distributed import distributed
from tests.test_train import PARAMS, make_data
from sharpkd.training.distill import train_student as train
with distributed() as (rank, world, device):
    model, best, hist = train(PARAMS | {{"epochs": 2}}, make_data(), device=device or "cpu")
    if rank == 0:
        torch.save(model.state_dict(), sys.argv[1])
"""


def test_two_gloo_processes_agree_with_one(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(root=str(ROOT)))
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = tmp_path / "ddp.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = torch.load(out, weights_only=True)
    single, _, _ = train(PARAMS | {"epochs": 2}, make_data())
    for k, v in single.state_dict().items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-4, atol=1e-5, msg=k)


ZOOM_PARAMS = {**PARAMS, "zoom": 0.5, "loss": {"l2_gt": 1.0, "l2_teacher_zoom": 1.0}}


class HalfTeacher(torch.nn.Module):
    def forward(self, x):
        return x * 0.5


def test_zoom_distillation_needs_the_teacher_model():
    with pytest.raises(SharpkdError, match="l2_teacher_zoom"):
        train(ZOOM_PARAMS, make_data())


def test_zoom_distillation_trains_deterministically_and_logs_its_term():
    data = make_data()
    data.teacher_model = HalfTeacher()
    model_a, _, hist_a = train(ZOOM_PARAMS, data)
    model_b, _, hist_b = train(ZOOM_PARAMS, data)
    assert all(torch.equal(a, b) for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()))
    assert hist_a[0]["train_l2_teacher_zoom"] > 0 and hist_a == hist_b
    plain, _, _ = train({**PARAMS, "loss": {"l2_gt": 1.0}}, make_data())
    assert not all(torch.equal(a, b) for a, b in zip(model_a.state_dict().values(), plain.state_dict().values()))


def _with_pool(data: TrainData) -> TrainData:
    from sharpkd.training.losses import label_zoomed

    data.zoom_pool = label_zoomed(HalfTeacher(), data.gt, 0.5, data.scale, progress=False)
    return data


def test_zoom_labels_computed_once_train_without_the_teacher_and_resume_to_the_same_result(tmp_path):
    data = _with_pool(make_data())
    assert data.teacher_model is None  # the pool replaces the online teacher
    full, best_full, hist_full = train(ZOOM_PARAMS, data)
    assert hist_full[0]["train_l2_teacher_zoom"] > 0

    def die(step):
        if step == 5:
            raise Kill

    with pytest.raises(Kill):
        train(ZOOM_PARAMS, _with_pool(make_data()), state_dir=tmp_path, on_step=die)
    resumed, best_res, hist_res = train(ZOOM_PARAMS, _with_pool(make_data()), state_dir=tmp_path)
    assert best_res == best_full and hist_res == hist_full
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))
    online = make_data()
    online.teacher_model = HalfTeacher()  # same term, labels made per step from the batch: another run
    assert train(ZOOM_PARAMS, online)[2] != hist_full


def test_stacked_inputs_sample_the_same_patches_as_their_current_frame():
    from sharpkd.training.loop import Pairs

    data = make_data()
    stacks = [np.concatenate([d, d[::-1]], axis=2) for d in data.degraded]  # a "previous" frame behind each
    x, y, _ = sample_batch(Pairs(stacks, data.gt), 5, 0, 4, 24)
    x1, y1, _ = sample_batch(Pairs(data.degraded, data.gt), 5, 0, 4, 24)
    assert x.shape == (4, 6, 24, 24) and torch.equal(x[:, :3], x1) and torch.equal(y, y1)
    for bad in ([d[..., :2] for d in data.degraded], [np.concatenate([d, d[..., :1]], axis=2) for d in data.degraded],
                [np.concatenate([d, d], axis=2)[:-1] for d in data.degraded]):
        with pytest.raises(SharpkdError, match="training crop 0"):
            Pairs(bad, data.gt)
    with pytest.raises(SharpkdError, match="training crop 0"):  # only the input may stack frames
        Pairs(data.degraded, data.gt, stacks)
