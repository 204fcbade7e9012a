"""The teacher: build, load, adapt (fine-tune) and run a heavy restoration network.

Every teacher is a :class:`Teacher` module that maps RGB in [0, 1] (Nx3xHxW float) to RGB in
[0, 1] of the same size.  Three kinds (params.yaml section ``teacher``, key ``kind``):

* ``restormer``: the Restormer architecture (Zamir et al. 2022, from ``spandrel_extra_arches``)
  built from a (small) config with seeded random init;
* ``vdsr``: VDSR (Kim et al. 2016) on the BT.601 Y channel, from a safetensors state dict
  (``../shared/weights/vdsr_y.safetensors``);
* ``checkpoint``: any spandrel-loadable single-image restoration checkpoint (local path or URL
  with sha256), read without unpickling code (``torch.load(weights_only=True)`` / safetensors).

:func:`adapt` fine-tunes a teacher on (degraded, ground truth) pairs through the one training loop
(:func:`sharpkd.training.loop.fit`), resumably; :func:`sharpkd.inference.tiled.run_model` runs it.
"""

from __future__ import annotations

import json
import math
import pickle
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from sharpkd.tensors import crop_to, pad_to
from sharpkd.nets.cost import model_cost
from sharpkd.errors import DownloadError, SharpkdError, state_dict_mismatch
from sharpkd.fetch import fetch, sha256_file
from sharpkd.files import write_safetensors
from sharpkd.training.loop import Pairs, fingerprint, fit, state_file

__all__ = [
    "KINDS",
    "Teacher",
    "VDSRRGB",
    "build_teacher",
    "load_state_dict_file",
    "save_teacher",
    "load_teacher",
    "adapt",
    "describe",
]

KINDS = ("restormer", "vdsr", "checkpoint")
TEACHER_FORMAT = "sharpkd-teacher/1"

_RESTORMER_KEYS = {"dim", "num_blocks", "num_refinement_blocks", "heads", "ffn_expansion_factor", "bias", "LayerNorm_type"}
_RESTORMER_MULTIPLE = 8  # three 2x down-samplings (pixel-unshuffle)


# --------------------------------------------------------------------------------------------
# modules


