"""The package's layout shows its architecture: sub-packages in layers, no import cycles, nothing
reaching up, and the command's path free of the pipeline's libraries."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "sharpkd"

#: Each module or sub-package and the layer it sits in: a module may import only from its own
#: layer or lower ones (never from a higher one, and never from ``stage``, the stages' plumbing).
LAYERS = {
    "errors": 0, "provenance": 1, "files": 1, "cache": 1, "images": 1, "tensors": 1, "fetch": 1, "process": 1,
    "data": 2, "nets": 2,
    "training": 3, "evaluation": 3, "inference": 3,
    "video": 4,
    "app": 5,
    "stage": 5, "profiles": 5,
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every sharpkd module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sharpkd"):
            assert node.level == 0, f"{path}: relative import"
            found.add(node.module)
            for a in node.names:
                if (PKG.parent / (node.module.replace(".", "/") + f"/{a.name}.py")).exists():
                    found.add(f"{node.module}.{a.name}")
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sharpkd")}
    return found


GRAPH = {module_name(p): imports(p) for p in sorted(PKG.rglob("*.py"))}


def top(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_module_has_a_layer():
    assert {top(m) for m in GRAPH} - {""} <= set(LAYERS)


def test_nothing_imports_from_a_higher_layer():
    bad = [(m, d) for m, deps in GRAPH.items() for d in deps
           if top(m) and top(d) and LAYERS[top(d)] > LAYERS[top(m)]]
    assert bad == []


def test_only_stage_scripts_use_the_stage_plumbing():
    assert [m for m, deps in GRAPH.items() if "sharpkd.stage" in deps] == []


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}

    def visit(m, path):
        if state.get(m) == 1:
            raise AssertionError("import cycle: " + " -> ".join(path + [m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for d in GRAPH.get(m, ()):
            if d in GRAPH and d != m:
                visit(d, path + [m])
        state[m] = 2

    for m in GRAPH:
        visit(m, [])


def test_a_layer_check_that_cannot_fail_is_caught():
    """The cycle check finds a cycle in a graph that has one (the check itself can fail)."""
    saved = dict(GRAPH)
    try:
        GRAPH["sharpkd.errors"] = {"sharpkd.app.cli"}
        GRAPH["sharpkd.app.cli"] = GRAPH["sharpkd.app.cli"] | {"sharpkd.errors"}
        try:
            test_the_import_graph_has_no_cycle()
        except AssertionError:
            return
        raise AssertionError("a cycle went unnoticed")
    finally:
        GRAPH.clear()
        GRAPH.update(saved)


# the pipeline extra, and the ONNX exporter that only export-onnx loads
PIPELINE_ONLY = ("dvc", "dvclive", "yaml", "torchvision", "pandas", "matplotlib", "skimage", "spandrel",
                 "spandrel_extra_arches", "pytorch_msssim", "scipy", "onnxruntime", "onnxscript")


def test_the_command_path_imports_nothing_from_the_pipeline_extra(tmp_path):
    """Sharpening an image through the command imports none of the pipeline's libraries."""
    from PIL import Image
    import numpy as np

    src = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(src)
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['sharpkd', 'sharpen', {str(src)!r}, '-o', {str(tmp_path / 'out')!r}, '-q']\n"
        "try:\n    runpy.run_module('sharpkd.app.cli', run_name='__main__')\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {PIPELINE_ONLY!r})\n"
        "print('PIPELINE:' + ','.join(bad))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    line = [l for l in r.stdout.splitlines() if l.startswith("PIPELINE:")][0]
    assert line == "PIPELINE:", line
