"""dvc.yaml declares, for every stage, each sharpkd module it imports and each params section it reads.

DVC does not follow imports: a stage that forgets a module it imports is not re-run when that
module changes.  This test follows the imports itself (transitively, through sharpkd).
"""

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def direct_imports(path: Path) -> set[str]:
    """sharpkd module files imported by ``path`` (absolute and relative imports)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom):
            if node.level or (node.module or "").startswith("sharpkd"):
                base = "sharpkd" if node.level else node.module
                if node.level and node.module:
                    base = f"sharpkd.{node.module}"
                names = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("sharpkd")]
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                f = ROOT.joinpath(*parts[:i]).with_suffix(".py")
                pkg = ROOT.joinpath(*parts[:i], "__init__.py")
                if f.exists():
                    found.add(f.relative_to(ROOT).as_posix())
                if pkg.exists():
                    found.add(pkg.relative_to(ROOT).as_posix())
    return found


def closure(path: Path) -> set[str]:
    seen, todo = set(), [path]
    while todo:
        for mod in direct_imports(todo.pop()):
            if mod not in seen:
                seen.add(mod)
                todo.append(ROOT / mod)
    return seen


STAGES = sorted(DVC["stages"])


def stage_module(stage: dict) -> Path:
    m = re.search(r"python -m (stages\.\w+)", stage["cmd"])
    assert m, f"stage command does not run a stages module: {stage['cmd']}"
    return ROOT / (m.group(1).replace(".", "/") + ".py")


@pytest.mark.parametrize("name", STAGES)
def test_stage_declares_exactly_the_sharpkd_modules_it_imports(name):
    stage = DVC["stages"][name]
    module = stage_module(stage)
    deps = {d if isinstance(d, str) else next(iter(d)) for d in stage["deps"]}
    assert module.relative_to(ROOT).as_posix() in deps
    imported = closure(module)
    declared = {d for d in deps if d.startswith("sharpkd/")}
    assert imported - declared == set(), f"{name}: imports not declared in dvc.yaml"
    assert declared - imported == set(), f"{name}: declared but not imported (needless reruns)"


@pytest.mark.parametrize("name", STAGES)
def test_stage_declares_every_params_section_it_reads(name):
    stage = DVC["stages"][name]
    text = stage_module(stage).read_text()
    sections = set(re.findall(r'load_params\("(\w+)"\)', text))
    declared = [p if isinstance(p, str) else next(iter(p)) for p in stage.get("params", [])]
    for section in sections:
        assert section in PARAMS, f"params.yaml has no section {section}"
        assert any(d == section or d.startswith(section + ".") for d in declared), \
            f"{name} reads params section {section!r} but dvc.yaml does not declare it"
    # a stage reading only some keys of a section declares them; check they exist
    for d in declared:
        node = PARAMS
        for part in d.split("."):
            assert part in node, f"{name}: declared param {d} is not in params.yaml"
            node = node[part]


def test_every_stage_module_is_in_the_pipeline():
    used = {stage_module(s).name for s in DVC["stages"].values()}
    present = {p.name for p in (ROOT / "stages").glob("*.py") if p.name != "__init__.py"}
    assert present == used
