"""Tests for sharpkd.training.teacher: building, safe checkpoint loading, VDSR, adaptation, inference."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from sharpkd.training import teacher as T
from sharpkd.data.degrade import degrade
from sharpkd.errors import DownloadError, SharpkdError
from sharpkd.inference.tiled import prepare, run_many, run_model

SHARED = Path(__file__).resolve().parents[2] / "shared"
VDSR = SHARED / "weights" / "vdsr_y.safetensors"

# Same architecture and key layout as the official Restormer files, tiny config.
SMALL = {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1, "heads": [1, 1, 1, 1], "ffn_expansion_factor": 2.0}


def restormer_params(**over):
    p = {"kind": "restormer", "restormer": dict(SMALL), "adapt": {"seed": 0}}
    p.update(over)
    return p


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pairs(n=2, h=24, w=40, seed=0):
    """Tiny (degraded, ground truth) pairs from smooth random textures."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = rng.random((h // 4 + 1, w // 4 + 1, 3))
        gt = np.kron(base, np.ones((4, 4, 1)))[:h, :w]
        gt = (gt * 200 + rng.random((h, w, 3)) * 55).astype(np.uint8)
        out.append((degrade(gt), gt))
    return out


def _l1(model, pairs) -> float:
    model.eval()
    with torch.no_grad():
        tot = 0.0
        for lq, gt in pairs:
            x = torch.from_numpy(lq.copy()).permute(2, 0, 1)[None].float() / 255
            y = torch.from_numpy(gt.copy()).permute(2, 0, 1)[None].float() / 255
            tot += (model(x) - y).abs().mean().item()
    return tot / len(pairs)


