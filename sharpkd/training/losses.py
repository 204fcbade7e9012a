"""The distillation loss: a weighted sum of documented terms (torchdistill style).

Notation: ``S`` student output, ``G`` ground truth, ``T`` teacher output (all ``N x 3 x H x W``
in [0, 1]), ``phi_l`` the frozen VGG feature map at layer ``l`` (:mod:`sharpkd.nets.vgg`),
``mean`` the average over every element of a tensor.

===============  ===========================================================================
term             formula
===============  ===========================================================================
``l1_gt``        ``mean|S - G|``
``ssim``         ``1 - SSIM(S, G)``: pytorch_msssim.ssim, data_range 1, 11x11 Gaussian window
                 with sigma 1.5, averaged over the batch and channels.  When the image is
                 smaller than 11 pixels in height or width the window shrinks to the largest
                 odd size that fits, ``k = min(H, W)`` rounded down to odd, with
                 ``sigma = 1.5 * k / 11`` (no padding, no silent skipping of the smoothing;
                 a 1-pixel-high/wide image uses a 1x1 window, i.e. pointwise SSIM).
``vgg_feature``  ``sum_l mean|phi_l(S) - phi_l(T)|`` over the configured layers (student vs
                 teacher, as the internship report does)
``deep_feature`` ``mean (phi_L(S) - phi_L(T))^2`` on the deepest configured layer ``L``
``l1_teacher``   ``mean|S - T|``
``l2_gt``        ``mean (S - G)^2``
``l2_teacher``   ``mean (S - T)^2``
``l2_teacher_    ``mean (S(D_z) - T(D_z))^2`` on *down-zoomed* inputs, the teacher run online:
zoom``           ``D_z = degrade(shrink_z(G))`` (:class:`ZoomDistillation`).  A DUKD-style
                 "data upcycling" term: the teacher labels new in-domain inputs made from the
                 batch, a wider field of view at a smaller scale.  Or from labels computed
                 once (:func:`label_zoomed`, :class:`PrecomputedZoom`): the same term over a
                 fixed pool of zoomed-out training crops, at the cost of one teacher pass
===============  ===========================================================================

The two L2 terms are not in the report.  For a residual student that starts as the identity,
L1's gradient is only the sign of the error, which on near-flat degraded pixels points in
random directions: such a student trained with L1 alone barely leaves the
identity, while L2 (whose gradient is proportional to the error) learns at once.

``total = sum_term weight_term * term``.  A term whose weight is 0 is neither computed nor
reported; if both VGG terms are 0 no VGG is built or loaded (:func:`needs_vgg`).  Teacher
features ``phi(T)`` are computed without gradient; gradients flow only into ``S``.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from pytorch_msssim import ssim as _msssim_ssim
from torch import nn

from sharpkd.errors import SharpkdError
from sharpkd.nets.vgg import VGGFeatures

TERMS = ("l1_gt", "ssim", "vgg_feature", "deep_feature", "l1_teacher", "l2_gt", "l2_teacher", "l2_teacher_zoom")
VGG_TERMS = frozenset({"vgg_feature", "deep_feature"})
TEACHER_TERMS = frozenset({"vgg_feature", "deep_feature", "l1_teacher", "l2_teacher"})
#: Terms that run the teacher model during training (computed by :class:`ZoomDistillation`, not
#: :class:`DistillLoss`), so the training stage loads the teacher's weights.
ONLINE_TEACHER_TERMS = frozenset({"l2_teacher_zoom"})
VGG_PARAM_KEYS = ("backbone", "path", "layers", "deep_layer", "sha256", "url", "cache_dir")

SSIM_WIN = 11
SSIM_SIGMA = 1.5


def check_weights(weights: dict) -> dict[str, float]:
    """Validate ``{term: weight}`` (known terms, finite weights >= 0); return the non-zero ones."""
    if not isinstance(weights, dict):
        raise SharpkdError(f"loss weights must be a mapping term -> weight, got {weights!r}")
    unknown = [k for k in weights if k not in TERMS]
    if unknown:
        raise SharpkdError(f"unknown loss term(s) {unknown}; choose from {list(TERMS)}")
    active: dict[str, float] = {}
    for term, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not float(w) >= 0 or float(w) == float("inf"):
            raise SharpkdError(f"loss weight {term}={w!r} must be a finite number >= 0")
        if float(w) != 0.0:
            active[term] = float(w)
    if not active:
        raise SharpkdError(f"every loss weight is 0 ({weights}); give at least one term a positive weight")
    return active


def needs_vgg(weights: dict) -> bool:
    """True if a VGG term (``vgg_feature`` or ``deep_feature``) has a non-zero weight."""
    return any(float(weights.get(t, 0) or 0) != 0.0 for t in VGG_TERMS)


def needs_teacher(weights: dict) -> bool:
    """True if a teacher term (``vgg_feature``, ``deep_feature``, ``l1_teacher``) has a non-zero weight."""
    return any(float(weights.get(t, 0) or 0) != 0.0 for t in TEACHER_TERMS)


def needs_teacher_model(weights: dict) -> bool:
    """True if a term that runs the teacher during training (``l2_teacher_zoom``) has a non-zero weight."""
    return any(float(weights.get(t, 0) or 0) != 0.0 for t in ONLINE_TEACHER_TERMS)


def ssim_loss(s: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``1 - SSIM(S, G)`` (data_range 1, 11x11 Gaussian window, sigma 1.5; smaller window for tiny images)."""
    h, w = s.shape[-2:]
    k = min(SSIM_WIN, h, w)
    if k < SSIM_WIN:
        k -= 1 - k % 2  # largest odd size <= min(H, W)
        if k == 1 and (h == 1 or w == 1):
            # pytorch_msssim squeezes singleton spatial dims; with a 1x1 window SSIM is pointwise,
            # so doubling the image along that dim leaves the mean SSIM exactly unchanged.
            reps = (1, 1, 2 if h == 1 else 1, 2 if w == 1 else 1)
            s, g = s.repeat(reps), g.repeat(reps)
        value = _msssim_ssim(s, g, data_range=1.0, size_average=True, win_size=k, win_sigma=SSIM_SIGMA * k / SSIM_WIN)
    else:
        value = _msssim_ssim(s, g, data_range=1.0, size_average=True, win_size=SSIM_WIN, win_sigma=SSIM_SIGMA)
    return 1.0 - value


