import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from sharpkd.inference.bench import benchmark
from sharpkd.nets.cost import count_macs, count_params, model_cost
from sharpkd.errors import SharpkdError
from sharpkd.nets.students import (
    DEFAULT_STUDENT,
    STUDENTS,
    RepConv,
    build_student,
    load_student,
    save_student,
)

ARCHS = sorted(STUDENTS)
SHARP_CONFIGS = [
    {"channels": 8, "blocks": 1, "unshuffle": 1},
    {"channels": 16, "blocks": 2, "unshuffle": 2},
    {"channels": 16, "blocks": 0, "unshuffle": 4},
    {"channels": 24, "blocks": 3, "unshuffle": 4},
]


def randomised(model: nn.Module, std: float = 0.3, seed: int = 0) -> nn.Module:
    """Random weights everywhere (the sharp tail starts at zero), so outputs leave [0, 1] before clamping."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def test_cost_counts_the_folded_student_that_ships():
    model = build_student(DEFAULT_STUDENT)
    cost = model_cost(model)
    assert cost == {"parameters": 5_804, "macs_per_1080p_frame": count_macs(model.reparameterize(), 1080, 1920)}
    assert count_params(build_student(DEFAULT_STUDENT)) > cost["parameters"]  # the training form has more


def test_seed_parameter_count():
    assert count_params(build_student("report")) == 19_395


def test_unknown_arch_lists_choices():
    with pytest.raises(SharpkdError, match="report.*sharp"):
        build_student("resnet9000")


@pytest.mark.parametrize("config", [{"channels": 12}, {"channels": 0}, {"unshuffle": 3}, {"blocks": -1}, {"width": 8}])
def test_bad_sharp_config(config):
    with pytest.raises(SharpkdError):
        build_student("sharp", **config)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("shape", [(1, 3, 37, 53), (2, 3, 64, 48), (1, 3, 5, 3), (1, 3, 1, 1)])
def test_any_size_kept_and_output_in_range(arch, shape):
    torch.manual_seed(0)
    model = randomised(build_student(arch)).eval()
    x = torch.rand(shape)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    assert y.min() >= 0 and y.max() <= 1
    if arch == "sharp":  # random weights push values out of range: clamping must be active
        assert (y == 0).any() or (y == 1).any()


@pytest.mark.parametrize("arch", ARCHS)
def test_rejects_non_rgb_input(arch):
    with pytest.raises(SharpkdError, match="N x 3 x H x W"):
        build_student(arch)(torch.rand(1, 1, 8, 8))


@pytest.mark.parametrize("arch", ARCHS)
def test_export_path_matches_eager(arch, monkeypatch):
    """The branch-free path taken under torch.export/compile computes the same function."""
    import sharpkd.nets.students as models

    model = randomised(build_student(arch), std=0.1).reparameterize().eval()
    xs = [torch.rand(s) for s in [(1, 3, 37, 53), (2, 3, 16, 24), (1, 3, 2, 3)]]
    with torch.no_grad():
        eager = [model(x) for x in xs]
        monkeypatch.setattr(models, "_tracing", lambda: True)
        traced = [model(x) for x in xs]
    for a, b in zip(eager, traced):
        assert a.shape == b.shape and (a - b).abs().max() <= 1e-5


@pytest.mark.parametrize("arch", ARCHS)
def test_torch_export_dynamic_sizes(arch):
    """One exported graph (as for ONNX) serves every batch and size, odd and tiny included."""
    model = randomised(build_student(arch), std=0.1).reparameterize().eval()
    dims = {0: torch.export.Dim("batch", max=8), 2: torch.export.Dim("height", min=2, max=4096),
            3: torch.export.Dim("width", min=2, max=4096)}
    # (a batch-1 example would make torch.export specialise the batch to 1)
    program = torch.export.export(model, (torch.rand(2, 3, 67, 93),), dynamic_shapes=(dims,))
    for shape in [(1, 3, 37, 53), (2, 3, 16, 24), (1, 3, 2, 2)]:
        x = torch.rand(shape)
        with torch.no_grad():
            assert (program.module()(x) - model(x)).abs().max() <= 1e-5


def test_untrained_sharp_is_identity():
    x = torch.rand(2, 3, 19, 23)
    with torch.no_grad():
        assert torch.equal(build_student("sharp")(x), x)


@pytest.mark.parametrize("config", SHARP_CONFIGS)
def test_reparameterize_equivalence(config):
    torch.manual_seed(1)
    model = randomised(build_student("sharp", **config), std=0.1).eval()
    x = torch.rand(2, 3, 37, 53)
    with torch.no_grad():
        before = model(x)
    n_before = count_params(model)
    assert model.reparameterize() is model
    reps = [m for m in model.modules() if isinstance(m, RepConv)]
    assert reps and all(m.is_fused for m in reps)
    assert count_params(model) < n_before
    with torch.no_grad():
        after = model(x)
    assert (before - after).abs().max() <= 1e-5
    assert model.reparameterize() is model  # idempotent


def test_reparameterize_keeps_trainability():
    model = randomised(build_student("sharp", channels=8, blocks=1)).reparameterize().train()
    model(torch.rand(1, 3, 16, 16)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_seed_reparameterize_is_noop():
    model = build_student("report")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.reparameterize() is model
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_count_macs_seed_1080p():
    macs = count_macs(build_student("report"), 1080, 1920)
    assert abs(macs - 25.7e9) / 25.7e9 < 0.01
    # exact: per full-res pixel 3*16*9 + 16*32*9 + 32*16*9 + 16*3*9, plus 32*32*9 per quarter pixel
    assert macs == 1920 * 1080 * (432 + 4608 + 4608 + 432) + 960 * 540 * 9216


@pytest.mark.parametrize("config", SHARP_CONFIGS)
def test_count_macs_sharp_formula(config):
    model = build_student("sharp", **config).reparameterize()
    s, c, b = config["unshuffle"], config["channels"], config["blocks"]
    io = 3 * s * s
    h, w = 64, 48
    assert count_macs(model, h, w) == (h // s) * (w // s) * 9 * (io * c + b * c * c + c * io)


def test_count_macs_odd_size_counts_padding():
    # odd sizes are padded (seed: to even, sharp x4: to multiples of 4) before the convs run
    assert count_macs(build_student("report"), 37, 53) == 38 * 54 * 10080 + 19 * 27 * 9216
    sharp = build_student("sharp", channels=8, blocks=1, unshuffle=4).reparameterize()
    assert count_macs(sharp, 37, 53) == 10 * 14 * 9 * (48 * 8 + 8 * 8 + 8 * 48)


def test_count_macs_conv_transpose_and_linear():
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.up = nn.ConvTranspose2d(4, 2, 2, stride=2)
            self.fc = nn.Linear(2 * 16 * 16, 10)

        def forward(self, x):
            return self.fc(self.up(self.conv(x)).flatten(1))

    model = Toy()
    assert count_macs(model, 8, 8) == 4 * 64 * 27 + (4 * 64) * 2 * 4 + 512 * 10
    assert next(model.parameters()).device.type == "cpu"  # counted on a copy


def test_benchmark_keys():
    res = benchmark(build_student("sharp", channels=8, blocks=1), 24, 40, runs=3, warmup=1, tile=16, overlap=4)
    assert set(res) == {"median_ms", "p95_ms", "fps"}
    assert 0 < res["median_ms"] <= res["p95_ms"]
    assert res["fps"] == pytest.approx(1000 / res["median_ms"])


@pytest.mark.parametrize("arch,config", [("report", {}), ("sharp", {"channels": 16, "blocks": 2, "unshuffle": 4})])
def test_save_load_round_trip(tmp_path, arch, config):
    torch.manual_seed(2)
    model = randomised(build_student(arch, **config), std=0.1).eval()
    x = torch.rand(1, 3, 21, 30)
    with torch.no_grad():
        expected = model(x)
    path = tmp_path / "student.safetensors"
    save_student(model, path, {"epoch": 7, "val_psnr": 31.5})
    assert [p.name for p in tmp_path.iterdir()] == ["student.safetensors"]  # no temp file left
    if arch == "sharp":
        assert not model.head.is_fused  # the caller's training model is not modified
    loaded, meta = load_student(path)
    assert type(loaded) is type(model) and not loaded.training
    assert all(m.is_fused for m in loaded.modules() if isinstance(m, RepConv))
    assert meta["epoch"] == "7" and meta["val_psnr"] == "31.5"
    assert meta["arch"] == arch and json.loads(meta["config"]) == model.config
    with torch.no_grad():
        got = loaded(x)
    assert (got - expected).abs().max() <= 1e-5


def test_save_rejects_reserved_meta(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        save_student(build_student("report"), tmp_path / "s.safetensors", {"arch": "x"})
    assert not (tmp_path / "s.safetensors").exists()


def test_load_non_student_safetensors(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.randn(3, 3)}, str(path), metadata={"format": "pt"})
    with pytest.raises(SharpkdError, match="other.safetensors.*not a sharpkd student"):
        load_student(path)


@pytest.mark.parametrize("content", [b"", b"not a safetensors file at all" * 3])
def test_load_garbage_file(tmp_path, content):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(content)
    with pytest.raises(SharpkdError, match="garbage.safetensors"):
        load_student(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(SharpkdError, match="does not exist"):
        load_student(tmp_path / "nope.safetensors")


def test_load_mismatched_weights(tmp_path):
    path = tmp_path / "s.safetensors"
    save_student(build_student("sharp", channels=8, blocks=1), path, {})
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta["config"] = json.dumps({"channels": 16, "blocks": 1, "unshuffle": 4})
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(SharpkdError, match="do not match"):
        load_student(path)


PATCH_CONFIGS = [{"channels": 8, "blocks": 0, "unshuffle": 2, "head": "patch"},
                 {"channels": 16, "blocks": 2, "unshuffle": 4, "head": "patch"}]


@pytest.mark.parametrize("config", PATCH_CONFIGS)
def test_patch_head_is_unshuffle_then_1x1_and_tail_is_1x1_then_shuffle(config):
    """The strided patch head/tail compute exactly the pixel_unshuffle/pixel_shuffle form with 1x1 convs."""
    import torch.nn.functional as F

    torch.manual_seed(3)
    model = randomised(build_student("sharp", **config), std=0.1).eval().reparameterize()
    s, c = config["unshuffle"], config["channels"]
    x = torch.rand(2, 3, 8 * s, 5 * s)
    with torch.no_grad():
        z = F.relu(F.conv2d(F.pixel_unshuffle(x, s), model.head.weight.reshape(c, 3 * s * s, 1, 1), model.head.bias))
        for block in model.body:
            z = F.relu(block(z))
        w = model.tail.weight.permute(1, 2, 3, 0).reshape(3 * s * s, c, 1, 1)  # (C, 3, s, s) -> (3*s*s, C)
        r = F.pixel_shuffle(F.conv2d(z, w), s) + model.tail.bias.view(1, 3, 1, 1)
        assert (model(x) - (x + r).clamp(0, 1)).abs().max() <= 1e-5


@pytest.mark.parametrize("config", PATCH_CONFIGS)
def test_patch_head_untrained_is_identity_and_keeps_odd_sizes(config):
    x = torch.rand(1, 3, 19, 23)
    with torch.no_grad():
        assert torch.equal(build_student("sharp", **config)(x), x)
        y = randomised(build_student("sharp", **config), std=0.1)(x)
    assert y.shape == x.shape and not torch.equal(y, x)


@pytest.mark.parametrize("config", PATCH_CONFIGS)
def test_count_macs_patch_formula(config):
    model = build_student("sharp", **config).reparameterize()
    s, c, b = config["unshuffle"], config["channels"], config["blocks"]
    h, w = 64, 48
    assert count_macs(model, h, w) == (h // s) * (w // s) * (3 * s * s * c + 9 * b * c * c + c * 3 * s * s)


def test_patch_head_round_trip_and_old_configs_unchanged(tmp_path):
    model = randomised(build_student("sharp", **PATCH_CONFIGS[1]), std=0.1).eval()
    save_student(model, tmp_path / "p.safetensors")
    loaded, meta = load_student(tmp_path / "p.safetensors")
    assert json.loads(meta["config"])["head"] == "patch"
    x = torch.rand(1, 3, 21, 30)
    with torch.no_grad():
        assert (loaded(x) - model(x)).abs().max() <= 1e-5
    assert "head" not in build_student("sharp").config  # files saved before the option load as before
    with pytest.raises(SharpkdError, match="head must be one of"):
        build_student("sharp", head="conv5x5")


@pytest.mark.parametrize("unshuffle", [1, 2, 4])
def test_temporal_student_sees_two_frames_and_adds_to_the_current_one(tmp_path, unshuffle):
    m = build_student("sharp", channels=8, blocks=1, unshuffle=unshuffle, frames=2).eval()
    cur, before = torch.rand(2, 3, 21, 30), torch.rand(2, 3, 21, 30)
    with torch.no_grad():
        assert torch.equal(m(torch.cat([cur, before], 1)), cur)  # untrained: the current frame
        randomised(m, std=0.1)
        y = m(torch.cat([cur, before], 1))
        assert y.shape == cur.shape and not torch.equal(y, m(torch.cat([cur, cur], 1)))  # the head reads both
        assert torch.allclose(m.reparameterize()(torch.cat([cur, before], 1)), y, atol=1e-5)
    save_student(m, tmp_path / "t.safetensors")
    loaded, meta = load_student(tmp_path / "t.safetensors")
    assert json.loads(meta["config"])["frames"] == 2 and loaded.frames == 2
    with torch.no_grad():
        assert torch.allclose(loaded(torch.cat([cur, before], 1)), y, atol=1e-5)
    with pytest.raises(SharpkdError, match="N x 6 x H x W"):
        m(cur)
    assert count_macs(m, 1080, 1920) > count_macs(build_student("sharp", channels=8, blocks=1, unshuffle=unshuffle)
                                                  .reparameterize(), 1080, 1920)


def test_temporal_student_settings():
    assert "frames" not in build_student("sharp", channels=8, frames=1).config  # old files stay as they were
    for bad in ({"frames": 3}, {"frames": 0}, {"frames": 2, "head": "patch"}, {"frames": 2, "int8": {}}):
        with pytest.raises(SharpkdError, match="frames"):
            build_student("sharp", channels=8, **bad)
