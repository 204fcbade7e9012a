"""The teacher: build, load, adapt (fine-tune) and run a heavy restoration network.

Every teacher is a :class:`Teacher` module that maps RGB in [0, 1] (Nx3xHxW float) to RGB in
[0, 1] of the same size.  Three kinds (params.yaml section ``teacher``, key ``kind``):

* ``restormer``: the Restormer architecture (Zamir et al. 2022, from ``spandrel_extra_arches``)
  built from a (small) config with seeded random init;
* ``vdsr``: VDSR (Kim et al. 2016) on the BT.601 Y channel, from a safetensors state dict
  (``../shared/weights/vdsr_y.safetensors``);
* ``checkpoint``: any spandrel-loadable single-image restoration checkpoint (local path or URL
  with sha256), read without unpickling code (``torch.load(weights_only=True)`` / safetensors).

:func:`adapt` fine-tunes a teacher on (degraded, ground truth) pairs, resumably; :func:`infer`
runs it on uint8 images through :func:`sharpkd.tiling.tiled_apply`.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .download import fetch, sha256_file
from .errors import DownloadError, SharpkdError, state_dict_mismatch
from .fsutil import atomic_path
from .tiling import tiled_apply

__all__ = [
    "KINDS",
    "Teacher",
    "VDSRRGB",
    "build_teacher",
    "load_state_dict_file",
    "save_teacher",
    "load_teacher",
    "adapt",
    "infer",
    "describe",
]

KINDS = ("restormer", "vdsr", "checkpoint")
TEACHER_FORMAT = "sharpkd-teacher/1"
ADAPT_FORMAT = "sharpkd-adapt/1"

_RESTORMER_KEYS = {"dim", "num_blocks", "num_refinement_blocks", "heads", "ffn_expansion_factor", "bias", "LayerNorm_type"}
_RESTORMER_MULTIPLE = 8  # three 2x down-samplings (pixel-unshuffle)


# --------------------------------------------------------------------------------------------
# modules


def _pad_to(x: torch.Tensor, hp: int, wp: int) -> torch.Tensor:
    """Pad NxCxHxW ``x`` at bottom/right to ``hp`` x ``wp``: reflect as far as allowed, then replicate."""
    h, w = x.shape[-2:]
    ph, pw = hp - h, wp - w
    if ph == 0 and pw == 0:
        return x
    rh, rw = min(ph, h - 1), min(pw, w - 1)
    if rh or rw:
        x = F.pad(x, (0, rw, 0, rh), mode="reflect")
    if ph - rh or pw - rw:
        x = F.pad(x, (0, pw - rw, 0, ph - rh), mode="replicate")
    return x


class Teacher(nn.Module):
    """An RGB [0,1] -> RGB [0,1] restoration network with size handling.

    ``net`` is the architecture itself (its state dict is what :func:`save_teacher` writes).
    The input is padded (reflect, bottom/right) to satisfy ``multiple_of`` / ``min_size`` /
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
        xp = _pad_to(x, hp, wp)
        y = self._call(self.net, xp) if self._call is not None else self.net(xp)
        y = y[..., :h, :w]
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
    except RuntimeError as e:
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
        log(f"teacher: {kind} / {d['arch']}, {d['params']:,} parameters ({source})")
    return model


def describe(model: nn.Module) -> dict:
    """``{"arch": name, "params": number of parameters, "kind": teacher kind}`` of a model."""
    return {
        "arch": getattr(model, "arch", type(model).__name__),
        "kind": getattr(model, "kind", None),
        "params": int(sum(p.numel() for p in model.parameters())),
    }


# --------------------------------------------------------------------------------------------
# saving / loading adapted weights


def save_teacher(model: Teacher, path: str | Path, params: dict | None = None) -> None:
    """Write ``model.net``'s state dict to ``path`` as safetensors, atomically.

    Metadata: ``format``, ``kind``, ``arch``, ``config`` (JSON: what rebuilds the architecture)
    and ``params`` (JSON of the teacher params, for provenance).  For ``checkpoint`` teachers the
    state dict keeps the architecture's own key layout, so spandrel re-detects it on load.
    """
    from safetensors.torch import save_file

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
    with atomic_path(path) as tmp:
        save_file(sd, str(tmp), metadata=meta)


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
        except RuntimeError as e:
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


