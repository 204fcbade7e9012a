"""README tables are generated from metrics JSON, never typed by hand."""

import json

import pytest

from sharpkd.results import ablation_table, table, update


def eval_json(student_psnr=31.0):
    return {"methods": {"student": {"psnr": student_psnr, "ssim": 0.95, "n": 3},
                        "identity": {"psnr": 30.0, "ssim": 0.93, "n": 3},
                        "lanczos": {"psnr": 30.5, "ssim": 0.94, "n": 3}},
            "n_images": 3, "unsharp": {"radius": 1.0, "amount": 1.0},
            "student": {"arch": "sharp", "parameters": 5804, "macs_per_1080p_frame": 2.99e9}}


@pytest.fixture
def root(tmp_path):
    d = tmp_path / "metrics" / "p"
    (d / "ablation").mkdir(parents=True)
    (d / "eval.json").write_text(json.dumps(eval_json()))
    (d / "ablation" / "a.json").write_text(json.dumps(eval_json(32.0)))
    return tmp_path


def test_table_rows_in_method_order_with_gains(root):
    text = table(root / "metrics" / "p")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "method" not in line]
    assert rows[0].startswith("| degraded input") and rows[-1].startswith("| student")
    assert "+1.000" in rows[-1] and "5,804 params" in rows[-1]


def test_update_rewrites_only_marked_blocks(root):
    readme = root / "README.md"
    readme.write_text("intro\n<!-- results:p -->\nold\n<!-- /results:p -->\nmiddle\n"
                      "<!-- ablation:p -->\n<!-- /ablation:p -->\nend\n")
    update(readme, root)
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("end\n")
    assert "| a | sharp | 5,804 | 2.99 | 32.000 |" in text
    assert text.count("<!-- /results:p -->") == 1


def test_missing_metrics_are_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        table(tmp_path)
    with pytest.raises(FileNotFoundError):
        ablation_table(tmp_path)
