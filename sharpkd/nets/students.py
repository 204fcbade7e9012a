"""Student networks, their registry and safetensors I/O.

Every student maps an ``N x 3 x H x W`` float RGB tensor in [0, 1] to a tensor of the same
shape in [0, 1], for any ``H x W`` (odd sizes included: the input is replicate-padded to the
multiple the network needs and the output is cropped back).

Students
--------
``report``
    The internship report's student, unchanged: 3x3 convs (padding 1) 3->16, ReLU, 16->32, ReLU,
    MaxPool2d(2), 32->32, ReLU, Upsample(x2, nearest), 32->16, ReLU, 16->3, Sigmoid.
    19,395 parameters, ~25.7 GMAC per 1920x1080 frame.
``sharp``
    The default real-time student.  ``pixel_unshuffle`` by ``unshuffle`` (2: a 1080p frame
    becomes a 12-channel 960x540 tensor), a head conv to ``channels`` features, ``blocks``
    re-parameterizable 3x3 blocks, a tail conv back to ``3*unshuffle**2`` channels,
    ``pixel_shuffle`` and a global residual: ``y = clamp(x + f(x), 0, 1)``.  During training
    each conv is a multi-branch :class:`RepConv` (3x3 + 1x1 + identity, as RepVGG / ECBSR /
    SPAN); :meth:`SharpNet.reparameterize` folds each into one 3x3 conv for inference.
    Default ``channels=16, blocks=1, unshuffle=2``: 5,804 parameters in inference form
    (:func:`sharpkd.nets.cost.count_params`), 2.99 GMAC per 1080p frame (:func:`sharpkd.nets.cost.count_macs`).

    ``head="patch"`` replaces the 3x3 head and tail by their patch forms: the head is one
    ``s x s`` conv with stride ``s`` on the full-resolution frame (pixel_unshuffle followed by a
    1x1 conv, in one op) and the tail one ``s x s`` transposed conv with stride ``s`` (a 1x1 conv
    followed by pixel_shuffle, with one bias per colour).  No reshape of the frame runs at all,
    and the head and tail cost a fraction of the 3x3 pair on the ``3 s^2``-channel frame, which is
    what dominates the 3x3 form's time on a CPU; the 3x3 body blocks
    keep the receptive field.

    ``frames=2`` makes a temporal student: its input is ``N x 6 x H x W``, the current received
    frame and the previous one stacked on channels (current first); the head sees both, the
    residual is added to the current frame (:func:`sharpkd.evaluation.video_links.score_clips`
    feeds the previous received frame, the first frame of a clip seeing itself twice).  The
    temporal form has the 3x3 head, float only.

    ``int8={"first_bits": 7}`` is the int8 form (:mod:`sharpkd.nets.quant`, made by
    :func:`sharpkd.nets.int8.to_int8` and fine-tuned by ``train.int8``): folded, every convolution's
    input and weights rounded to the int8 grid, the calibrated input ranges kept in the
    ``act_max`` buffer of the weights file.  OpenVINO runs it as int8 convolutions where the CPU
    sums them exactly (:func:`sharpkd.inference.runtimes.int8_route`).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors import safe_open
from torch import nn

from sharpkd.tensors import _tracing, crop_to, pad_to_multiple, padded_size
from sharpkd.errors import SharpkdError, one_line
from sharpkd.files import write_safetensors

FORMAT = "sharpkd-student-v1"
_RESERVED_META = ("arch", "config", "format")


def _check_input(x: torch.Tensor, frames: int = 1) -> None:
    if x.ndim != 4 or x.shape[1] != 3 * frames:
        what = "RGB tensor" if frames == 1 else f"tensor of {frames} RGB frames, the current one first"
        raise SharpkdError(f"students expect an N x {3 * frames} x H x W {what}, got shape {tuple(x.shape)}")


# --------------------------------------------------------------------------- the report's student


class ReportNet(nn.Module):
    """The internship report's student (19,395 parameters), made size-agnostic.

    Its single MaxPool2d(2)/Upsample(x2) pair needs even sizes, so odd inputs are
    replicate-padded by one row/column (tiny ones to at least 4, see :func:`padded_size`) and
    the output is cropped back to the input size.
    """

    arch = "report"

    def __init__(self) -> None:
        super().__init__()
        self.config: dict[str, Any] = {}
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(32, 16, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 3, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x)
        h, w = x.shape[-2:]
        return crop_to(self.net(pad_to_multiple(x, 2)), h, w)

    def reparameterize(self) -> "ReportNet":
        """No-op (the report's network has no multi-branch blocks); returns self."""
        return self


# --------------------------------------------------------------------------- sharp student


class RepConv(nn.Module):
    """A 3x3 conv that trains as ``conv3x3(x) + conv1x1(x) [+ x]`` and infers as one 3x3 conv.

    Training form: ``y = W3 * x + b3 + W1 * x + b1 + x`` (identity only when
    ``in_ch == out_ch`` and ``identity=True``).  All three branches are linear, so
    :meth:`reparameterize` folds them exactly into ``W = W3 + pad(W1) + I`` and
    ``b = b3 + b1``: the 1x1 kernel and the identity become the centre tap of the 3x3 kernel.
    """

    def __init__(self, in_ch: int, out_ch: int, identity: bool = True, rep: bool = True) -> None:
        super().__init__()
        self.in_ch, self.out_ch = in_ch, out_ch
        if rep:
            self.conv3 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
            self.conv1 = nn.Conv2d(in_ch, out_ch, 1)
            self.identity = identity and in_ch == out_ch
            self.fused = None
        else:
            self.conv3 = self.conv1 = None
            self.identity = False
            self.fused = nn.Conv2d(in_ch, out_ch, 3, padding=1)

    @property
    def is_fused(self) -> bool:
        return self.fused is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.fused(x)
        y = self.conv3(x) + self.conv1(x)
        if self.identity:
            y = y + x
        return y

    def zero_init(self) -> None:
        """Make the block output exactly zero (used for the tail, so training starts at y = x)."""
        for conv in (self.conv3, self.conv1, self.fused):
            if conv is not None:
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)

    @torch.no_grad()
    def reparameterize(self) -> "RepConv":
        """Fold the branches into a single 3x3 conv, in place; returns self."""
        if self.fused is not None:
            return self
        w = self.conv3.weight.detach().clone()
        b = self.conv3.bias.detach().clone()
        w[:, :, 1, 1] += self.conv1.weight[:, :, 0, 0]
        b += self.conv1.bias
        if self.identity:
            idx = torch.arange(self.out_ch, device=w.device)
            w[idx, idx, 1, 1] += 1.0
        fused = nn.Conv2d(self.in_ch, self.out_ch, 3, padding=1).to(device=w.device, dtype=w.dtype)
        fused.weight.copy_(w)
        fused.bias.copy_(b)
        fused.weight.requires_grad_(self.conv3.weight.requires_grad)
        fused.bias.requires_grad_(self.conv3.bias.requires_grad)
        self.conv3 = self.conv1 = None
        self.identity = False
        self.fused = fused
        return self


