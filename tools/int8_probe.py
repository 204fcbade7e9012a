#!/usr/bin/env python3
"""Does int8 make the default student faster at the same quality?  Post-training quantization
(NNCF) of its OpenVINO graph, measured against the float32 graph ``sharpkd bench`` runs.

The student's uint8 graph (:class:`sharpkd.runtime.UInt8Graph`, exported at 1920x1080) is
quantized by ``nncf.quantize`` (MIXED preset: symmetric int8 weights per output channel,
asymmetric int8 activations per tensor) with the calibration frames below, in three forms:

* ``int8``: NNCF's defaults (activation ranges from quantiles that drop outliers);
* ``int8-minmax``: activation ranges from the minimum and maximum seen in calibration;
* ``int8-minmax-fp32-tail``: the same with the last convolution (the residual) left in float32;
* ``int8-minmax-fp32-add``: the convolutions int8, the residual add's inputs not quantized;
* ``int8-native``: the pipeline's int8 student (:func:`sharpkd.quant.to_int8`: plain PyTorch fake
  quantization, no NNCF in the graph), min/max ranges, the first layer's weights on 7 bits, the
  residual add in float; scored also against its PyTorch module (what the runtime is tested against);
* ``int8-native-8bit-head``: the same with 8-bit first-layer weights (saturates on AVX2);
* ``int8-native-qat``: ``int8-native`` fine-tuned like ``int8-qat`` below (its activation ranges
  kept as calibrated, gradients straight through the rounding);
* ``int8-qat`` (quantization-aware training): the PyTorch student with NNCF's quantizers (min/max
  ranges, the residual add not quantized) fine-tuned ``--qat-steps`` steps through them on the
  training photos (L2 to the ground truth, the pipeline's loop), exported as the runtime exports;
* ``fp32-finetuned``: its control, the float student fine-tuned the same way (what the extra
  training alone buys).

Calibration: the first ``--calib`` 1920x1080 *training* photos of the photo pool's split
(``metrics/photos/split.json``), degraded the report's way (bilinear to 60% and back).  Quality:
mean PSNR gain over the degraded input on every 1920x1080 *validation* photo of that split,
scored whole.  Speed: each graph compiled as ``sharpkd bench`` compiles it (latency hint,
``--threads`` threads), ``--runs`` timed calls after 3 warm-up calls, ``--passes`` interleaved
passes, the fastest median kept.  Needs NNCF: ``pip install -e '.[int8]'`` (not a dependency of the package).

    .venv/bin/python tools/int8_probe.py --out metrics/photos/bench/int8.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HEIGHT, WIDTH = 1080, 1920
TAIL = "/tail/fused/Conv/WithoutBiases"  # the ONNX exporter's names (UInt8Graph's unshuffled layout): the folded tail conv,
RESIDUAL = "/Add"  # and the residual add (unshuffled input + tail, before the uint8 shuffle)
TORCH_ADDS = ["__add__", "__radd__", "add", "add_"]  # the same add in the PyTorch graph NNCF traces


def frames(photos: Path, names: list[str], limit: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(ground truth, degraded)`` of the 1920x1080 photos among ``names``, at most ``limit``."""
    from sharpkd.degrade import degrade
    from sharpkd.imageio import load_rgb

    out = []
    for name in names:
        gt = load_rgb(photos / name)
        if gt.shape[:2] == (HEIGHT, WIDTH):
            out.append((gt, degrade(gt, 0.6)))
            if limit is not None and len(out) == limit:
                break
    return out


def training_pairs(photos: Path, names: list[str]):
    """:class:`sharpkd.train.Pairs` of every training photo, whole, degraded the report's way."""
    from sharpkd.degrade import degrade
    from sharpkd.imageio import load_rgb
    from sharpkd.train import Pairs

    gts = [load_rgb(photos / name) for name in names]
    return Pairs(degraded=[degrade(g, 0.6) for g in gts], gt=gts)


