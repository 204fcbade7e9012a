import warnings
from pathlib import Path

import pytest
import torch
from pytorch_msssim import ssim as msssim_ssim

import sharpkd.training.losses as losses
from sharpkd.errors import SharpkdError
from sharpkd.training.losses import ONLINE_TEACHER_TERMS, TERMS, DistillLoss, ZoomDistillation, build_loss, needs_teacher, needs_vgg, ssim_loss
from sharpkd.nets.vgg import VGGFeatures

SHARED = Path(__file__).resolve().parents[2] / "shared"
VGG19_PATH = SHARED / "weights" / "vgg19_relu3_1.safetensors"
TEACHER_TERMS = ["vgg_feature", "deep_feature", "l1_teacher", "l2_teacher"]
#: the terms DistillLoss computes from (S, G, T); l2_teacher_zoom runs models (ZoomDistillation)
OUTPUT_TERMS = [t for t in TERMS if t not in ONLINE_TEACHER_TERMS]


@pytest.fixture(scope="module")
def vgg():
    if not VGG19_PATH.is_file():
        pytest.skip(f"{VGG19_PATH} absent")
    return VGGFeatures("vgg19_relu3_1", layers=["relu1_1", "relu2_1", "relu3_1"], path=VGG19_PATH)


def images(seed=0, shape=(2, 3, 24, 20)):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(shape, generator=g) for _ in range(3)]


@pytest.mark.parametrize("term", OUTPUT_TERMS)
def test_term_gradient_and_sign(term, vgg):
    s, g, t = images()
    s.requires_grad_(True)
    loss = DistillLoss({term: 2.0}, vgg=vgg)
    total, terms = loss(s, g, t)
    assert set(terms) == {term}
    assert terms[term] > 0 and not terms[term].requires_grad
    assert torch.allclose(total, 2.0 * terms[term])
    total.backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


@pytest.mark.parametrize("term", OUTPUT_TERMS)
def test_term_zero_at_target(term, vgg):
    s, g, t = images(1)
    target_is_teacher = term in TEACHER_TERMS
    s = (t if target_is_teacher else g).clone()
    _, terms = DistillLoss({term: 1.0}, vgg=vgg)(s, g, t)
    assert terms[term].abs() <= 1e-6


def test_teacher_gets_no_gradient(vgg):
    s, g, t = images(2)
    s.requires_grad_(True)
    t.requires_grad_(True)
    total, _ = DistillLoss({k: 1.0 for k in OUTPUT_TERMS}, vgg=vgg)(s, g, t)
    total.backward()
    assert t.grad is None and s.grad.abs().sum() > 0


def test_total_is_weighted_sum(vgg):
    s, g, t = images(3)
    weights = {"l1_gt": 1.0, "ssim": 0.5, "vgg_feature": 0.01, "deep_feature": 0.001, "l1_teacher": 0.25,
               "l2_gt": 2.0, "l2_teacher": 0.75}
    total, terms = DistillLoss(weights, vgg=vgg)(s, g, t)
    assert set(terms) == set(OUTPUT_TERMS)
    assert torch.allclose(total, sum(weights[k] * terms[k] for k in terms))


def test_feature_formulas(vgg):
    s, g, t = images(4)
    loss = DistillLoss({"vgg_feature": 1.0, "deep_feature": 1.0}, vgg=vgg, vgg_layers=["relu1_1", "relu2_1"])
    assert loss.deep_layer == "relu2_1"  # deepest configured layer
    _, terms = loss(s, g, t)
    fs, ft = vgg(s), vgg(t)
    expected = (fs["relu1_1"] - ft["relu1_1"]).abs().mean() + (fs["relu2_1"] - ft["relu2_1"]).abs().mean()
    assert torch.allclose(terms["vgg_feature"], expected)
    assert torch.allclose(terms["deep_feature"], (fs["relu2_1"] - ft["relu2_1"]).pow(2).mean())


def test_zero_weight_term_absent_and_vgg_not_built(monkeypatch):
    def no_vgg(*args, **kwargs):
        raise AssertionError("VGG must not be built")

    monkeypatch.setattr(losses, "VGGFeatures", no_vgg)
    loss = build_loss({"l1_gt": 1.0, "ssim": 0.0, "vgg_feature": 0, "deep_feature": 0.0, "l1_teacher": 0},
                      {"backbone": "vgg19_relu3_1", "path": "/nonexistent/vgg.safetensors"})
    assert loss.vgg is None
    s, g, _ = images(5)
    _, terms = loss(s, g)  # no teacher needed either
    assert set(terms) == {"l1_gt"}


