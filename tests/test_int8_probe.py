"""tools/int8_probe.py: what it needs is said in one line, and the nodes it keeps in float32 exist."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_without_nncf_one_error_line_and_a_nonzero_exit():
    # nncf hidden even where it is installed: the probe must not start without it
    code = ("import sys, runpy; sys.modules['nncf'] = None; sys.argv = ['int8_probe.py']; "
            "runpy.run_path('tools/int8_probe.py', run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == ["error: tools/int8_probe.py needs NNCF: .venv/bin/pip install -e '.[int8]'"]


def test_the_float32_tail_is_a_node_of_the_exported_graph():
    from sharpkd.models import build_student
    from sharpkd.runtime import _export, _openvino_core
    from tools.int8_probe import RESIDUAL, TAIL

    model = build_student("sharp").reparameterize()  # a float student: the probe quantizes it itself
    graph = _openvino_core().read_model(_export(model.eval(), 32, 48), b"")
    convs = [op.get_friendly_name() for op in graph.get_ordered_ops() if op.get_type_name() == "Convolution"]
    assert convs[-1] == TAIL  # the residual: the conv the probe leaves unquantized
    adds = [op.get_friendly_name() for op in graph.get_ordered_ops() if op.get_type_name() == "Add"]
    assert adds[-1] == RESIDUAL  # input + pixel_shuffle(tail): the add whose inputs stay float


def test_finetune_runs_the_pipeline_loop_on_l2_to_the_ground_truth():
    import argparse

    import numpy as np
    import torch

    from sharpkd.models import build_student
    from sharpkd.train import Pairs
    from tools.int8_probe import finetune

    rng = np.random.default_rng(0)
    gt = [rng.integers(0, 256, (70, 90, 3), dtype=np.uint8) for _ in range(2)]
    pairs = Pairs(degraded=[np.clip(g.astype(int) + 9, 0, 255).astype(np.uint8) for g in gt], gt=gt)
    args = argparse.Namespace(qat_steps=3, qat_lr=1e-3)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_student("sharp")
        before = {k: v.clone() for k, v in model.state_dict().items()}
        runs.append(finetune(model, pairs, args))
        assert not runs[-1].training
        assert any(not torch.equal(before[k], v) for k, v in runs[-1].state_dict().items())
    for k, v in runs[0].state_dict().items():  # seeded: the same steps give the same weights
        assert torch.equal(v, runs[1].state_dict()[k]), k