def finetune(model, pairs, args):
    """``args.qat_steps`` steps of the pipeline's loop (:func:`sharpkd.train.fit`): mean (S - G)^2,
    16 random 64x64 patches per step, AdamW at ``args.qat_lr`` with a cosine decay, seed 0."""
    import torch.nn.functional as F

    from sharpkd.train import fit

    def loss_fn(out, gt, _teacher):
        loss = F.mse_loss(out, gt)
        return loss, {"l2_gt": loss.detach()}

    model, _, _ = fit(model, pairs, loss_fn, lr=args.qat_lr, epochs=1, steps_per_epoch=args.qat_steps, batch=16,
                      patch=64, seed=0, desc="fine-tune")
    return model.eval()


def run(args: argparse.Namespace) -> dict:
    try:
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet
    except ImportError:
        raise SystemExit("error: tools/int8_probe.py needs NNCF: .venv/bin/pip install -e '.[int8]'") from None
    import torch

    from sharpkd.bench import time_calls
    from sharpkd.metrics import psnr
    from sharpkd.models import load_student
    from sharpkd.quant import to_int8
    from sharpkd.runtime import _export, _openvino_core

    torch.set_num_threads(args.threads)
    model, _ = load_student(args.student)
    if "int8" in getattr(model, "config", {}):
        raise SystemExit(f"error: {args.student} is int8 already: the probe quantizes a float student "
                         "(e.g. --student sharpkd/weights/student-quality.safetensors)")
    split = json.loads((ROOT / "metrics/photos/split.json").read_text())
    calib = frames(args.photos, split["train"], args.calib)
    val = frames(args.photos, split["val"])
    if not calib or not val:
        raise SystemExit(f"error: no 1920x1080 photos of the split found in {args.photos}")
    core = _openvino_core()
    fp32 = core.read_model(_export(model.eval(), HEIGHT, WIDTH), b"")
    dataset = nncf.Dataset([d[None] for _, d in calib])
    minmax = AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    forms = {
        "fp32": fp32,
        "int8": nncf.quantize(fp32, dataset, subset_size=len(calib), preset=nncf.QuantizationPreset.MIXED),
        "int8-minmax": nncf.quantize(fp32, dataset, subset_size=len(calib), preset=nncf.QuantizationPreset.MIXED,
                                     advanced_parameters=minmax),
        "int8-minmax-fp32-tail": nncf.quantize(fp32, dataset, subset_size=len(calib),
                                               preset=nncf.QuantizationPreset.MIXED, advanced_parameters=minmax,
                                               ignored_scope=nncf.IgnoredScope(names=[TAIL])),
        "int8-minmax-fp32-add": nncf.quantize(fp32, dataset, subset_size=len(calib),
                                              preset=nncf.QuantizationPreset.MIXED, advanced_parameters=minmax,
                                              ignored_scope=nncf.IgnoredScope(names=[RESIDUAL])),
    }
    degraded = [d for _, d in calib]
    native = {"int8-native": to_int8(model, degraded, first_bits=7),
              "int8-native-8bit-head": to_int8(model, degraded, first_bits=8)}
    forms |= {name: core.read_model(_export(m, HEIGHT, WIDTH), b"") for name, m in native.items()}
    if args.qat_steps:
        pairs = training_pairs(args.photos, split["train"])
        tuned = finetune(copy.deepcopy(model), pairs, args)
        forms["fp32-finetuned"] = core.read_model(_export(tuned, HEIGHT, WIDTH), b"")
        # quantization-aware: the float student with NNCF's quantizers (the residual add left
        # unquantized), the same fine-tuning through them, exported as the runtime exports
        calib_t = [torch.from_numpy(d).permute(2, 0, 1)[None].float() / 255 for _, d in calib]
        qat = nncf.quantize(copy.deepcopy(model), nncf.Dataset(calib_t), subset_size=len(calib),
                            preset=nncf.QuantizationPreset.MIXED, advanced_parameters=minmax,
                            ignored_scope=nncf.IgnoredScope(types=TORCH_ADDS, validate=False))
        forms["int8-qat"] = core.read_model(_export(finetune(qat, pairs, args), HEIGHT, WIDTH), b"")
        # the plain-PyTorch form fine-tuned the same way (its activation ranges stay as calibrated)
        native["int8-native-qat"] = finetune(to_int8(model, degraded), pairs, args)
        forms["int8-native-qat"] = core.read_model(_export(native["int8-native-qat"], HEIGHT, WIDTH), b"")
    config = {"INFERENCE_NUM_THREADS": args.threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    requests = {name: core.compile_model(m, "CPU", config).create_infer_request() for name, m in forms.items()}
    base = float(np.mean([psnr(d, g) for g, d in val]))
    rows: dict[str, dict] = {}
    outputs = {}
    for name, request in requests.items():
        outputs[name] = [request.infer({0: d[None]})[0][0].copy() for _, d in val]
        gain = float(np.mean([psnr(o, g) for o, (g, _) in zip(outputs[name], val)])) - base
        rows[name] = {"gain_db": round(gain, 3),
                      "max_abs_diff_vs_fp32": int(max(np.abs(o.astype(int) - r.astype(int)).max()
                                                      for o, r in zip(outputs[name], outputs["fp32"])))}
    from sharpkd.runtime import UInt8Graph

    for name, m in native.items():  # OpenVINO's int8 against the PyTorch fake-quant module it came from
        with torch.no_grad():
            ref = [UInt8Graph(m)(torch.from_numpy(d[None]))[0].numpy() for _, d in val]
        diffs = [np.abs(o.astype(int) - r.astype(int)) for o, r in zip(outputs[name], ref)]
        rows[name]["max_abs_diff_vs_reference"] = int(max(d.max() for d in diffs))
        rows[name]["fraction_differing_vs_reference"] = round(float(np.mean([(d > 0).mean() for d in diffs])), 6)
    timings: dict[str, list[float]] = {name: [] for name in requests}
    frame = val[0][1][None]
    for p in range(args.passes):
        for name, request in requests.items():
            timings[name].append(time_calls(lambda: request.infer({0: frame}), args.runs, warmup=3)["median_ms"])
            print(f"pass {p + 1}: {name}: {timings[name][-1]:.1f} ms", flush=True)
    for name in rows:
        rows[name]["ms_per_1080p"] = round(min(timings[name]), 1)
        rows[name]["speedup_vs_fp32"] = round(min(timings["fp32"]) / min(timings[name]), 2)
    student = args.student.resolve()
    student = str(student.relative_to(ROOT)) if student.is_relative_to(ROOT) else str(args.student)
    return {"student": student, "nncf": nncf.__version__, "calibration_frames": len(calib),
            "validation_frames": len(val), "input_psnr_db": round(base, 3), "threads": args.threads,
            "runs": args.runs, "passes": args.passes, "qat_steps": args.qat_steps, "qat_lr": args.qat_lr,
            "forms": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--student", type=Path, default=ROOT / "sharpkd/weights/student-quality.safetensors",
                    help="a float student (the committed int8.json: c16b1, the default before c32b2)")
    ap.add_argument("--photos", type=Path, default=ROOT.parent / "shared/data/photos")
    ap.add_argument("--calib", type=int, default=32, help="calibration frames (1920x1080 training photos)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--qat-steps", type=int, default=8000,
                    help="fine-tuning steps of the int8-qat form and its float32 control (0: neither)")
    ap.add_argument("--qat-lr", type=float, default=2e-4)
    ap.add_argument("--out", type=Path, help="write the result JSON here")
    args = ap.parse_args()
    result = run(args)
    text = json.dumps(result, indent=2) + "\n"
    if args.out:
        from sharpkd.fsutil import atomic_path

        args.out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.out) as tmp:
            tmp.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