def test_build_loss_with_vgg():
    if not VGG19_PATH.is_file():
        pytest.skip(f"{VGG19_PATH} absent")
    loss = build_loss({"l1_gt": 1.0, "vgg_feature": 0.1},
                      {"backbone": "vgg19_relu3_1", "path": str(VGG19_PATH), "layers": ["relu1_2", "relu2_2"]})
    assert loss.vgg_layers == ["relu1_2", "relu2_2"] and loss.deep_layer == "relu2_2"
    assert len(loss.vgg.net) == 14  # stops at relu2_2
    s, g, t = images(6)
    _, terms = loss(s, g, t)
    assert set(terms) == {"l1_gt", "vgg_feature"}


@pytest.mark.parametrize("weights,vgg_flag,teacher_flag", [
    ({"l1_gt": 1}, False, False),
    ({"l1_gt": 1, "vgg_feature": 0, "deep_feature": 0}, False, False),
    ({"deep_feature": 0.5}, True, True),
    ({"vgg_feature": 1e-3, "l1_gt": 0}, True, True),
    ({"l1_teacher": 1}, False, True),
])
def test_needs_helpers(weights, vgg_flag, teacher_flag):
    assert needs_vgg(weights) is vgg_flag
    assert needs_teacher(weights) is teacher_flag


@pytest.mark.parametrize("term", TEACHER_TERMS)
def test_missing_teacher_is_an_error(term, vgg):
    s, g, _ = images(7)
    with pytest.raises(SharpkdError, match="teacher=None"):
        DistillLoss({term: 1.0}, vgg=vgg)(s, g)


@pytest.mark.parametrize("weights,match", [
    ({"l1": 1.0}, "unknown loss term"),
    ({"l1_gt": -1.0}, ">= 0"),
    ({"l1_gt": float("nan")}, ">= 0"),
    ({"l1_gt": "1"}, ">= 0"),
    ({"l1_gt": 0.0}, "every loss weight is 0"),
])
def test_bad_weights(weights, match):
    with pytest.raises(SharpkdError, match=match):
        DistillLoss(weights)


def test_vgg_term_without_vgg():
    with pytest.raises(SharpkdError, match="VGG"):
        DistillLoss({"deep_feature": 1.0})


def test_unknown_vgg_param():
    with pytest.raises(SharpkdError, match="unknown vgg param"):
        build_loss({"l1_gt": 1.0}, {"backbone": "vgg19_relu3_1", "layer": ["relu1_1"]})


def test_shape_mismatch():
    s, g, _ = images(8)
    with pytest.raises(SharpkdError, match="shape"):
        DistillLoss({"l1_gt": 1.0})(s, g[..., :10])


def test_ssim_matches_pytorch_msssim():
    s, g, _ = images(9, (2, 3, 32, 40))
    expected = 1 - msssim_ssim(s, g, data_range=1.0, size_average=True, win_size=11, win_sigma=1.5)
    assert torch.allclose(ssim_loss(s, g), expected)


@pytest.mark.parametrize("shape", [(1, 3, 10, 40), (2, 3, 5, 7), (1, 3, 2, 2), (1, 3, 1, 9), (2, 3, 1, 1)])
def test_ssim_small_images(shape):
    s, g, _ = images(10, shape)
    s.requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Skipping Gaussian Smoothing" fallback
        value = ssim_loss(s, g)
        value.backward()
    assert torch.isfinite(value) and 0 <= value <= 2
    assert torch.isfinite(s.grad).all()
    assert ssim_loss(g, g).abs() <= 1e-6


@pytest.mark.parametrize("kwargs", [{"vgg_layers": ["relu2_2"]}, {"deep_layer": "relu1_2"}])
def test_layers_must_be_computed_by_the_vgg(kwargs, vgg):
    with pytest.raises(SharpkdError, match="not computed"):
        DistillLoss({"vgg_feature": 1.0, "deep_feature": 1.0}, vgg=vgg, **kwargs)


# ------------------------------------------------------------------ l2_teacher_zoom (online teacher)


class Halve(torch.nn.Module):
    """A stand-in teacher whose label is known: every pixel halved."""

    def forward(self, x):
        return x * 0.5


def test_zoom_inputs_are_shrunk_ground_truth_degraded_as_the_pipeline_does():
    import numpy as np
    from sharpkd.tensors import tensor2img
    from sharpkd.data.degrade import degrade, downscale

    g = images(4, (3, 3, 20, 30))[0]
    z = ZoomDistillation(Halve(), zoom=0.5, scale=0.6)
    x = z.inputs(g)
    assert x.shape == (3, 3, 10, 15)
    for i in range(3):
        want = degrade(downscale(tensor2img(g[i]), 0.5), 0.6)
        assert np.array_equal(tensor2img(x[i]), want)


