"""Profiles: params files under profiles/ that override params.yaml, run as `dvc exp run -S ...`."""

import copy
import json
from pathlib import Path

import pytest
import yaml

from sharpkd.errors import SharpkdError
from sharpkd.profiles import command, load_profile, main, overrides

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def apply(params: dict, sets: list[str]) -> dict:
    out = copy.deepcopy(params)
    for kv in sets:
        key, value = kv.split("=", 1)
        key = key.removeprefix("++")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = yaml.safe_load(value)
    return out


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "profiles").glob("*.yaml")))
def test_every_profile_names_only_keys_params_yaml_has(name):
    sets = overrides(load_profile(name, ROOT), PARAMS)
    assert sets and sets[0] == f"profile={name}"


def test_the_photos_profile_is_the_run_the_shipped_balanced_student_came_from():
    """The training params DVC recorded for the shipped student are what the profile gives."""
    card = json.loads((ROOT / "sharpkd/weights/student-balanced.json").read_text())
    recorded = card["provenance"]["dvc_lock_train_params"]["params.yaml"]
    params = apply(PARAMS, overrides(load_profile("photos", ROOT), PARAMS))
    assert params["train"] == recorded["train"]
    assert params["profile"] == recorded["profile"] and params["degrade"]["scale"] == recorded["degrade.scale"]


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "profiles").glob("*.yaml")))
def test_dvc_applies_every_profile_to_params_yaml(tmp_path, name):
    """The overrides go through DVC's own parser (Hydra's grammar), as `dvc exp run -S` applies them."""
    from dvc.utils.hydra import apply_overrides

    target = tmp_path / "params.yaml"
    target.write_text((ROOT / "params.yaml").read_text())
    sets = overrides(load_profile(name, ROOT), PARAMS)
    apply_overrides(str(target), sets)
    assert yaml.safe_load(target.read_text()) == apply(PARAMS, sets)


def test_the_command_is_dvc_exp_run_with_extra_arguments_last():
    cmd = command("photos", ["-n", "gt_only", "-S", "train.loss.l2_teacher=0"], ROOT)
    assert cmd[1:5] == ["-m", "dvc", "exp", "run"] and cmd[-4:] == ["-n", "gt_only", "-S", "train.loss.l2_teacher=0"]
    assert "slice.report_size=[464, 256]" in cmd


@pytest.mark.parametrize("text,match", [
    ("profile: x\nslice: {rowz: 3}\n", "unknown key 'slice.rowz'"),
    ("profile: ../escape\n", "plain name"),
    ("profile: x\nnosuch: 1\n", "unknown key 'nosuch'"),
    ("- a\n", "mapping"),
])
def test_a_bad_profile_is_one_error_naming_the_key(tmp_path, text, match):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(SharpkdError, match=match):
        overrides(load_profile(str(f), ROOT), PARAMS)


def test_an_unknown_profile_lists_the_known_ones(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["nope", "--print"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no profile 'nope'") and "photos" in err and err.count("\n") == 1