#: ``SharpNet`` head and tail forms (see the module docstring).
HEADS = ("conv3x3", "patch")


class SharpNet(nn.Module):
    """Residual real-time student working at ``1/unshuffle`` resolution.

    ``z = pixel_unshuffle(pad(x), s)``;  ``f = tail(body(relu(head(z))))`` with
    ``body = blocks x [RepConv(C, C), ReLU]``; ``y = clamp(x + crop(pixel_shuffle(f, s)), 0, 1)``.
    The tail is zero-initialised, so an untrained model returns its input (the degraded frame).
    """

    arch = "sharp"

    def __init__(self, channels: int = 16, blocks: int = 1, unshuffle: int = 2, rep: bool = True,
                 head: str = "conv3x3", int8: dict | None = None, frames: int = 1) -> None:
        super().__init__()
        _check_int("channels", channels, 8, MAX_CHANNELS)
        if channels % 8:
            raise SharpkdError(f"sharp student: channels must be a positive multiple of 8, got {channels}")
        _check_int("blocks", blocks, 0, MAX_BLOCKS)
        if isinstance(unshuffle, bool) or unshuffle not in (1, 2, 4):
            raise SharpkdError(f"sharp student: unshuffle must be 1, 2 or 4, got {unshuffle}")
        if head not in HEADS:
            raise SharpkdError(f"sharp student: head must be one of {list(HEADS)}, got {head!r}")
        _check_int("frames", frames, 1, 2)
        if frames > 1 and (head != "conv3x3" or int8 is not None):
            raise SharpkdError("sharp student: frames 2 (temporal) has the conv3x3 head and no int8 form")
        self.config = {"channels": channels, "blocks": blocks, "unshuffle": unshuffle}
        if frames != 1:  # left out for single-frame students, so their files load unchanged
            self.config["frames"] = frames
        self.frames = frames
        if head != "conv3x3":  # the default is left out, so older student files load unchanged
            self.config["head"] = head
        if int8 is not None:  # the int8 form (sharpkd.nets.quant): built by int8.to_int8 or loaded from its file
            if not isinstance(int8, dict):
                raise SharpkdError(f"sharp student: int8 must be a mapping such as {{\"first_bits\": 7}}, got {int8!r}")
            unknown = sorted(set(int8) - {"first_bits"})
            if unknown:
                raise SharpkdError(f"sharp student: unknown int8 settings {unknown}")
            _check_int("int8.first_bits", int8.get("first_bits", 7), 2, 8)
            int8 = {"first_bits": int(int8.get("first_bits", 7))}
            self.config["int8"] = int8
        self.int8 = int8
        self.scale = unshuffle
        self.patch = head == "patch"
        io = 3 * unshuffle * unshuffle
        # built head, body, tail in this order: the order the random initialisation is drawn in
        if self.patch:
            self.head = nn.Conv2d(3, channels, unshuffle, stride=unshuffle)
        else:
            self.head = RepConv(io * frames, channels, identity=False, rep=rep)
        self.body = nn.ModuleList(RepConv(channels, channels, identity=True, rep=rep) for _ in range(blocks))
        if self.patch:
            self.tail = nn.ConvTranspose2d(channels, 3, unshuffle, stride=unshuffle)
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)
        else:
            self.tail = RepConv(channels, io, identity=False, rep=rep)
            self.tail.zero_init()
        if int8 is not None:  # the calibrated top of each convolution's input (sharpkd.nets.quant)
            self.register_buffer("act_max", torch.ones(blocks + 2))

    def layers(self) -> list[nn.Module]:
        """The convolutions of the folded form in order: head, body blocks, tail."""
        if any(isinstance(m, RepConv) and not m.is_fused for m in self.modules()):
            raise SharpkdError("sharp student: layers() needs the folded form (reparameterize() first)")
        head = self.head if self.patch else self.head.fused
        tail = self.tail if self.patch else self.tail.fused
        return [head, *(b.fused for b in self.body), tail]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.frames)
        if self.int8 is not None:
            return self._forward_int8(x)
        if self.patch:
            return self._forward_patch(x)
        s = self.scale
        n, c, height, width = x.shape
        c //= self.frames
        h, w = padded_size(height, s) // s, padded_size(width, s) // s
        xp = pad_to_multiple(x, s)
        if _tracing():  # torch.export / ONNX: standard ops (SpaceToDepth/DepthToSpace), NCHW
            return crop_to(F.pixel_shuffle(self.unshuffled(F.pixel_unshuffle(xp, s)), s), height, width)
        # pixel_unshuffle's own kernel, then NHWC (channels_last): oneDNN's CPU convs are faster on
        # NHWC at these channel counts (and GPUs prefer it too), and this copy is cheaper than one
        # 6-D reshape-copy into NHWC.
        z = F.pixel_unshuffle(xp, s).contiguous(memory_format=torch.channels_last)
        z = F.relu(self.head(z), inplace=True)
        for block in self.body:
            z = F.relu(block(z), inplace=True)
        r = self.tail(z)
        # pixel_shuffle fused into the residual add: a strided view of r, no extra copy
        r = r.permute(0, 2, 3, 1).reshape(n, h, w, c, s, s).permute(0, 3, 1, 4, 2, 5)
        y = (xp[:, :c].reshape(n, c, h, s, w, s) + r).clamp_(0.0, 1.0).reshape(n, c, h * s, w * s)
        return crop_to(y, height, width)

    def unshuffled(self, z: torch.Tensor) -> torch.Tensor:
        """The restored frame in the pixel-unshuffled layout: for ``z = pixel_unshuffle(x, s)``
        (``x`` padded to a multiple of ``s``), ``pixel_shuffle(unshuffled(z), s)`` is the padded
        ``forward(x)``, exactly: the residual add and the clamp are per element, so they commute
        with the shuffle.  The exported runtime graph (:class:`sharpkd.inference.runtimes.UInt8Graph`) does
        the (un)shuffle on the uint8 frame instead, so no float pass runs at full resolution."""
        if self.patch:
            raise SharpkdError("sharp student: head patch has no unshuffled layout")
        if self.int8 is not None:
            return (z + self._int8_layers(z)).clamp(0.0, 1.0)
        r = F.relu(self.head(z))
        for block in self.body:
            r = F.relu(block(r))
        io = 3 * self.scale * self.scale  # the current frame's channels (pixel_unshuffle keeps each frame's together)
        return (z[:, :io] + self.tail(r)).clamp(0.0, 1.0)

    def _forward_patch(self, x: torch.Tensor) -> torch.Tensor:
        """``y = clamp(x + tail(body(relu(head(x)))), 0, 1)`` with the strided patch head and tail."""
        height, width = x.shape[-2:]
        xp = pad_to_multiple(x, self.scale)
        if not _tracing():
            xp = xp.contiguous(memory_format=torch.channels_last)
        z = F.relu(self.head(xp))
        for block in self.body:
            z = F.relu(block(z))
        return crop_to((xp + self.tail(z)).clamp(0.0, 1.0), height, width)

    def _forward_int8(self, x: torch.Tensor) -> torch.Tensor:
        """The folded student with every convolution's input and weights on the int8 grid of
        :mod:`sharpkd.nets.quant` (first layer's weights on ``int8["first_bits"]`` bits), standard ops
        only (the same graph for PyTorch and the exported runtimes)."""
        height, width = x.shape[-2:]
        s = self.scale
        xp = pad_to_multiple(x, s)
        if self.patch:
            return crop_to((xp + self._int8_layers(xp)).clamp(0.0, 1.0), height, width)
        return crop_to(F.pixel_shuffle(self.unshuffled(F.pixel_unshuffle(xp, s)), s), height, width)

    def _int8_layers(self, z: torch.Tensor) -> torch.Tensor:
        """The residual of the int8 form: its convolutions on the int8 grid, in the head's layout."""
        from sharpkd.nets.quant import fake_quant_activation, fake_quant_weight, qdq_activation, qdq_weight

        layers = self.layers()
        exporting = torch.compiler.is_exporting()
        if exporting:
            # torch.export: the activation ranges as constants (reading the buffer would be a
            # data-dependent value) and quantize/dequantize ops (ONNX QuantizeLinear/DequantizeLinear)
            tops = getattr(self, "export_tops", None)
            if tops is None:
                raise SharpkdError("int8 student: set export_tops (sharpkd.inference.export does) before torch.export")
            act_q, weight_q = qdq_activation, qdq_weight
        else:
            tops = [float(v) for v in self.act_max]
            act_q, weight_q = fake_quant_activation, fake_quant_weight
        for i, layer in enumerate(layers):
            z = act_q(z, tops[i])
            bits = self.int8["first_bits"] if i == 0 else 8
            if isinstance(layer, nn.ConvTranspose2d):
                w = weight_q(layer.weight, bits, axis=1)
                z = F.conv_transpose2d(z, w, layer.bias, stride=layer.stride)
            else:
                w = weight_q(layer.weight, bits, axis=0)
                z = F.conv2d(z, w, layer.bias, stride=layer.stride, padding=layer.padding)
            if i < len(layers) - 1:
                z = F.relu(z)
        return z

    def reparameterize(self) -> "SharpNet":
        """Fold every multi-branch block into a single 3x3 conv, in place; returns self."""
        for m in self.modules():
            if isinstance(m, RepConv):
                m.reparameterize()
        return self