def test_zoom_term_is_the_l2_to_the_teacher_label_and_trains_only_the_student():
    g = images(5, (2, 3, 16, 16))[0]
    student = torch.nn.Conv2d(3, 3, 3, padding=1)
    teacher = torch.nn.Conv2d(3, 3, 1)
    before = [p.clone() for p in teacher.parameters()]
    z = ZoomDistillation(teacher, zoom=0.5)
    value = z(student, g)
    x = z.inputs(g)
    with torch.no_grad():
        want = (student(x) - teacher(x).clamp(0, 1)).pow(2).mean()
    assert torch.allclose(value, want)
    value.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))
    halve = ZoomDistillation(Halve(), zoom=0.5)
    assert halve(lambda x: x * 0.5, g).item() == pytest.approx(0.0, abs=1e-12)  # the student that is the teacher


@pytest.mark.parametrize("zoom", [0, 1, 1.5, -0.5])
def test_zoom_outside_zero_one_fails_clearly(zoom):
    with pytest.raises(SharpkdError, match="train.zoom"):
        ZoomDistillation(Halve(), zoom=zoom)


def test_distill_loss_leaves_the_online_term_to_zoom_distillation():
    s, g, t = images(6)
    total, terms = DistillLoss({"l2_gt": 1.0, "l2_teacher_zoom": 3.0})(s, g, t)
    assert set(terms) == {"l2_gt"} and torch.allclose(total, terms["l2_gt"])


def _pool(n=3, size=(12, 18), seed=7):
    import numpy as np

    rng = np.random.default_rng(seed)
    inputs = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]
    return inputs, [(x // 2).astype(np.uint8) for x in inputs]  # the labels of a teacher that halves


def test_label_zoomed_labels_the_zoom_inputs_with_the_teacher():
    import numpy as np
    from sharpkd.inference.tiled import run_model
    from sharpkd.training.losses import label_zoomed, zoom_input

    crops = _pool(2, (20, 30))[0]
    teacher = torch.nn.Conv2d(3, 3, 1)
    inputs, labels = label_zoomed(teacher, crops, 0.5, 0.6, progress=False)
    for c, x, t in zip(crops, inputs, labels):
        assert x.shape == (10, 15, 3) and np.array_equal(x, zoom_input(c, 0.5, 0.6))
        assert np.array_equal(t, run_model(teacher, x))
    with pytest.raises(SharpkdError, match="train.zoom"):
        label_zoomed(teacher, crops, 1.0, 0.6)


def test_precomputed_zoom_draws_aligned_patches_as_a_function_of_the_torch_seed():
    from sharpkd.training.losses import PrecomputedZoom

    z = PrecomputedZoom(*_pool(), zoom=0.5)
    torch.manual_seed(3)
    x, t = z.sample(5, 8)
    assert x.shape == t.shape == (5, 3, 8, 8)
    # every label patch is the halving teacher's output on its input patch: same image, place, flip, turn
    assert torch.equal(t, torch.floor(x * 255 / 2) / 255)
    torch.manual_seed(3)
    x2, _ = z.sample(5, 8)
    torch.manual_seed(4)
    x3, _ = z.sample(5, 8)
    assert torch.equal(x, x2) and not torch.equal(x, x3)
    assert z.sample(2, 50)[0].shape == (2, 3, 12, 12)  # at most the smallest pooled side


def test_precomputed_zoom_term_is_the_l2_to_the_pooled_labels_at_zoom_of_the_patch_side():
    from sharpkd.training.losses import PrecomputedZoom

    z = PrecomputedZoom(*_pool(), zoom=0.5)
    student = torch.nn.Conv2d(3, 3, 3, padding=1)
    g = images(5, (4, 3, 16, 16))[0]
    torch.manual_seed(0)
    value = z(student, g)
    torch.manual_seed(0)
    x, t = z.sample(4, 8)
    with torch.no_grad():
        assert torch.allclose(value, (student(x) - t).pow(2).mean())
    value.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


@pytest.mark.parametrize("pool, match", [
    (([], []), "at least one"),
    ((_pool(2)[0], _pool(1)[1]), "as many labels"),
    (([_pool(1)[0][0]], [_pool(1, (10, 18))[1][0]]), "differ in size"),
    (([_pool(1)[0][0].astype("float32")], _pool(1)[1]), "uint8"),
])
def test_precomputed_zoom_rejects_a_bad_pool_clearly(pool, match):
    from sharpkd.training.losses import PrecomputedZoom

    with pytest.raises(SharpkdError, match=match):
        PrecomputedZoom(*pool)
