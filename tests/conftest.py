"""Test-wide settings and fixtures."""

import pytest
import torch

from sharpkd.nets.students import build_student, save_student


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` are skipped where torch sees no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors run faster on one thread, and two threads spin-wait badly when the CPU is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def own_cache_folder(tmp_path_factory):
    """Calibration and peak figures go to a temporary cache folder, never the user's."""
    import os

    before = os.environ.get("SHARPKD_CACHE_DIR")
    os.environ["SHARPKD_CACHE_DIR"] = str(tmp_path_factory.mktemp("sharpkd-cache"))
    yield
    if before is None:
        os.environ.pop("SHARPKD_CACHE_DIR", None)
    else:
        os.environ["SHARPKD_CACHE_DIR"] = before


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    """A small trained-looking student file: random perturbations, so it changes images (the
    zero-initialised tail of an untrained one would return the input)."""
    torch.manual_seed(0)
    model = build_student("sharp")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    path = tmp_path_factory.mktemp("w") / "student.safetensors"
    save_student(model, path, {"card": "{}"})
    return path