class Teacher(nn.Module):
    """An RGB [0,1] -> RGB [0,1] restoration network with size handling.

    ``net`` is the architecture itself (its state dict is what :func:`save_teacher` writes).
    The input is padded (replicate, bottom/right: :func:`sharpkd.tensors.pad_to`) to satisfy ``multiple_of`` / ``min_size`` /
    ``square``, run through ``call(net, x)`` and cropped back.  In eval mode the output is
    clamped to [0, 1]; in training mode it is not, so that an L1 loss keeps its gradient.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        kind: str,
        arch: str,
        config: dict,
        multiple_of: int = 1,
        min_size: int = 0,
        square: bool = False,
        call: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    ):
        super().__init__()
        self.net = net
        self.kind = kind
        self.arch = arch
        self.config = dict(config)
        self.multiple_of = int(multiple_of)
        self.min_size = int(min_size)
        self.square = bool(square)
        self._call = call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.multiple_of
        hp = math.ceil(max(h, self.min_size) / m) * m
        wp = math.ceil(max(w, self.min_size) / m) * m
        if self.square:
            hp = wp = max(hp, wp)
        xp = pad_to(x, hp, wp)
        y = self._call(self.net, xp) if self._call is not None else self.net(xp)
        y = crop_to(y, h, w)
        if not self.training:
            y = y.clamp(0, 1)
        return y

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, arch={self.arch!r}, multiple_of={self.multiple_of}"


class _ConvReLU(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1, bias=False)

    def forward(self, x):
        return F.relu(self.conv(x), inplace=True)


# MATLAB rgb2ycbcr for RGB in [0, 1]: ycc = M @ rgb + offset  (Y in [16, 235] / 255).
_YCC_M = np.array(
    [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]], dtype=np.float64
) / 255.0
_YCC_OFFSET = np.array([16.0, 128.0, 128.0]) / 255.0


class VDSRRGB(nn.Module):
    """VDSR (Kim et al. 2016) applied to the Y channel of an RGB image.

    Y-network: ``input`` conv 1->width 3x3 + ReLU, ``depth`` blocks ``residual_layer.N.conv``
    width->width 3x3 + ReLU, ``output`` conv width->1 3x3 (no biases); ``y' = output(...) + y``.
    Colour: ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255`` (MATLAB ``rgb2ycbcr``, BT.601),
    Cb and Cr unchanged, so converting back adds ``inv(M)[:, 0] * (y' - y)`` (= 255/219 per
    channel) to RGB.  In eval mode ``y'`` is clamped to [0, 1] first, as in the reference code.
    """

    def __init__(self, depth: int = 18, width: int = 64):
        super().__init__()
        self.input = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.residual_layer = nn.Sequential(*[_ConvReLU(width) for _ in range(depth)])
        self.output = nn.Conv2d(width, 1, 3, padding=1, bias=False)
        self.register_buffer("y_coef", torch.tensor(_YCC_M[0], dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        back = np.linalg.inv(_YCC_M)[:, 0]
        self.register_buffer("rgb_coef", torch.tensor(back, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.y_offset = float(_YCC_OFFSET[0])

    def forward_y(self, y: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.input(y), inplace=True)
        out = self.residual_layer(out)
        return self.output(out) + y

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        y = (rgb * self.y_coef).sum(dim=1, keepdim=True) + self.y_offset
        y_out = self.forward_y(y)
        if not self.training:
            y_out = y_out.clamp(0, 1)
        return rgb + self.rgb_coef * (y_out - y).to(rgb.dtype)


# --------------------------------------------------------------------------------------------
# building


def _resolve(path: str | Path, root: str | Path | None) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute() and root is not None:
        p = Path(root) / p
    return p


def _restormer_config(cfg: dict) -> dict:
    unknown = set(cfg) - _RESTORMER_KEYS
    if unknown:
        raise SharpkdError(f"teacher.restormer has unknown keys {sorted(unknown)}; allowed: {sorted(_RESTORMER_KEYS)}")
    out = {
        "dim": int(cfg.get("dim", 48)),
        "num_blocks": [int(v) for v in cfg.get("num_blocks", [4, 6, 6, 8])],
        "num_refinement_blocks": int(cfg.get("num_refinement_blocks", 4)),
        "heads": [int(v) for v in cfg.get("heads", [1, 2, 4, 8])],
        "ffn_expansion_factor": float(cfg.get("ffn_expansion_factor", 2.66)),
        "bias": bool(cfg.get("bias", False)),
        "LayerNorm_type": str(cfg.get("LayerNorm_type", "WithBias")),
    }
    if len(out["num_blocks"]) != 4 or len(out["heads"]) != 4:
        raise SharpkdError(f"teacher.restormer num_blocks and heads need 4 entries each, got {out['num_blocks']} / {out['heads']}")
    for level, heads in enumerate(out["heads"]):
        ch = out["dim"] * 2 ** min(level, 3)
        if heads < 1 or ch % heads:
            raise SharpkdError(f"teacher.restormer: level {level} has {ch} channels, not divisible by heads={heads}")
    if out["LayerNorm_type"] not in ("WithBias", "BiasFree"):
        raise SharpkdError(f"teacher.restormer.LayerNorm_type must be WithBias or BiasFree, got {out['LayerNorm_type']!r}")
    return out


def _extra_arches():
    """Import spandrel_extra_arches (lazily; its CodeFormer module warns about torch.jit.script on import)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
        import spandrel_extra_arches
        from spandrel_extra_arches.architectures.Restormer import Restormer
    return spandrel_extra_arches, Restormer