@pytest.fixture(scope="module")
def official_ckpt(tmp_path_factory) -> Path:
    """A Restormer checkpoint in the official release format ({"params": state_dict}), random weights."""
    from spandrel_extra_arches.architectures.Restormer import Restormer

    torch.manual_seed(123)
    net = Restormer(inp_channels=3, out_channels=3, **SMALL)
    path = tmp_path_factory.mktemp("ckpt") / "restormer_small.pth"
    torch.save({"params": net.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def http_dir(tmp_path_factory):
    """A loopback HTTP server over a temporary folder: yields (folder, base_url)."""
    root = tmp_path_factory.mktemp("www")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------ building


@pytest.mark.parametrize("shape", [(1, 3, 17, 23), (1, 3, 8, 8), (2, 3, 31, 9), (1, 3, 1, 5)])
def test_restormer_any_size_in_range(shape):
    model = T.build_teacher(restormer_params())
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert y.min() >= 0 and y.max() <= 1
    assert T.describe(model)["arch"] == "Restormer"


def test_restormer_build_is_seeded_and_leaves_global_rng():
    torch.manual_seed(7)
    before = torch.rand(1)
    torch.manual_seed(7)
    a = T.build_teacher(restormer_params())
    after = torch.rand(1)
    b = T.build_teacher(restormer_params())
    assert torch.equal(before, after)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_restormer_pads_odd_sizes_and_crops_back():
    model = T.build_teacher(restormer_params())
    x = torch.rand(1, 3, 45, 70, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
        padded = model(torch.nn.functional.pad(x, (0, 2, 0, 3), mode="replicate"))  # 48x72: a multiple of 8
    assert y.shape == x.shape
    assert torch.allclose(y, padded[..., :45, :70], atol=1e-5)


@pytest.mark.parametrize(
    "params,match",
    [
        ({"kind": "nope"}, "teacher.kind"),
        (restormer_params(restormer={"dim": 8, "heads": [1, 3, 1, 1]}), "not divisible"),
        (restormer_params(restormer={"dim": 8, "colour": 1}), "unknown keys"),
        ({"kind": "checkpoint", "checkpoint": ""}, "empty"),
        ({"kind": "checkpoint", "checkpoint": "http://127.0.0.1:9/x.pth"}, "sha256 is required"),
        ({"kind": "checkpoint", "checkpoint": "/nonexistent/x.pth"}, "/nonexistent/x.pth"),
        ({"kind": "vdsr", "vdsr_path": "/nonexistent/vdsr_y.safetensors"}, "/nonexistent/vdsr_y.safetensors"),
    ],
)
def test_bad_params_raise(params, match):
    with pytest.raises(SharpkdError, match=match):
        T.build_teacher(params)


# ------------------------------------------------------------------------------ checkpoints


def test_checkpoint_by_path_detects_restormer(official_ckpt):
    from spandrel_extra_arches.architectures.Restormer import Restormer

    lines = []
    model = T.build_teacher({"kind": "checkpoint", "checkpoint": str(official_ckpt), "sha256": _sha(official_ckpt)}, log=lines.append)
    assert model.arch == "Restormer" and model.multiple_of == 8
    assert "Restormer" in lines[0] and f"{T.describe(model)['parameters']:,}" in lines[0]
    ref = Restormer(inp_channels=3, out_channels=3, **SMALL)
    ref.load_state_dict(torch.load(official_ckpt, weights_only=True)["params"])
    ref.eval()
    x = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x).clamp(0, 1), atol=1e-6)


def test_checkpoint_wrong_sha_for_path(official_ckpt):
    with pytest.raises(DownloadError, match="sha256"):
        T.build_teacher({"kind": "checkpoint", "checkpoint": str(official_ckpt), "sha256": "0" * 64})


def test_checkpoint_by_url(official_ckpt, http_dir, tmp_path, monkeypatch):
    root, base = http_dir
    (root / "restormer_small.pth").write_bytes(official_ckpt.read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = f"{base}/restormer_small.pth"
    model = T.build_teacher({"kind": "checkpoint", "checkpoint": url, "sha256": _sha(official_ckpt)})
    assert model.arch == "Restormer"
    assert list((tmp_path / "torch" / "hub" / "checkpoints").glob("restormer_small*"))
    (root / "other.pth").write_bytes(official_ckpt.read_bytes())
    with pytest.raises(DownloadError):
        T.build_teacher({"kind": "checkpoint", "checkpoint": f"{base}/other.pth", "sha256": "f" * 64})
    assert not (tmp_path / "torch" / "hub" / "checkpoints" / "other.pth").exists()


class _Payload:
    """An arbitrary class instance; unpickling it needs this module's code."""

    def __init__(self):
        self.x = 1


class _Reduce:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("what", ["reduce", "instance", "bare-reduce"])
def test_pickled_code_is_refused_and_not_executed(official_ckpt, tmp_path, what):
    marker = tmp_path / "pwned"
    sd = torch.load(official_ckpt, weights_only=True)["params"]
    path = tmp_path / f"evil_{what}.pth"
    if what == "reduce":
        torch.save({"params": sd, "extra": _Reduce(marker)}, path)
    elif what == "instance":
        torch.save({"params": sd, "extra": _Payload()}, path)
    else:
        path.write_bytes(pickle.dumps(_Reduce(marker)))
    with pytest.raises(SharpkdError, match="needs full unpickling"):
        T.build_teacher({"kind": "checkpoint", "checkpoint": str(path)})
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_archive_is_refused(tmp_path):
    path = tmp_path / "ts.pt"
    torch.jit.save(torch.jit.trace(torch.nn.Conv2d(3, 3, 3), torch.zeros(1, 3, 8, 8)), str(path))
    with pytest.raises(SharpkdError, match="not a readable PyTorch state dict"):
        T.build_teacher({"kind": "checkpoint", "checkpoint": str(path)})


@pytest.mark.parametrize("upscale,ok", [(1, True), (2, False)])
def test_other_spandrel_arch_scale_check(tmp_path, upscale, ok):
    """A non-Restormer spandrel arch (Compact) loads from safetensors at scale 1; scale 2 is refused."""
    from safetensors.torch import save_file
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    net = Compact(num_feat=8, num_conv=2, upscale=upscale)
    path = tmp_path / f"compact_x{upscale}.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    params = {"kind": "checkpoint", "checkpoint": str(path)}
    if ok:
        model = T.build_teacher(params)
        assert model.arch == "Compact"
        assert model(torch.rand(1, 3, 9, 11)).shape == (1, 3, 9, 11)
    else:
        with pytest.raises(SharpkdError, match="scale 2"):
            T.build_teacher(params)


def test_unrecognised_state_dict(tmp_path):
    path = tmp_path / "weird.pth"
    torch.save({"params": {"foo.weight": torch.zeros(3)}}, path)
    with pytest.raises(SharpkdError, match="does not recognise"):
        T.build_teacher({"kind": "checkpoint", "checkpoint": str(path)})


# ------------------------------------------------------------------------------ save / load


def test_save_load_roundtrip_restormer_and_checkpoint(official_ckpt, tmp_path):
    import spandrel
    from safetensors import safe_open

    x = torch.rand(1, 3, 19, 21, generator=torch.Generator().manual_seed(3))
    for params in (restormer_params(), {"kind": "checkpoint", "checkpoint": str(official_ckpt)}):
        model = T.build_teacher(params)
        with torch.no_grad():  # perturb so we are not comparing two fresh inits
            for p in model.parameters():
                p.add_(0.01)
        path = tmp_path / f"{params['kind']}.safetensors"
        T.save_teacher(model, path, params)
        with safe_open(str(path), "pt") as f:
            assert f.metadata()["kind"] == params["kind"]
        loaded = T.load_teacher(path)
        assert loaded.kind == params["kind"] and loaded.arch == "Restormer"
        with torch.no_grad():
            assert torch.equal(model.eval()(x), loaded(x))
        # the saved file keeps the official key layout: spandrel detects it by itself
        assert spandrel.ModelLoader().load_from_file(path).architecture.id == "Restormer"
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_load_teacher_errors(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(SharpkdError, match="do not exist"):
        T.load_teacher(tmp_path / "missing.safetensors")
    path = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(2)}, str(path))
    with pytest.raises(SharpkdError, match="not a sharpkd teacher"):
        T.load_teacher(path)


# ------------------------------------------------------------------------------ VDSR


@pytest.fixture(scope="module")
def vdsr():
    if not VDSR.is_file():
        pytest.skip(f"{VDSR} not present")
    return T.build_teacher({"kind": "vdsr", "vdsr_path": str(VDSR)})


def test_vdsr_improves_degraded_astronaut(vdsr, tmp_path):
    from skimage.data import astronaut

    gt = np.ascontiguousarray(astronaut()[100:228, 180:308])
    lq = degrade(gt)
    out = run_model(prepare(vdsr), lq, tile=512, overlap=32)
    assert out.shape == gt.shape and out.dtype == np.uint8

    def psnr(a, b):
        return 10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2))

    assert psnr(out, gt) > psnr(lq, gt) + 1.0
    assert T.describe(vdsr) == {"arch": "VDSR", "kind": "vdsr", "parameters": 664_704,
                                "macs_per_1080p_frame": 664_704 * 1920 * 1080}  # no biases: MACs per pixel = parameters
    # round trip through save/load keeps the outputs
    T.save_teacher(vdsr, tmp_path / "v.safetensors", {"kind": "vdsr"})
    again = run_model(prepare(T.load_teacher(tmp_path / "v.safetensors")), lq)
    assert np.array_equal(again, out)


