import numpy as np
import pytest
from PIL import Image

from sharpkd.evaluation.figures import (
    comparison_grid,
    format_scores_table,
    pick_zoom,
    read_scores_csv,
    save_grid,
    write_scores_csv,
)

COLS = ["degraded", "teacher", "student", "ground truth"]


def _img(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _flat_with_patch(h, w, x, y, size=6):
    img = np.full((h, w, 3), 120, np.uint8)
    img[y : y + size, x : x + size] = _img(size, size, 0)
    return img


def _rows():
    return [
        ("photo_a", {c: _img(30, 40, i) for i, c in enumerate(COLS)}),
        ("photo_b", {c: _img(50, 20, 10 + i) for i, c in enumerate(COLS)}),
    ]


@pytest.mark.parametrize("zoom", [None, (2, 3, 8, 6)])
@pytest.mark.parametrize("col_width", [None, 64])
def test_grid_shape_dtype(zoom, col_width):
    lh, pad = 16, 4
    grid = comparison_grid(_rows(), zoom=zoom, label_height=lh, col_width=col_width, pad=pad)
    cw = col_width or 40
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    assert grid.shape[1] == pad + 4 * (cw + pad)
    # header + per row (label band + image + pad + zoom panel + pad)
    disp = [round(30 * cw / 40), round(50 * cw / 20)]
    if zoom is None:
        assert grid.shape[0] > lh + sum(lh + d + 2 * pad for d in disp)
    else:  # an 8x6 crop enlarged x3 (fits every column width here)
        assert grid.shape[0] == lh + sum(lh + d + pad + 6 * 3 + pad for d in disp)


def test_labels_drawn():
    grid = comparison_grid(_rows(), label_height=20)
    title_band = grid[:20]
    assert (title_band != 255).any()  # column titles drawn on the white band
    # each column title lands over its own column
    pad, cw = 4, 40
    for i in range(4):
        x0 = pad + i * (cw + pad)
        assert (title_band[:, x0 : x0 + cw] != 255).any(), COLS[i]
    row_band = grid[20:40]
    assert (row_band != 255).any()  # row label


def test_zoom_selection_deterministic_and_finds_detail():
    gt = _flat_with_patch(40, 60, x=41, y=7)
    z = pick_zoom(gt, (8, 8))
    assert z == pick_zoom(gt, (8, 8))
    x, y, w, h = z
    assert (w, h) == (8, 8)
    assert x <= 41 and x + w >= 41 + 6 and y <= 7 and y + h >= 7 + 6
    # a flat image: ties resolved to the first position
    assert pick_zoom(np.full((20, 20, 3), 9, np.uint8), (5, 5)) == (0, 0, 5, 5)


def test_auto_zoom_uses_reference_column():
    gt = _flat_with_patch(30, 45, x=30, y=20)
    row = ("r", {"degraded": np.full_like(gt, 120), "ground truth": gt})
    g1 = comparison_grid([row], label_height=12)
    g2 = comparison_grid([row], label_height=12)
    assert np.array_equal(g1, g2)
    # the zoom panel under the ground truth shows the random patch (not flat grey)
    lh, pad, cw = 12, 4, 45
    disp_h = 30
    panel = g1[lh + lh + disp_h + pad :, pad + cw + pad : pad + 2 * cw + pad]
    assert len(np.unique(panel.reshape(-1, 3), axis=0)) > 10


@pytest.mark.parametrize(
    "rows,kw,match",
    [
        ([], {}, "at least one row"),
        ([("a", {"x": np.zeros((20, 20, 3), np.uint8)}), ("b", {"y": np.zeros((20, 20, 3), np.uint8)})], {}, "columns"),
        ([("a", {"x": np.zeros((20, 20, 3), np.uint8), "y": np.zeros((20, 21, 3), np.uint8)})], {}, "same size"),
        ([("a", {"x": np.zeros((20, 20, 3), np.float32)})], {}, "uint8"),
        ([("a", {"x": np.zeros((20, 20, 3), np.uint8)})], {"zoom": (15, 15, 10, 10)}, "does not fit"),
    ],
)
def test_grid_bad_input(rows, kw, match):
    with pytest.raises(ValueError, match=match):
        comparison_grid(rows, **kw)


def test_save_grid_png(tmp_path):
    grid = comparison_grid(_rows()[:1], label_height=12)
    path = tmp_path / "sub" / "grid.png"
    save_grid(path, grid)
    assert np.array_equal(np.asarray(Image.open(path)), grid)
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]


def _score_rows():
    return [
        {"image": "b.jpg", "method": "student", "psnr": 33.123456789012345, "ssim": 0.9512345678901234},
        {"image": "a.jpg", "method": "student", "psnr": 31.5, "ssim": 0.9},
        {"image": "a.jpg", "method": "identity", "psnr": 29.0000001, "ssim": 0.87654321},
    ]


def test_scores_csv_round_trip(tmp_path):
    path = tmp_path / "scores.csv"
    write_scores_csv(path, _score_rows())
    back = read_scores_csv(path)
    expected = sorted(_score_rows(), key=lambda r: (r["image"], r["method"]))
    assert back == expected  # exact floats, sorted by image then method
    assert path.read_text().splitlines()[0] == "image,method,psnr,ssim"


def test_scores_csv_missing_column(tmp_path):
    with pytest.raises(ValueError, match="ssim"):
        write_scores_csv(tmp_path / "s.csv", [{"image": "a", "method": "m", "psnr": 1.0}])
    assert not (tmp_path / "s.csv").exists()


def test_format_scores_table_rows_and_summary():
    text = format_scores_table(_score_rows())
    lines = text.splitlines()
    assert lines[0].split() == ["image", "method", "PSNR", "(dB)", "SSIM"]
    assert "33.123" in lines[2] and "0.9512" in lines[2]
    assert len(lines) == 2 + 3
    summ = {"identity": {"psnr": 29.0, "ssim": 0.87, "n": 1}, "student": {"psnr": 32.31, "ssim": 0.92, "n": 2}}
    s = format_scores_table(summ)
    assert "student" in s and "32.310" in s and s.splitlines()[-1].rstrip().endswith("2")