class DistillLoss(nn.Module):
    """Weighted distillation loss; ``forward(S, G, T=None) -> (total, {term: value})``.

    ``weights`` maps term names (:data:`TERMS`) to weights; 0 removes a term.  ``vgg`` is
    required iff a VGG term is active.  ``vgg_layers`` (default: all of ``vgg.layers``) are the
    layers summed by ``vgg_feature``; ``deep_layer`` (default: the deepest configured layer) is
    the one of ``deep_feature``.  The returned term values are detached and unweighted (for
    logging); ``total`` carries the gradient.
    """

    def __init__(
        self,
        weights: dict,
        vgg: VGGFeatures | None = None,
        vgg_layers: list[str] | tuple[str, ...] | None = None,
        deep_layer: str | None = None,
    ) -> None:
        super().__init__()
        self.weights = {k: v for k, v in check_weights(weights).items() if k not in ONLINE_TEACHER_TERMS}
        self.vgg = None
        self.vgg_layers: list[str] = []
        self.deep_layer: str | None = None
        if needs_vgg(self.weights):
            if vgg is None:
                active = sorted(VGG_TERMS & set(self.weights))
                raise SharpkdError(f"loss term(s) {active} need a VGG feature extractor (vgg=None given)")
            self.vgg = vgg
            self.vgg_layers = list(vgg_layers) if vgg_layers else list(vgg.layers)
            bad = [name for name in [*self.vgg_layers, deep_layer] if name and name not in vgg.layers]
            if bad:
                raise SharpkdError(f"VGG layer(s) {bad} are not computed by the VGG ({vgg.layers})")
            self.deep_layer = deep_layer or max(self.vgg_layers, key=vgg.layers.index)

    def extra_repr(self) -> str:
        return f"weights={self.weights}, vgg_layers={self.vgg_layers}, deep_layer={self.deep_layer}"

    def forward(
        self, student: torch.Tensor, gt: torch.Tensor, teacher: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        w = self.weights
        if teacher is None and TEACHER_TERMS & set(w):
            raise SharpkdError(
                f"loss term(s) {sorted(TEACHER_TERMS & set(w))} compare with the teacher output, but teacher=None"
            )
        for name, t in (("gt", gt), ("teacher", teacher)):
            if t is not None and t.shape != student.shape:
                raise SharpkdError(f"loss: {name} shape {tuple(t.shape)} differs from student {tuple(student.shape)}")
        terms: dict[str, torch.Tensor] = {}
        if "l1_gt" in w:
            terms["l1_gt"] = (student - gt).abs().mean()
        if "ssim" in w:
            terms["ssim"] = ssim_loss(student, gt)
        if "l1_teacher" in w:
            terms["l1_teacher"] = (student - teacher.detach()).abs().mean()
        if "l2_gt" in w:
            terms["l2_gt"] = (student - gt).pow(2).mean()
        if "l2_teacher" in w:
            terms["l2_teacher"] = (student - teacher.detach()).pow(2).mean()
        if self.vgg is not None:
            layers = []
            if "vgg_feature" in w:
                layers += self.vgg_layers
            if "deep_feature" in w and self.deep_layer not in layers:
                layers.append(self.deep_layer)
            fs = self.vgg(student, layers)
            with torch.no_grad():
                ft = self.vgg(teacher.detach(), layers)
            if "vgg_feature" in w:
                terms["vgg_feature"] = sum((fs[l] - ft[l]).abs().mean() for l in self.vgg_layers)
            if "deep_feature" in w:
                terms["deep_feature"] = (fs[self.deep_layer] - ft[self.deep_layer]).pow(2).mean()
        total = sum((w[k] * v for k, v in terms.items()), student.new_zeros(()))
        return total, {k: v.detach() for k, v in terms.items()}


class ZoomDistillation(nn.Module):
    """``l2_teacher_zoom``: ``mean (S(D_z) - T(D_z))^2``, the teacher's labels on down-zoomed inputs.

    For a batch of ground-truth patches ``G`` (``N x 3 x P x P`` in [0, 1]), each patch is rounded
    to uint8, shrunk to ``zoom`` of its size with Pillow's antialiased bilinear filter
    (:func:`sharpkd.data.degrade.downscale`: the same scene seen from farther away, a new in-domain
    image) and degraded as the pipeline degrades (:func:`sharpkd.data.degrade.degrade` at ``scale``,
    no codec) into ``D_z``.  The frozen ``teacher`` labels ``D_z`` without gradient; the student
    is asked to match that label, never the shrunk patch itself.  This is the down-zoom half of
    data upcycling (DUKD, Zhang et al. 2023): knowledge passes through inputs the precomputed
    teacher outputs never covered.  Its cost is one teacher forward on ``N`` patches of
    ``zoom * P`` pixels a side per step.  ``forward(model, G) -> term`` (the gradient flows into
    ``model``).
    """

    def __init__(self, teacher: nn.Module, zoom: float = 0.5, scale: float = 0.6) -> None:
        super().__init__()
        self.teacher = teacher.eval().requires_grad_(False)
        self.zoom, self.scale = check_zoom(zoom), float(scale)

    def extra_repr(self) -> str:
        return f"zoom={self.zoom}, scale={self.scale}"

    def inputs(self, gt: torch.Tensor) -> torch.Tensor:
        """``D_z`` for the batch ``gt`` (float in [0, 1], on ``gt``'s device)."""
        from sharpkd.tensors import imgs2tensor, tensor2img

        images = [zoom_input(tensor2img(g), self.zoom, self.scale) for g in gt]
        return imgs2tensor(images).to(gt.device)

    def forward(self, model: nn.Module, gt: torch.Tensor) -> torch.Tensor:
        x = self.inputs(gt)
        with torch.no_grad():
            target = self.teacher(x).clamp(0, 1)
        return (model(x) - target).pow(2).mean()


def check_zoom(zoom: float) -> float:
    """``train.zoom`` as a float in (0, 1), or one clear error."""
    if not isinstance(zoom, numbers.Real) or isinstance(zoom, bool) or not 0 < float(zoom) < 1:
        raise SharpkdError(f"train.zoom must be in (0, 1) (the shrink of the zoomed inputs), got {zoom!r}")
    return float(zoom)


def zoom_input(image: np.ndarray, zoom: float, scale: float) -> np.ndarray:
    """``D_z`` of one HxWx3 uint8 ground-truth image: shrunk to ``zoom`` of its size (antialiased
    bilinear), then degraded as the pipeline degrades at ``scale`` (no codec)."""
    from sharpkd.data.degrade import degrade, downscale

    return degrade(downscale(image, zoom), scale)


def label_zoomed(teacher: nn.Module, crops: list[np.ndarray], zoom: float, scale: float, *,
                 desc: str = "teacher, zoomed-out crops", **run_kwargs) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The pool of :class:`PrecomputedZoom`: ``(inputs, labels)`` with ``inputs[i]`` =
    :func:`zoom_input` of ``crops[i]`` and ``labels[i]`` the teacher's uint8 output on it
    (:func:`sharpkd.inference.tiled.run_many`; ``run_kwargs`` such as ``tile`` or ``resume_dir``
    passed on).  One teacher pass over ``zoom^2`` of the crops' pixels."""
    from sharpkd.inference.tiled import run_many

    zoom = check_zoom(zoom)
    inputs = [zoom_input(c, zoom, scale) for c in crops]
    return inputs, run_many(teacher, inputs, desc=desc, **run_kwargs)


class PrecomputedZoom(nn.Module):
    """``l2_teacher_zoom`` from labels computed once: ``mean (S(D_z) - T(D_z))^2`` over a fixed pool.

    ``inputs`` and ``labels`` are HxWx3 uint8 images of equal sizes in pairs (:func:`label_zoomed`
    of the training crops).  For a batch of ground-truth patches of side ``P`` the call draws as
    many patches of side ``round(zoom * P)`` (at most the smallest pooled image's side) from the
    pool as the loop samples crops, with a seed drawn from torch's global generator, which
    :func:`sharpkd.training.loop.fit` seeds from the seed and the step, so the draw is a function
    of both and a resumed run draws the same.  Unlike :class:`ZoomDistillation` no teacher
    runs during training, and the labels are the teacher's rounded outputs, as the precomputed
    ``l2_teacher`` labels are.  ``forward(model, G) -> term``.
    """

    def __init__(self, inputs: list[np.ndarray], labels: list[np.ndarray], zoom: float = 0.5) -> None:
        super().__init__()
        self.zoom = check_zoom(zoom)
        if not inputs or len(inputs) != len(labels):
            raise SharpkdError(f"the zoomed-out pool needs as many labels as inputs (at least one); got "
                               f"{len(inputs)} inputs and {len(labels)} labels")
        for i, (x, t) in enumerate(zip(inputs, labels)):
            for a in (x, t):
                if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
                    raise SharpkdError(f"zoomed-out pool item {i}: expected HxWx3 uint8 arrays, got "
                                       f"{getattr(a, 'dtype', type(a))} {getattr(a, 'shape', '')}")
            if x.shape != t.shape:
                raise SharpkdError(f"zoomed-out pool item {i}: input {x.shape} and label {t.shape} differ in size")
        from sharpkd.training.loop import Pairs

        self.pool = Pairs(list(inputs), list(labels))

    def extra_repr(self) -> str:
        return f"zoom={self.zoom}, pool={len(self.pool.gt)}"

    def sample(self, n: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` aligned (input, label) patches of ``side`` pixels, as ``n x 3 x side x side`` floats in [0, 1]:
        :func:`sharpkd.training.loop.sample_batch` over the pool, its seed drawn from torch's generator."""
        from sharpkd.training.loop import sample_batch

        x, t, _ = sample_batch(self.pool, 0, int(torch.randint(2**62, ())), n, max(1, int(side)))
        return x, t

    def forward(self, model: nn.Module, gt: torch.Tensor) -> torch.Tensor:
        x, t = self.sample(gt.shape[0], round(gt.shape[-1] * self.zoom))
        return (model(x.to(gt.device)) - t.to(gt.device)).pow(2).mean()


def build_loss(loss_params: dict, vgg_params: dict | None = None) -> DistillLoss:
    """Build the training stage's loss from params.

    ``loss_params`` maps term -> weight; ``vgg_params`` = ``{"backbone": "vgg19_relu3_1" |
    "vgg16", "path", "layers", "deep_layer", "sha256", "url", "cache_dir"}`` (all optional;
    ``None`` means the default).  The VGG is built only if a VGG term has a non-zero weight.
    """
    weights = check_weights(loss_params)
    vgg = None
    vgg_params = dict(vgg_params or {})
    unknown = [k for k in vgg_params if k not in VGG_PARAM_KEYS]
    if unknown:
        raise SharpkdError(f"unknown vgg param(s) {unknown}; allowed: {list(VGG_PARAM_KEYS)}")
    deep_layer = vgg_params.pop("deep_layer", None)
    layers = vgg_params.get("layers") or None
    if needs_vgg(weights):
        vgg = VGGFeatures(
            backbone=vgg_params.get("backbone") or "vgg19_relu3_1",
            layers=None if layers is None else sorted({*layers, *([deep_layer] if deep_layer else [])}),
            path=vgg_params.get("path") or None,
            sha256=vgg_params.get("sha256") or None,
            url=vgg_params.get("url") or None,
            cache_dir=vgg_params.get("cache_dir") or None,
        )
    return DistillLoss(weights, vgg=vgg, vgg_layers=layers, deep_layer=deep_layer)