def _check_pairs(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
    if not pairs:
        raise SharpkdError("adapt needs at least one (degraded, ground truth) pair")
    for i, (lq, gt) in enumerate(pairs):
        for name, a in (("degraded", lq), ("ground truth", gt)):
            if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
                raise SharpkdError(f"pair {i}: {name} must be an HxWx3 uint8 array, got {getattr(a, 'dtype', type(a))} {getattr(a, 'shape', '')}")
        if lq.shape != gt.shape:
            raise SharpkdError(f"pair {i}: degraded {lq.shape} and ground truth {gt.shape} differ in size")


def _fingerprint(pairs) -> str:
    """Cheap identity of a training set: shapes plus a strided sample of every image's pixels."""
    h = hashlib.blake2b(digest_size=16)
    for lq, gt in pairs:
        for a in (lq, gt):
            h.update(repr(a.shape).encode())
            h.update(np.ascontiguousarray(a[::7, ::5]).tobytes())
    return h.hexdigest()


def _sample_batch(pairs, rng: np.random.Generator, batch: int, patch: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``batch`` aligned random crops (+ random h/v flips) as Bx3xhxw float32 arrays in [0,1].

    The crop size is ``patch``, reduced to the smallest height/width among the drawn images when
    one of them is smaller (so a batch always stacks).
    """
    idx = rng.integers(0, len(pairs), size=batch)
    ph = min([patch] + [pairs[i][0].shape[0] for i in idx])
    pw = min([patch] + [pairs[i][0].shape[1] for i in idx])
    lqs, gts = [], []
    for i in idx:
        lq, gt = pairs[i]
        y = int(rng.integers(0, lq.shape[0] - ph + 1))
        x = int(rng.integers(0, lq.shape[1] - pw + 1))
        a, b = lq[y : y + ph, x : x + pw], gt[y : y + ph, x : x + pw]
        if rng.random() < 0.5:
            a, b = a[:, ::-1], b[:, ::-1]
        if rng.random() < 0.5:
            a, b = a[::-1], b[::-1]
        lqs.append(a)
        gts.append(b)
    to = lambda xs: np.ascontiguousarray(np.stack(xs).transpose(0, 3, 1, 2), dtype=np.float32) / 255.0  # noqa: E731
    return to(lqs), to(gts)


def _cosine(steps: int, floor: float = 0.01) -> Callable[[int], float]:
    """LR factor ``floor + (1 - floor) * (1 + cos(pi * t / steps)) / 2`` (closed form: exact on resume)."""
    return lambda t: floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(t, steps) / steps))


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
    state_path: str | Path | None = None,
    log: Callable[[dict], None] | None = None,
    log_every: int = 20,
    checkpoint_every: int = 50,
    grad_clip: float = 1.0,
    weight_decay: float = 1e-4,
    progress: bool = True,
) -> list[dict]:
    """Fine-tune ``model`` on (degraded, ground truth) uint8 HxWx3 pairs; return the loss history.

    Each step draws ``batch`` random ``patch`` x ``patch`` crops with random flips, minimises the
    L1 loss ``mean |model(lq) - gt|``, clips the gradient norm to ``grad_clip`` and steps AdamW
    (``lr``, betas 0.9/0.999, ``weight_decay``) with a cosine schedule from ``lr`` to
    ``0.01 * lr`` over ``steps``.  Randomness of step ``s`` comes from generators seeded with
    ``(seed, s)`` (numpy for crops, torch for anything stochastic in the model, in a forked RNG),
    so the random state at any step is a function of (seed, step) and needs no saving.

    With ``state_path``, every ``checkpoint_every`` steps (and at the end) model, optimizer,
    scheduler, step, history and the running log window are written there (atomic
    ``torch.save`` of tensors and plain containers, readable with ``weights_only=True``).
    Calling again with the same arguments resumes from that step and ends with the same weights
    as an uninterrupted run; a state written for other arguments or data is ignored (warning).

    History: one record ``{"step", "loss" (mean over the window), "lr"}`` every ``log_every``
    steps and at the last step; ``log(record)`` is called for each.  ``steps == 0`` returns
    ``[]`` without touching the model.  On CUDA: bf16 autocast and channels_last.
    """
    if steps <= 0:
        return []
    _check_pairs(pairs)
    if patch < 8 or batch < 1 or lr <= 0 or log_every < 1 or checkpoint_every < 1:
        raise SharpkdError(
            f"teacher.adapt needs patch >= 8, batch >= 1, lr > 0, log_every >= 1, checkpoint_every >= 1; "
            f"got patch={patch} batch={batch} lr={lr} log_every={log_every} checkpoint_every={checkpoint_every}"
        )
    device = torch.device(device)
    cuda = device.type == "cuda"
    model.to(device)
    if cuda:
        model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine(steps))
    config = {
        "steps": int(steps), "lr": float(lr), "patch": int(patch), "batch": int(batch), "seed": int(seed),
        "weight_decay": float(weight_decay), "grad_clip": float(grad_clip), "data": _fingerprint(pairs),
        "n_params": int(sum(p.numel() for p in params)),
    }
    start, history, window = 0, [], [0.0, 0]
    state_path = Path(state_path) if state_path is not None else None
    if state_path is not None and state_path.is_file():
        try:
            st = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise SharpkdError(f"adaptation state {state_path} is unreadable ({e}); delete it to restart") from None
        if st.get("format") == ADAPT_FORMAT and st.get("config") == config:
            model.load_state_dict(st["model"])
            opt.load_state_dict(st["optimizer"])
            sched.load_state_dict(st["scheduler"])
            start, history, window = int(st["step"]), list(st["history"]), list(st["window"])
        else:
            warnings.warn(f"{state_path} was written for other settings or data; starting adaptation afresh")

    def save_state(step: int) -> None:
        if state_path is None:
            return
        st = {
            "format": ADAPT_FORMAT, "config": config, "step": step,
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "history": history, "window": window,
        }
        with atomic_path(state_path) as tmp:
            torch.save(st, tmp)

    model.train()
    bar = tqdm(total=steps, initial=start, desc="adapt teacher", unit="step", disable=not progress)
    try:
        rng_devices = [device.index if device.index is not None else torch.cuda.current_device()] if cuda else []
        with torch.random.fork_rng(devices=rng_devices):
            for step in range(start + 1, steps + 1):
                rng = np.random.default_rng([seed, step])
                torch.manual_seed(int(rng.integers(0, 2**62)))
                lq, gt = _sample_batch(pairs, rng, batch, patch)
                lq_t = torch.from_numpy(lq).to(device)
                gt_t = torch.from_numpy(gt).to(device)
                if cuda:
                    lq_t = lq_t.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda):
                    out = model(lq_t)
                loss = F.l1_loss(out.float(), gt_t)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, grad_clip)
                opt.step()
                sched.step()
                value = float(loss.detach())
                window = [window[0] + value, window[1] + 1]
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}")
                record = None
                if step % log_every == 0 or step == steps:
                    record = {"step": step, "loss": window[0] / window[1], "lr": float(opt.param_groups[0]["lr"])}
                    history.append(record)
                    window = [0.0, 0]
                if step % checkpoint_every == 0 or step == steps:
                    save_state(step)
                if record is not None and log is not None:
                    log(dict(record))
    finally:
        bar.close()
        model.eval()
    return history


# --------------------------------------------------------------------------------------------
# inference


def _to_tensor(img: np.ndarray, i: int) -> torch.Tensor:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise SharpkdError(f"image {i}: expected an HxWx3 uint8 array, got {getattr(img, 'dtype', type(img))} {getattr(img, 'shape', '')}")
    arr = img if img.flags.writeable and img.flags.c_contiguous else np.array(img, order="C", copy=True)
    return torch.from_numpy(arr).permute(2, 0, 1)[None].float().div_(255.0)


def infer(
    model: nn.Module,
    images: Iterable[np.ndarray],
    *,
    tile: int = 512,
    overlap: int = 32,
    device: str | torch.device = "cpu",
    batch: int = 1,
    progress: bool = True,
    desc: str = "teacher",
) -> list[np.ndarray]:
    """Run ``model`` on uint8 HxWx3 RGB images; return uint8 HxWx3 images (rounded, clipped).

    Images go through :func:`sharpkd.tiling.tiled_apply` (``tile``/``overlap``, ``batch`` tiles at
    a time, padded to the model's ``multiple_of``) under ``torch.inference_mode``, channels_last;
    on CUDA with bf16 autocast.  On CPU the result is deterministic.
    """
    images = list(images)
    device = torch.device(device)
    cuda = device.type == "cuda"
    model.eval().to(device)
    model.to(memory_format=torch.channels_last)  # faster on CUDA and on CPU (oneDNN): VDSR 1.3x on 2 cores
    multiple_of = max(1, int(getattr(model, "multiple_of", 1)))

    def fn(t: torch.Tensor) -> torch.Tensor:
        t = t.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda):
            return model(t).float()

    outs = []
    with torch.inference_mode():
        for i, img in enumerate(tqdm(images, desc=desc, unit="img", disable=not progress or len(images) < 2)):
            x = _to_tensor(img, i)
            y = tiled_apply(fn, x, tile, overlap, multiple_of, batch, device=device, progress=progress)
            outs.append(y[0].clamp_(0, 1).mul_(255.0).round_().to(torch.uint8).permute(1, 2, 0).contiguous().numpy())
    return outs