def test_vdsr_colour_convention(vdsr):
    """Cb/Cr pass through: the RGB change equals (255/219) * dY on all channels (MATLAB rgb2ycbcr)."""
    x = torch.rand(1, 3, 20, 24, generator=torch.Generator().manual_seed(4)) * 0.6 + 0.2
    net = vdsr.net
    with torch.no_grad():
        y_in = (65.481 * x[:, 0] + 128.553 * x[:, 1] + 24.966 * x[:, 2] + 16) / 255
        y_out = net.forward_y(y_in[:, None]).clamp(0, 1)[:, 0]
        out = vdsr(x)
    delta = out - x
    want = (255 / 219) * (y_out - y_in)[:, None].expand_as(delta)
    inside = (out > 0) & (out < 1)  # the final RGB clamp may cut a few pixels
    assert inside.float().mean() > 0.9
    assert torch.allclose(delta[inside], want[inside], atol=1e-4)


# ------------------------------------------------------------------------------ adapt / infer


def test_adapt_reduces_training_l1():
    pairs = _pairs()
    model = T.build_teacher(restormer_params())
    before = _l1(model, pairs)
    record = T.adapt(model, pairs, steps=30, lr=2e-3, patch=16, batch=4, seed=0, device="cpu", progress=False)
    after = _l1(model, pairs)
    assert record["step"] == 30 and record["train_loss"] > 0
    assert after < before * 0.9, (before, after)
    assert not model.training


