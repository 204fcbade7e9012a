"""Frozen VGG feature extractors for the feature-distillation losses.

Two backbones (explicit registry :data:`BACKBONES`):

``vgg19_relu3_1``
    The normalised Caffe-ImageNet VGG19 of the style-transfer literature, conv1_1 to relu3_1,
    from a local safetensors file (``../shared/weights/vgg19_relu3_1.safetensors`` by default;
    see shared/README.md).  Its first 1x1 conv maps RGB in [0, 1] to BGR*255 minus the ImageNet
    mean, so no extra normalisation is applied.  Layers: relu1_1, relu1_2, relu2_1, relu2_2,
    relu3_1.
``vgg16``
    torchvision's ImageNet VGG16 (``vgg16-397923af.pth``), as the internship report used,
    downloaded once through :func:`sharpkd.fetch.fetch` (sha256-verified, cached in
    ``$TORCH_HOME/hub/checkpoints``) or read from a local ``path``.  Input is normalised with
    the ImageNet mean/std.  Layers: relu1_2, relu2_2, relu3_3, relu4_3.

Both stop at the deepest requested layer, never need gradients for their weights and stay in
eval mode.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from sharpkd.errors import SharpkdError
from sharpkd.fetch import fetch, sha256_file

DEFAULT_VGG19_PATH = "../shared/weights/vgg19_relu3_1.safetensors"
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
# Full sha256 of torchvision's vgg16-397923af.pth (553,433,881 bytes); its file name carries the
# first 8 hex digits.  Published identically by many independent projects' download checks.
VGG16_SHA256 = "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0"

# layer name -> index (in the backbone's nn.Sequential) of the ReLU whose output is the feature
VGG19_RELU3_1_LAYERS = {"relu1_1": 3, "relu1_2": 6, "relu2_1": 10, "relu2_2": 13, "relu3_1": 17}
VGG16_LAYERS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}
BACKBONES = {"vgg19_relu3_1": VGG19_RELU3_1_LAYERS, "vgg16": VGG16_LAYERS}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_sha256(path: Path, sha256: str | None) -> None:
    if sha256 and sha256_file(path) != sha256.lower():
        raise SharpkdError(f"{path}: sha256 does not match the expected {sha256}; the file is corrupt or a different one")


def _vgg19_relu3_1_sequential() -> nn.Sequential:
    """The layout of shared/README.md, indices 0..17."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3), nn.ReLU()]

    return nn.Sequential(
        nn.Conv2d(3, 3, 1),
        *block(3, 64), *block(64, 64),
        nn.MaxPool2d(2, 2, ceil_mode=True),
        *block(64, 128), *block(128, 128),
        nn.MaxPool2d(2, 2, ceil_mode=True),
        *block(128, 256),
    )


def _load_vgg19_relu3_1(path: str | os.PathLike | None, sha256: str | None) -> nn.Sequential:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path or DEFAULT_VGG19_PATH)
    if not path.is_file():
        raise SharpkdError(
            f"VGG19 weights not found at {path}. They ship in the shared folder beside the checkout "
            f"({DEFAULT_VGG19_PATH} from the project root; see shared/README.md, converted from "
            "pietrocarbo/deep-transfer); pass the right location as the vgg 'path' param, "
            "or use backbone 'vgg16' (downloaded from download.pytorch.org)."
        )
    _check_sha256(path, sha256)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise SharpkdError(f"{path} is not a readable safetensors file: {exc}") from None
    net = _vgg19_relu3_1_sequential()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise SharpkdError(f"{path} does not hold the vgg19_relu3_1 layout of shared/README.md: {exc}") from None
    return net


def _load_vgg16(
    path: str | os.PathLike | None,
    sha256: str | None,
    url: str | None,
    cache_dir: str | os.PathLike | None,
    progress: bool,
) -> nn.Sequential:
    from torchvision.models.vgg import cfgs, make_layers

    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SharpkdError(f"VGG16 weights not found at {path}; leave the vgg 'path' param empty to download {VGG16_URL}")
        _check_sha256(path, sha256)
    else:
        url = url or VGG16_URL
        sha = sha256 or (VGG16_SHA256 if url == VGG16_URL else None)
        if not sha:
            raise SharpkdError(f"a vgg 'sha256' is required to download VGG16 weights from {url}")
        path = fetch(url, sha, filename=None, cache_dir=cache_dir, progress=progress)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling/format failure is a bad file
        raise SharpkdError(f"{path} is not a loadable torchvision VGG16 checkpoint: {exc}") from None
    if not isinstance(state, dict):
        raise SharpkdError(f"{path} does not hold a state dict")
    feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    # torchvision.models.vgg16().features, built without its 120M-parameter classifier
    net = make_layers(cfgs["D"], batch_norm=False)
    try:
        net.load_state_dict(feats, strict=True)
    except RuntimeError as exc:
        raise SharpkdError(f"{path} does not hold torchvision VGG16 'features.*' weights: {exc}") from None
    return net


class VGGFeatures(nn.Module):
    """Frozen VGG: ``forward(x)`` maps RGB in [0, 1] to ``{layer name: feature map}``.

    ``layers`` (default: all of the backbone's) fixes what is computed; the network is cut after
    the deepest of them.  ``forward(x, layers=subset)`` returns a subset and stops even earlier.
    Weights have ``requires_grad=False`` and the module stays in eval mode (``train()`` is a
    no-op); gradients still flow to ``x``.
    """

    def __init__(
        self,
        backbone: str = "vgg19_relu3_1",
        layers: list[str] | tuple[str, ...] | None = None,
        path: str | os.PathLike | None = None,
        sha256: str | None = None,
        url: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise SharpkdError(f"unknown VGG backbone {backbone!r}; choose from {sorted(BACKBONES)}")
        table = BACKBONES[backbone]
        layers = list(layers) if layers else list(table)
        bad = [name for name in layers if name not in table]
        if bad:
            raise SharpkdError(f"VGG backbone {backbone!r} has no layer(s) {bad}; available: {list(table)}")
        self.backbone = backbone
        self.layers = sorted(set(layers), key=table.__getitem__)  # shallow to deep
        self._index = {name: table[name] for name in self.layers}
        if backbone == "vgg19_relu3_1":
            net = _load_vgg19_relu3_1(path, sha256)
            self.register_buffer("mean", None)
            self.register_buffer("std", None)
        else:
            net = _load_vgg16(path, sha256, url, cache_dir, progress)
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        deepest = max(self._index.values())
        self.net = nn.Sequential(*list(net.children())[: deepest + 1])
        for m in self.net:
            if isinstance(m, nn.ReLU):
                m.inplace = False  # a captured feature must not be overwritten later
        self.net.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "VGGFeatures":
        """Always stays in eval mode (frozen feature extractor)."""
        return super().train(False)

    @property
    def deepest(self) -> str:
        return self.layers[-1]

    def forward(self, x: torch.Tensor, layers: list[str] | tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        wanted = self.layers if layers is None else list(layers)
        missing = [name for name in wanted if name not in self._index]
        if missing:
            raise SharpkdError(f"VGG features {missing} were not configured; configured: {self.layers}")
        stops = {self._index[name]: name for name in wanted}
        last = max(stops)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        out: dict[str, torch.Tensor] = {}
        for i, module in enumerate(self.net):
            x = module(x)
            if i in stops:
                out[stops[i]] = x
                if i == last:
                    break
        return out
