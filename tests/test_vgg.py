import hashlib
from pathlib import Path

import pytest
import torch
from torchvision.models.vgg import cfgs, make_layers

import sharpkd.nets.vgg
from sharpkd.errors import SharpkdError
from sharpkd.nets.vgg import IMAGENET_MEAN, IMAGENET_STD, VGG16_SHA256, VGG16_URL, VGGFeatures

SHARED = Path(__file__).resolve().parents[2] / "shared"
VGG19_PATH = SHARED / "weights" / "vgg19_relu3_1.safetensors"
VGG19_SHA256 = "7bb5eb26a901662ce702d93c37cf9b95a6645fa4476cd3456260c5ee0cc9a93e"  # shared/weights/SHA256SUMS


@pytest.fixture(scope="module")
def vgg19():
    if not VGG19_PATH.is_file():
        pytest.skip(f"{VGG19_PATH} absent")
    return VGGFeatures("vgg19_relu3_1", path=VGG19_PATH)


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    """A torchvision-layout VGG16 checkpoint with random weights (features + a stand-in classifier key)."""
    torch.manual_seed(0)
    feats = make_layers(cfgs["D"], batch_norm=False)
    state = {f"features.{k}": v for k, v in feats.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)
    path = tmp_path_factory.mktemp("vgg16") / "vgg16-random.pth"
    torch.save(state, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest(), feats.eval()


VGG19_SHAPES = {
    "relu1_1": (64, 20, 30),
    "relu1_2": (64, 20, 30),
    "relu2_1": (128, 10, 15),
    "relu2_2": (128, 10, 15),
    "relu3_1": (256, 5, 8),  # ceil_mode pooling: 15 -> 8
}


def test_vgg19_shapes(vgg19):
    out = vgg19(torch.rand(2, 3, 20, 30))
    assert list(out) == list(VGG19_SHAPES)
    for name, shape in VGG19_SHAPES.items():
        assert tuple(out[name].shape) == (2, *shape)
        assert out[name].min() >= 0  # ReLU outputs


def test_vgg19_input_normalisation(vgg19):
    # layer 0 maps RGB in [0, 1] to BGR*255 minus the Caffe ImageNet mean
    bgr = vgg19.net[0](torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)).flatten()
    assert torch.allclose(bgr, torch.tensor([-103.939, -116.779, 255 - 123.68]), atol=1e-3)


def test_vgg19_frozen_and_eval(vgg19):
    assert all(not p.requires_grad for p in vgg19.parameters())
    vgg19.train()
    assert not vgg19.training and not any(m.training for m in vgg19.modules())
    x = torch.rand(1, 3, 12, 12, requires_grad=True)
    vgg19(x)["relu2_1"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("layers,length", [(["relu1_1"], 4), (["relu1_2", "relu1_1"], 7), (["relu2_2"], 14), (None, 18)])
def test_vgg19_stops_at_deepest_layer(layers, length):
    if not VGG19_PATH.is_file():
        pytest.skip(f"{VGG19_PATH} absent")
    vgg = VGGFeatures("vgg19_relu3_1", layers=layers, path=VGG19_PATH, sha256=VGG19_SHA256)
    assert len(vgg.net) == length
    assert set(vgg(torch.rand(1, 3, 8, 8))) == set(layers or VGG19_SHAPES)


def test_forward_subset_matches_full(vgg19):
    x = torch.rand(1, 3, 16, 16)
    full = vgg19(x)
    sub = vgg19(x, ["relu2_1"])
    assert list(sub) == ["relu2_1"] and torch.equal(sub["relu2_1"], full["relu2_1"])


def test_vgg19_missing_file(tmp_path):
    with pytest.raises(SharpkdError, match="not found.*shared/README.md"):
        VGGFeatures("vgg19_relu3_1", path=tmp_path / "missing.safetensors")


def test_vgg19_wrong_hash():
    if not VGG19_PATH.is_file():
        pytest.skip(f"{VGG19_PATH} absent")
    with pytest.raises(SharpkdError, match="sha256"):
        VGGFeatures("vgg19_relu3_1", path=VGG19_PATH, sha256="0" * 64)


@pytest.mark.parametrize("kwargs,match", [({"backbone": "vgg11"}, "unknown VGG backbone"),
                                          ({"layers": ["relu4_3"]}, "no layer")])
def test_bad_backbone_or_layer(kwargs, match, tmp_path):
    with pytest.raises(SharpkdError, match=match):
        VGGFeatures(path=tmp_path / "unused.safetensors", **kwargs)


def test_vgg16_through_fetch(vgg16_file, tmp_path):
    path, sha, feats = vgg16_file
    cache = tmp_path / "cache"
    vgg = VGGFeatures("vgg16", url=str(path), sha256=sha, cache_dir=cache, progress=False)
    assert (cache / path.name).is_file()  # fetched into the cache
    assert len(vgg.net) == 23  # cut after relu4_3
    x = torch.rand(1, 3, 32, 24)
    out = vgg(x)
    shapes = {"relu1_2": (64, 32, 24), "relu2_2": (128, 16, 12), "relu3_3": (256, 8, 6), "relu4_3": (512, 4, 3)}
    assert {k: tuple(v.shape[1:]) for k, v in out.items()} == shapes
    # same as torchvision's features on ImageNet-normalised input
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = feats[:23]((x - mean) / std)
    assert torch.allclose(out["relu4_3"], ref, atol=1e-5)


def test_vgg16_wrong_sha(vgg16_file, tmp_path):
    path, _, _ = vgg16_file
    with pytest.raises(SharpkdError):
        VGGFeatures("vgg16", url=str(path), sha256="f" * 64, cache_dir=tmp_path / "cache", progress=False)


def test_vgg16_default_download_is_pinned(vgg16_file, monkeypatch):
    path, _, _ = vgg16_file
    calls = []

    def fake_fetch(url, sha256, filename=None, cache_dir=None, progress=True):
        calls.append((url, sha256))
        return path

    monkeypatch.setattr(sharpkd.nets.vgg, "fetch", fake_fetch)
    vgg = VGGFeatures("vgg16", layers=["relu1_2"], progress=False)
    assert calls == [(VGG16_URL, VGG16_SHA256)]
    assert len(vgg.net) == 4


def test_vgg16_local_path(vgg16_file):
    path, sha, _ = vgg16_file
    vgg = VGGFeatures("vgg16", layers=["relu2_2"], path=path, sha256=sha)
    assert tuple(vgg(torch.rand(1, 3, 8, 8))["relu2_2"].shape) == (1, 128, 4, 4)


def test_vgg16_not_a_checkpoint(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(SharpkdError, match="features"):
        VGGFeatures("vgg16", path=bad)