class Stop(Exception):
    pass


def test_adapt_resume_equals_uninterrupted(tmp_path):
    pairs = _pairs(h=20, w=12)  # narrower than the patch: crops fall back to the image size
    kw = dict(steps=12, lr=1e-3, patch=16, batch=3, seed=5, device="cpu", checkpoint_every=5, progress=False)
    full = T.build_teacher(restormer_params())
    rec_full = T.adapt(full, pairs, **kw)

    def stop_at_8(step):
        if step == 8:
            raise Stop

    part = T.build_teacher(restormer_params())
    with pytest.raises(Stop):
        T.adapt(part, pairs, state_dir=tmp_path, on_step=stop_at_8, **kw)
    (state,) = tmp_path.glob("teacher-*.pt")  # named by the run's fingerprint
    assert torch.load(state, weights_only=True)["step"] == 5  # plain tensors and containers only

    resumed = T.build_teacher(restormer_params())  # the same start: the fingerprint includes it
    rec_res = T.adapt(resumed, pairs, state_dir=tmp_path, **kw)
    assert rec_res == rec_full
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_adapt_never_resumes_a_state_of_other_settings(tmp_path):
    pairs = _pairs(n=1, h=16, w=16)
    kw = dict(lr=1e-3, patch=16, batch=1, seed=0, device="cpu", state_dir=tmp_path, progress=False)
    T.adapt(T.build_teacher(restormer_params()), pairs, steps=2, **kw)
    fresh = T.build_teacher(restormer_params())
    T.adapt(fresh, pairs, steps=3, lr=1e-3, patch=16, batch=1, seed=0, progress=False)
    other = T.build_teacher(restormer_params())
    T.adapt(other, pairs, steps=3, **kw)
    assert len(list(tmp_path.glob("teacher-*.pt"))) == 1  # the older state was removed
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]), k


def test_adapt_zero_steps_leaves_weights():
    model = T.build_teacher(restormer_params())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert T.adapt(model, _pairs(), steps=0, lr=1e-3, patch=16, batch=2, seed=0, device="cpu") == {}
    for k, v in model.state_dict().items():
        assert torch.equal(before[k], v), k


def test_adapt_rejects_bad_pairs():
    model = T.build_teacher(restormer_params())
    lq, gt = _pairs(n=1)[0]
    with pytest.raises(SharpkdError, match="sizes differ"):
        T.adapt(model, [(lq, gt[:-1])], steps=1, lr=1e-3, patch=16, batch=1, seed=0, device="cpu")
    with pytest.raises(SharpkdError, match="uint8"):
        T.adapt(model, [(lq.astype(np.float32), gt)], steps=1, lr=1e-3, patch=16, batch=1, seed=0, device="cpu")


@pytest.mark.parametrize("tile,overlap,batch", [(512, 32, 1), (16, 4, 3)])
def test_teacher_inference_deterministic(tile, overlap, batch):
    model = prepare(T.build_teacher(restormer_params()))
    imgs = [p[0] for p in _pairs(n=2, h=27, w=45)]
    a = run_many(model, imgs, tile=tile, overlap=overlap, batch=batch, progress=False)
    b = run_many(model, imgs, tile=tile, overlap=overlap, batch=batch, progress=False)
    assert [x.shape for x in a] == [x.shape for x in imgs]
    assert all(x.dtype == np.uint8 for x in a)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
