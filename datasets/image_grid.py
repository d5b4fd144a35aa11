"""The one tiling of images into a grid (training previews, renders of a model, contact sheets), with
optional text labels.

    grid = labelled_grid([[a, b], [c, None]], row_labels=["gt", "fit"], col_labels=["front", "side"])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _default_font() -> ImageFont.ImageFont:
    """Pillow's built-in bitmap font (not the FreeType default of Pillow >= 10.1)."""
    loader = getattr(ImageFont, "load_default_imagefont", None)
    return loader() if loader is not None else ImageFont.load_default()


def _text_size(font: ImageFont.ImageFont, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return int(right - min(left, 0)), int(bottom - min(top, 0))


def labelled_grid(
    images: Sequence[Sequence[np.ndarray | None]],
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    pad: int = 4,
) -> np.ndarray:  # [H_out,W_out,3] uint8
    """Tile uint8 [H,W,3] images (all one size) into one image, rows x columns, with optional text labels.

    `None` entries (and missing entries of rows shorter than the longest) become black tiles. Layout, with
    C = longest row and R = number of rows:
        label_w = (widest row label + pad) if row_labels else 0
        label_h = (tallest column label + pad) if col_labels else 0
        W_out = label_w + pad + C * (W + pad),  H_out = label_h + pad + R * (H + pad)
        tile (r, c) has its top-left corner at (y, x) = (label_h + pad + r * (H + pad), label_w + pad + c * (W + pad))
    Margins are black and labels white, in Pillow's default bitmap font: column labels centred above their
    column, row labels left-aligned in the left margin, centred vertically on their row.
    """
    rows = [list(r) for r in images]
    if not rows:
        raise ValueError("no images to tile")
    if pad < 0:
        raise ValueError(f"pad must be non-negative, got {pad}")
    n_rows = len(rows)
    n_cols = max(len(r) for r in rows)
    if row_labels is not None and len(row_labels) != n_rows:
        raise ValueError(f"{len(row_labels)} row labels for {n_rows} rows")
    if col_labels is not None and len(col_labels) != n_cols:
        raise ValueError(f"{len(col_labels)} column labels for {n_cols} columns")

    tile_shape = None
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            if img is None:
                continue
            img = np.asarray(img)
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(f"image ({r}, {c}) must be uint8 [H,W,3], got {img.dtype} {img.shape}")
            if tile_shape is None:
                tile_shape = img.shape
            elif img.shape != tile_shape:
                raise ValueError(f"image ({r}, {c}) has shape {img.shape}, expected {tile_shape}")
    if tile_shape is None:
        raise ValueError("all grid entries are None: the tile size is unknown")
    th, tw = tile_shape[:2]

    font = _default_font()
    label_w = max(_text_size(font, s)[0] for s in row_labels) + pad if row_labels else 0
    label_h = max(_text_size(font, s)[1] for s in col_labels) + pad if col_labels else 0
    out_h = label_h + pad + n_rows * (th + pad)
    out_w = label_w + pad + n_cols * (tw + pad)

    canvas = np.zeros((out_h, out_w, 3), dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            if img is None:
                continue
            y0 = label_h + pad + r * (th + pad)
            x0 = label_w + pad + c * (tw + pad)
            canvas[y0 : y0 + th, x0 : x0 + tw] = np.asarray(img)

    if not row_labels and not col_labels:
        return canvas
    pil = Image.fromarray(canvas)
    draw = ImageDraw.Draw(pil)
    if col_labels:
        for c, text in enumerate(col_labels):
            w_text, _ = _text_size(font, text)
            x0 = label_w + pad + c * (tw + pad)
            draw.text((x0 + (tw - w_text) // 2, pad // 2), text, fill=(255, 255, 255), font=font)
    if row_labels:
        for r, text in enumerate(row_labels):
            _, h_text = _text_size(font, text)
            y0 = label_h + pad + r * (th + pad)
            draw.text((pad // 2, y0 + (th - h_text) // 2), text, fill=(255, 255, 255), font=font)
    return np.asarray(pil, dtype=np.uint8).copy()
