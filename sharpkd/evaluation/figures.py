"""What a person looks at: comparison grids with zoomed crops, score CSVs and plain-text score tables.

Grid layout (white background, black text)::

    |        col A        |        col B        | ...     <- column titles (label_height px)
    row label   [zoom xK at (x, y) wxh]                   <- row label band
    [ image A, scaled    ][ image B, scaled    ] ...     <- every column scaled to col_width
    [ crop A, nearest xK ][ crop B, nearest xK ] ...     <- the same region of every column

Main images are scaled to a common column width (box filter when shrinking, nearest-neighbour
when enlarging, so no detail is invented).  The zoom panels show the *original* pixels of the
crop enlarged by an integer factor with nearest neighbour, so sharpness is judged on real pixels;
the zoomed region is outlined in red on the main images (``mark_zoom``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from sharpkd.files import atomic_path

SCORE_COLUMNS = ["image", "method", "psnr", "ssim"]

_BG = 255
_TEXT = (0, 0, 0)
_MARK = (255, 0, 0)

Zoom = tuple[int, int, int, int]


def _check_image(img, where: str) -> None:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        desc = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"{where}: expected an HxWx3 uint8 image, got {desc}")


def pick_zoom(img: np.ndarray, size: tuple[int, int]) -> Zoom:
    """The ``size`` = (w, h) window of ``img`` with the most high-frequency detail: (x, y, w, h).

    Detail = sum over the window of ``|4 p - p_up - p_down - p_left - p_right|`` (absolute
    discrete Laplacian of the channel-mean grey image, edge-replicated borders).  Every position
    is scored exactly (integral image); ties go to the first in row-major order, so the choice is
    deterministic.
    """
    _check_image(img, "pick_zoom")
    h, w = img.shape[:2]
    cw, ch = min(max(1, int(size[0])), w), min(max(1, int(size[1])), h)
    g = np.pad(img.astype(np.float64).mean(axis=2), 1, mode="edge")
    lap = np.abs(4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:])
    ii = np.zeros((h + 1, w + 1))
    ii[1:, 1:] = lap.cumsum(axis=0).cumsum(axis=1)
    sums = ii[ch:, cw:] - ii[:-ch, cw:] - ii[ch:, :-cw] + ii[:-ch, :-cw]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(x), int(y), cw, ch


def _font(label_height: int):
    size = max(8, int(label_height * 0.6))
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, max_w: int) -> str:
    if draw.textlength(text, font=font) <= max_w:
        return text
    while text and draw.textlength(text + "...", font=font) > max_w:
        text = text[:-1]
    return text + "..." if text else ""


def _resize(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    if img.size == size:
        return img
    shrink = size[0] < img.size[0] or size[1] < img.size[1]
    return img.resize(size, Image.BOX if shrink else Image.NEAREST)


def _row_columns(rows) -> list[str]:
    if not rows:
        raise ValueError("comparison_grid needs at least one row")
    first = rows[0][1]
    if not first:
        raise ValueError(f"row {rows[0][0]!r} has no images")
    cols = list(first)
    for label, images in rows:
        if set(images) != set(cols):
            raise ValueError(f"row {label!r} has columns {list(images)}, expected the same as the first row: {cols}")
        for c in cols:
            _check_image(images[c], f"row {label!r}, column {c!r}")
        shapes = {images[c].shape for c in cols}
        if len(shapes) != 1:
            raise ValueError(f"row {label!r}: all images in a row must have the same size, got {sorted(shapes)}")
    return cols


def comparison_grid(
    rows: Sequence[tuple[str, Mapping[str, np.ndarray]]],
    zoom: Zoom | None | Sequence[Zoom | None] = None,
    label_height: int = 24,
    zoom_factor: int = 3,
    col_width: int | None = None,
    pad: int = 4,
    reference: str | None = None,
    mark_zoom: bool = True,
) -> np.ndarray:
    """Side-by-side comparison grid with a zoomed crop under every image; returns HxWx3 uint8.

    ``rows``: ``[(row_label, {column_name: HxWx3 uint8})]``, the same columns in every row (drawn
    in the first row's order), all images of one row the same size; rows may differ in size.
    ``zoom``: ``(x, y, w, h)`` in each row's original pixels, a list with one entry per row, or
    None to pick, per row, the window with the most detail in the ``reference`` column (default:
    the last column, e.g. the ground truth) via :func:`pick_zoom`; the automatic window is
    ``col_width // zoom_factor`` wide and half the row's displayed height over ``zoom_factor`` tall.
    ``col_width``: common column width in pixels (default: the widest image).
    Crops are enlarged ``zoom_factor`` times (integer, nearest neighbour), less if they would be
    wider than ``col_width``.
    """
    rows = list(rows)
    cols = _row_columns(rows)
    if reference is None:
        reference = cols[-1]
    if reference not in cols:
        raise ValueError(f"reference column {reference!r} is not one of {cols}")
    if not isinstance(zoom_factor, int) or zoom_factor < 1:
        raise ValueError(f"zoom_factor must be an integer >= 1, got {zoom_factor!r}")
    if label_height < 8:
        raise ValueError(f"label_height must be >= 8 pixels, got {label_height}")
    if zoom is None or (len(zoom) == 4 and all(isinstance(v, (int, np.integer)) for v in zoom)):
        zooms = [zoom] * len(rows)
    else:
        zooms = list(zoom)
        if len(zooms) != len(rows):
            raise ValueError(f"zoom list has {len(zooms)} entries for {len(rows)} rows")
    if col_width is None:
        col_width = max(images[cols[0]].shape[1] for _, images in rows)
    col_width = int(col_width)
    if col_width < 1:
        raise ValueError(f"col_width must be >= 1, got {col_width}")

    font = _font(label_height)
    ncols = len(cols)
    total_w = pad + ncols * (col_width + pad)

    # Build every row's pieces first to know the total height.
    blocks = []
    for (label, images), z in zip(rows, zooms):
        h, w = images[cols[0]].shape[:2]
        disp_h = max(1, round(h * col_width / w))
        if z is None:
            cw = max(1, min(w, col_width // zoom_factor))
            chh = max(1, min(h, (disp_h // 2) // zoom_factor))
            z = pick_zoom(images[reference], (cw, chh))
        x, y, zw, zh = (int(v) for v in z)
        if zw < 1 or zh < 1 or x < 0 or y < 0 or x + zw > w or y + zh > h:
            raise ValueError(f"row {label!r}: zoom region {(x, y, zw, zh)} does not fit its {w}x{h} images")
        k = max(1, min(zoom_factor, col_width // zw))
        panel_size = (zw * k, zh * k)
        if panel_size[0] > col_width:  # a requested region wider than a column: shrink to fit
            panel_size = (col_width, max(1, round(zh * col_width / zw)))
        mains, panels = [], []
        for c in cols:
            im = Image.fromarray(images[c])
            main = _resize(im, (col_width, disp_h)).copy()
            if mark_zoom:
                sx, sy = col_width / w, disp_h / h
                box = (int(x * sx), int(y * sy), max(int(x * sx), int((x + zw) * sx) - 1),
                       max(int(y * sy), int((y + zh) * sy) - 1))
                ImageDraw.Draw(main).rectangle(box, outline=_MARK, width=max(1, col_width // 300))
            mains.append(main)
            crop = im.crop((x, y, x + zw, y + zh))
            panels.append(crop.resize(panel_size, Image.NEAREST) if panel_size[0] >= zw else _resize(crop, panel_size))
        text = f"{label}   [zoom x{k} at ({x}, {y}) {zw}x{zh}]" if panel_size[0] >= zw else f"{label}   [crop ({x}, {y}) {zw}x{zh}]"
        blocks.append((text, mains, panels, disp_h, panel_size))

    total_h = label_height + sum(label_height + d + pad + p[1] + pad for _, _, _, d, p in blocks)
    canvas = Image.new("RGB", (total_w, total_h), (_BG, _BG, _BG))
    draw = ImageDraw.Draw(canvas)

    def text_y(top: int) -> int:
        bbox = draw.textbbox((0, 0), "Ag", font=font)
        return top + max(0, (label_height - (bbox[3] - bbox[1])) // 2 - bbox[1])

    for i, c in enumerate(cols):
        x0 = pad + i * (col_width + pad)
        t = _fit_text(draw, str(c), font, col_width)
        tw = draw.textlength(t, font=font)
        draw.text((x0 + (col_width - tw) / 2, text_y(0)), t, fill=_TEXT, font=font)

    top = label_height
    for text, mains, panels, disp_h, panel_size in blocks:
        draw.text((pad, text_y(top)), _fit_text(draw, text, font, total_w - 2 * pad), fill=_TEXT, font=font)
        top += label_height
        for i, (main, panel) in enumerate(zip(mains, panels)):
            x0 = pad + i * (col_width + pad)
            canvas.paste(main, (x0, top))
            canvas.paste(panel, (x0 + (col_width - panel_size[0]) // 2, top + disp_h + pad))
        top += disp_h + pad + panel_size[1] + pad
    return np.asarray(canvas)


def save_grid(path: str | os.PathLike, grid: np.ndarray) -> None:
    """Write an HxWx3 uint8 grid as PNG, atomically."""
    _check_image(grid, "save_grid")
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")


def _scores_frame(rows) -> pd.DataFrame:
    df = pd.DataFrame(list(rows))
    missing = [c for c in SCORE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"score rows lack column(s) {missing}; each row needs {SCORE_COLUMNS}")
    return df[SCORE_COLUMNS + (["link"] if "link" in df.columns else [])]


def write_scores_csv(path: str | os.PathLike, rows: Sequence[Mapping]) -> None:
    """Per-image scores as CSV (columns image, method, psnr, ssim, and ``link`` when the rows name
    the link their set went through; sorted by image then method, rows of one image and method in
    the order given: the primary set first, then the extra link sets).

    Values are written unrounded (full float precision), atomically.
    """
    df = _scores_frame(rows).sort_values(["image", "method"], kind="stable").reset_index(drop=True)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def read_scores_csv(path: str | os.PathLike) -> list[dict]:
    """Read a CSV written by :func:`write_scores_csv` back into row dicts (exact floats)."""
    df = pd.read_csv(path, dtype={"image": str, "method": str, "link": str}, keep_default_na=False)
    missing = [c for c in SCORE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a scores CSV, lacks column(s) {missing}")
    rows = [
        {"image": r.image, "method": r.method, "psnr": float(r.psnr), "ssim": float(r.ssim)}
        for r in df[SCORE_COLUMNS].itertuples(index=False)
    ]
    if "link" in df.columns:  # the link each row's set went through (older files: none recorded)
        rows = [r | {"link": link} for r, link in zip(rows, df["link"])]
    return rows


def _plain_table(header: list[str], body: list[list[str]], right: list[bool]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]

    def fmt(cells):
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    lines = [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in body]
    return "\n".join(lines) + "\n"


def format_scores_table(data: Sequence[Mapping] | Mapping[str, Mapping]) -> str:
    """Plain-text table.

    Given per-image rows (``[{"image", "method", "psnr", "ssim"}]``): one line per row, in the given
    order (image, method, PSNR in dB with 3 decimals, SSIM with 4).  Given a summary
    (``{method: {"psnr", "ssim", "n"}}``, see :func:`sharpkd.evaluation.metrics.summarize`): one line per
    method with the means and the image count.
    """
    if isinstance(data, Mapping):
        header = ["method", "PSNR (dB)", "SSIM", "n"]
        body = [[str(m), f"{v['psnr']:.3f}", f"{v['ssim']:.4f}", str(v.get("n", ""))] for m, v in data.items()]
        return _plain_table(header, body, [False, True, True, True])
    df = _scores_frame(data)
    body = [[str(r.image), str(r.method), f"{r.psnr:.3f}", f"{r.ssim:.4f}"] for r in df.itertuples(index=False)]
    return _plain_table(["image", "method", "PSNR (dB)", "SSIM"], body, [False, False, True, True])