def _build_restormer(cfg: dict, seed: int) -> Teacher:
    _, Restormer = _extra_arches()
    cfg = _restormer_config(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Restormer(inp_channels=3, out_channels=3, **cfg)
    return Teacher(net, kind="restormer", arch="Restormer", config=cfg, multiple_of=_RESTORMER_MULTIPLE)


def _vdsr_from_state_dict(sd: dict, source: str) -> Teacher:
    depth = sum(1 for k in sd if k.startswith("residual_layer.") and k.endswith(".conv.weight"))
    if "input.weight" not in sd or depth == 0:
        raise SharpkdError(f"{source} is not a VDSR state dict (expected input.weight, residual_layer.N.conv.weight, output.weight)")
    width = sd["input.weight"].shape[0]
    net = VDSRRGB(depth=depth, width=width)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError:
        raise SharpkdError(f"{source} does not match the VDSR layout: {state_dict_mismatch(net.state_dict(), sd)}") from None
    return Teacher(net, kind="vdsr", arch="VDSR", config={"depth": depth, "width": width})


def _build_vdsr(path: Path) -> Teacher:
    from safetensors.torch import load_file

    if not path.is_file():
        raise SharpkdError(
            f"VDSR weights not found at {path}; set teacher.vdsr_path to vdsr_y.safetensors (shared/weights/)"
        )
    return _vdsr_from_state_dict(load_file(str(path)), str(path))


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint's state dict without executing code from it.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)`` (tensors, dicts, lists, numbers only).  Wrappers
    (``params``, ``params_ema``, ``state_dict``, ``model``, ... and ``module.`` prefixes) are
    removed with spandrel's ``canonicalize_state_dict``.  Files that need full unpickling
    (pickled classes or functions), TorchScript archives and unreadable files raise
    :class:`SharpkdError`.
    """
    from spandrel import canonicalize_state_dict

    path = Path(path)
    if not path.is_file():
        raise SharpkdError(f"checkpoint {path} does not exist")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            raw: Any = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
            raise SharpkdError(f"{path} is not a readable safetensors file: {e}") from None
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                raw = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            first = str(e).strip().splitlines()
            detail = next((ln for ln in first if "GLOBAL" in ln or "global" in ln), first[0] if first else "")
            raise SharpkdError(
                f"{path} refused: it needs full unpickling (it pickles Python objects, not just tensors), "
                f"which could run arbitrary code. Convert it to a plain state dict or safetensors. ({detail.strip()})"
            ) from None
        except Exception as e:  # noqa: BLE001 - zip errors, TorchScript archives, truncated files
            raise SharpkdError(f"{path} is not a readable PyTorch state dict: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise SharpkdError(f"{path} holds a {type(raw).__name__}, not a state dict")
    sd = canonicalize_state_dict(raw)
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise SharpkdError(f"{path} holds no tensors (top-level keys: {sorted(map(str, raw))[:10]})")
    return tensors


def _spandrel_teacher(sd: dict[str, torch.Tensor], source: str) -> Teacher:
    """Detect the architecture of ``sd`` with spandrel (+ extra arches) and wrap it."""
    import spandrel

    _extra_arches()[0].install(ignore_duplicates=True)  # idempotent
    try:
        desc = spandrel.ModelLoader().load_from_state_dict(sd)
    except spandrel.UnsupportedModelError:
        raise SharpkdError(f"{source}: spandrel does not recognise this architecture ({len(sd)} tensors)") from None
    except Exception as e:  # noqa: BLE001 - arch loaders raise KeyError/RuntimeError on odd dicts
        raise SharpkdError(f"{source}: could not build the model: {type(e).__name__}: {e}") from None
    arch = desc.architecture.id
    found = (
        f"{arch}: {type(desc).__name__}, purpose {getattr(desc, 'purpose', '?')}, scale {getattr(desc, 'scale', '?')}, "
        f"{desc.input_channels} -> {desc.output_channels} channels"
    )
    if (
        not isinstance(desc, spandrel.ImageModelDescriptor)
        or desc.purpose not in ("Restoration", "SR")
        or desc.scale != 1
        or desc.input_channels != 3
        or desc.output_channels != 3
    ):
        raise SharpkdError(
            f"{source}: only single-image restoration models with scale 1 and 3 input/output channels can be teachers; found {found}"
        )
    req = desc.size_requirements
    return Teacher(
        desc.model,
        kind="checkpoint",
        arch=arch,
        config={"arch": arch, "tags": list(desc.tags)},
        multiple_of=req.multiple_of,
        min_size=req.minimum,
        square=req.square,
        call=getattr(desc, "_call_fn", None),
    )


def _checkpoint_path(params: dict, root: str | Path | None) -> Path:
    src = str(params.get("checkpoint") or "").strip()
    sha = str(params.get("sha256") or "").strip().lower()
    if not src:
        raise SharpkdError("teacher.kind is 'checkpoint' but teacher.checkpoint is empty; give a path or an http(s) URL")
    if src.startswith(("http://", "https://")):
        if not sha:
            raise SharpkdError(f"teacher.sha256 is required for the URL {src}")
        return Path(fetch(src, sha))
    path = _resolve(src, root)
    if not path.is_file():
        raise SharpkdError(f"teacher checkpoint {path} does not exist; fix teacher.checkpoint")
    if sha:
        got = sha256_file(path)
        if got != sha:
            raise DownloadError(f"{path} has sha256 {got}, but teacher.sha256 says {sha}; wrong or corrupted file")
    return path


def build_teacher(
    params: dict, *, root: str | Path | None = None, log: Callable[[str], None] | None = None
) -> Teacher:
    """Build the teacher described by ``params`` (the params.yaml ``teacher`` section).

    Relative paths are resolved against ``root`` (default: the working directory).  The
    Restormer kind is initialised with ``torch.manual_seed(params.adapt.seed)`` (default 0) in a
    forked RNG, so builds are reproducible and the caller's RNG is untouched.  ``log``, if
    given, receives a one-line description (kind, arch, parameter count, source).
    """
    kind = params.get("kind")
    if kind not in KINDS:
        raise SharpkdError(f"teacher.kind must be one of {list(KINDS)}, got {kind!r}")
    source = ""
    if kind == "restormer":
        seed = int((params.get("adapt") or {}).get("seed", 0))
        model = _build_restormer(params.get("restormer") or {}, seed)
        source = f"random init, seed {seed}"
    elif kind == "vdsr":
        path = _resolve(params.get("vdsr_path") or "", root)
        model = _build_vdsr(path)
        source = str(path)
    else:
        path = _checkpoint_path(params, root)
        model = _spandrel_teacher(load_state_dict_file(path), str(path))
        source = str(path)
    model.eval()
    if log is not None:
        d = describe(model)
        log(f"teacher: {kind} / {d['arch']}, {d['parameters']:,} parameters ({source})")
    return model


def describe(model: nn.Module) -> dict:
    """``{"arch", "kind", "parameters", "macs_per_1080p_frame"}`` of a teacher (:func:`sharpkd.nets.cost.model_cost`)."""
    return {"arch": getattr(model, "arch", type(model).__name__), "kind": getattr(model, "kind", None)} | model_cost(model)


# --------------------------------------------------------------------------------------------
# saving / loading adapted weights


def save_teacher(model: Teacher, path: str | Path, params: dict | None = None) -> None:
    """Write ``model.net``'s state dict to ``path`` as safetensors, atomically.

    Metadata: ``format``, ``kind``, ``arch``, ``config`` (JSON: what rebuilds the architecture)
    and ``params`` (JSON of the teacher params, for provenance).  For ``checkpoint`` teachers the
    state dict keeps the architecture's own key layout, so spandrel re-detects it on load.
    """
    if not isinstance(model, Teacher):
        raise SharpkdError(f"save_teacher needs a Teacher (from build_teacher), got {type(model).__name__}")
    sd = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.net.state_dict().items()}
    meta = {
        "format": TEACHER_FORMAT,
        "kind": model.kind,
        "arch": model.arch,
        "config": json.dumps(model.config, sort_keys=True),
        "params": json.dumps(params or {}, sort_keys=True, default=str),
    }
    write_safetensors(path, sd, meta)


def load_teacher(path: str | Path, *, device: str | torch.device = "cpu") -> Teacher:
    """Rebuild a teacher written by :func:`save_teacher` (eval mode, on ``device``)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise SharpkdError(f"teacher weights {path} do not exist; run the teacher stage first")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        sd = load_file(str(path))
    except Exception as e:  # noqa: BLE001
        raise SharpkdError(f"{path} is not a readable safetensors file: {e}") from None
    if meta.get("format") != TEACHER_FORMAT:
        raise SharpkdError(f"{path} is not a sharpkd teacher file (metadata format {meta.get('format')!r})")
    kind, config = meta.get("kind"), json.loads(meta.get("config", "{}"))
    if kind == "restormer":
        model = _build_restormer(config, 0)
        try:
            model.net.load_state_dict(sd, strict=True)
        except RuntimeError:
            raise SharpkdError(f"{path}: weights do not match the Restormer config {config}: "
                               f"{state_dict_mismatch(model.net.state_dict(), sd)}") from None
    elif kind == "vdsr":
        model = _vdsr_from_state_dict(sd, str(path))
    elif kind == "checkpoint":
        model = _spandrel_teacher(sd, str(path))
        if config.get("arch") and model.arch != config["arch"]:
            raise SharpkdError(f"{path}: metadata says {config['arch']}, spandrel detected {model.arch}")
    else:
        raise SharpkdError(f"{path}: unknown teacher kind {kind!r} in metadata")
    return model.to(device).eval()


# --------------------------------------------------------------------------------------------
# adaptation


def adapt(
    model: nn.Module,
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    steps: int,
    lr: float,
    patch: int,
    batch: int,
    seed: int,
    device: str | torch.device = "cpu",
    state_dir: str | Path | None = None,
    checkpoint_every: int = 50,
    grad_clip: float = 1.0,
    weight_decay: float = 1e-4,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Fine-tune ``model`` on (degraded, ground truth) uint8 HxWx3 pairs with :func:`sharpkd.training.loop.fit`.

    Loss ``mean |model(lq) - gt|`` (L1) on ``batch`` random ``patch`` x ``patch`` crops (random
    flips and 90-degree rotations), AdamW (``lr``, ``weight_decay``), gradient norm clipped to
    ``grad_clip``, cosine schedule from ``lr`` to ``0.01 * lr`` over ``steps``; seeded by ``seed``.
    With ``state_dir`` a resume state is kept there every ``checkpoint_every`` steps (named by a
    fingerprint of the settings, data and code; see :func:`sharpkd.training.loop.state_file`), so a killed
    adaptation continues where it stopped and ends with the same weights; the caller deletes it
    once its outputs are written.  ``on_step(step)`` is called after each step.  Returns the training record of the run (``train_loss``: mean
    L1 over the steps); ``steps == 0`` returns ``{}`` without touching the model.
    """
    if steps <= 0:
        return {}
    if not pairs:
        raise SharpkdError("adapt needs at least one (degraded, ground truth) pair")
    data = Pairs([lq for lq, _ in pairs], [gt for _, gt in pairs])
    if patch < 8:
        raise SharpkdError(f"teacher.adapt.patch must be >= 8, got {patch}")
    config = {"steps": int(steps), "lr": float(lr), "patch": int(patch), "batch": int(batch), "seed": int(seed),
              "weight_decay": float(weight_decay), "grad_clip": float(grad_clip)}
    start = (v.detach().cpu().float().numpy() for v in model.state_dict().values())  # the weights it starts from
    fp = fingerprint(config, [*data.degraded, *data.gt, *start])
    state = state_file(state_dir, "teacher", fp) if state_dir is not None else None

    def l1(out, gt, _teacher):
        loss = F.l1_loss(out, gt)
        return loss, {}

    _, best, _ = fit(model, data, l1, lr=lr, epochs=1, steps_per_epoch=int(steps), batch=int(batch), patch=int(patch),
                     seed=int(seed), weight_decay=weight_decay, grad_clip=grad_clip, lr_floor=0.01, device=device,
                     state_path=state, fingerprint=fp, checkpoint_every=checkpoint_every, desc="adapt teacher",
                     progress=progress, on_step=on_step)
    return best