MAX_CHANNELS, MAX_BLOCKS = 512, 64
"""Bounds of a sharp student's config (checked before anything is allocated): far above any
real-time student, far below what would exhaust memory while building one."""


def _check_int(name: str, value, lo: int, hi: int) -> None:
    """``value`` must be an int (not a bool) in ``[lo, hi]``, else a :class:`SharpkdError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise SharpkdError(f"sharp student: {name} must be an integer from {lo} to {hi}, got {value!r}")


STUDENTS: dict[str, Callable[..., nn.Module]] = {
    "report": ReportNet,
    "sharp": SharpNet,
}
DEFAULT_STUDENT = "sharp"


def build_student(arch: str, **config) -> nn.Module:
    """Build the student ``arch`` from :data:`STUDENTS` with keyword ``config``."""
    try:
        cls = STUDENTS[arch]
    except KeyError:
        raise SharpkdError(f"unknown student arch {arch!r}; choose from {sorted(STUDENTS)}") from None
    try:
        return cls(**config)
    except TypeError as exc:
        raise SharpkdError(f"bad config for student {arch!r}: {config} ({exc})") from None


# --------------------------------------------------------------------------- I/O


def save_student(model: nn.Module, path: str | os.PathLike, meta: dict | None = None) -> None:
    """Save ``model`` in inference form as safetensors, atomically.

    A re-parameterized *copy* is saved (the caller's training model is left untouched).
    Metadata: ``arch``, ``config`` (JSON), ``format = "sharpkd-student-v1"`` plus ``str(v)``
    of every ``meta`` entry (which may not use those three reserved keys).
    """
    arch = getattr(model, "arch", None)
    if arch not in STUDENTS:
        raise SharpkdError(f"cannot save {type(model).__name__}: not a registered student ({sorted(STUDENTS)})")
    meta = dict(meta or {})
    clash = [k for k in meta if k in _RESERVED_META]
    if clash:
        raise ValueError(f"save_student: meta keys {clash} are reserved")
    inference = copy.deepcopy(model)
    if hasattr(inference, "reparameterize"):
        inference.reparameterize()
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in inference.state_dict().items()}
    metadata = {str(k): str(v) for k, v in meta.items()}
    metadata.update(arch=arch, config=json.dumps(model.config, sort_keys=True), format=FORMAT)
    write_safetensors(path, tensors, metadata)


def load_student(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, str]]:
    """Load a student saved by :func:`save_student`.

    Returns ``(model, meta)``: the model in eval, re-parameterized (inference) form on ``device``
    and the file's metadata without ``format`` (``arch``, ``config`` JSON and the saved meta).
    """
    path = Path(path)
    if not path.is_file():
        raise SharpkdError(f"student file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            metadata = dict(f.metadata() or {})
            if metadata.get("format") != FORMAT:
                raise SharpkdError(
                    f"{path} is not a sharpkd student (metadata format is {metadata.get('format')!r}, "
                    f"expected {FORMAT!r}); save students with sharpkd.nets.students.save_student"
                )
            state = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as exc:
        raise SharpkdError(f"{path} is not a readable safetensors file: {exc}") from None
    try:
        config = json.loads(metadata.get("config", "{}"))
    except json.JSONDecodeError:
        raise SharpkdError(f"{path}: corrupt student config metadata {metadata.get('config')!r}") from None
    if not isinstance(config, dict):
        raise SharpkdError(f"{path}: student config metadata must be a JSON object, got {one_line(config)[:80]!r}")
    try:
        model = build_student(metadata.get("arch", "?"), **config)
    except SharpkdError as exc:
        raise SharpkdError(f"{path}: {exc}") from None
    act_max = state.get("act_max")
    if act_max is not None and not bool(torch.isfinite(act_max).all() and (act_max > 0).all()):
        raise SharpkdError(f"{path}: int8 activation ranges (act_max) must be finite and positive, got "
                           f"{[round(float(v), 6) for v in act_max.flatten()[:8]]}")
    if hasattr(model, "reparameterize"):
        model.reparameterize()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        from sharpkd.errors import state_dict_mismatch

        raise SharpkdError(f"{path}: weights do not match student {metadata['arch']!r} {config}: "
                           f"{state_dict_mismatch(model.state_dict(), state)}; use a student saved by "
                           "this sharpkd version (sharpkd.nets.students.save_student)") from None
    model.to(device).eval()
    metadata.pop("format")
    return model, metadata
