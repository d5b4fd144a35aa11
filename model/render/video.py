"""Writing rendered frames as animations, reading them back, and tiling images into labelled grids.

    write_animation("out/turntable.gif", frames, fps=25)   # Pillow, loops forever
    write_animation("out/turntable.mp4", frames, fps=25)   # PyAV, H.264 (or MPEG-4 Part 2), yuv420p
    frames = read_gif_frames("out/turntable.gif")          # [T,H,W,3] uint8
    grid = labelled_grid([[a, b], [c, None]], row_labels=["gt", "fit"], col_labels=["front", "side"])

Frames are uint8 RGB arrays [H,W,3], all the same size.

Notes:
    - GIF stores at most 256 colours per frame (Pillow quantises each frame) and frame durations in
      hundredths of a second, so fps is honoured only approximately. Pillow merges consecutive identical
      frames into one longer frame, so reading a GIF back may give fewer frames than were written.
    - MP4 with yuv420p needs even sizes: odd heights/widths are padded by one row/column repeating the
      last one, so reading back gives the padded size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["labelled_grid", "read_gif_frames", "read_mp4_frames", "write_animation"]


def _check_frames(frames: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    """A non-empty list of contiguous uint8 [H,W,3] frames of one size, or ValueError."""
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4:
            raise ValueError(f"a frame array must be [T,H,W,3], got shape {frames.shape}")
        frames = list(frames)
    frames = list(frames)
    if not frames:
        raise ValueError("no frames to write")
    out = []
    for i, fr in enumerate(frames):
        fr = np.asarray(fr)
        if fr.ndim != 3 or fr.shape[2] != 3:
            raise ValueError(f"frame {i} must be [H,W,3], got shape {fr.shape}")
        if fr.dtype != np.uint8:
            raise ValueError(f"frame {i} must be uint8, got {fr.dtype}")
        if fr.shape != frames[0].shape:
            raise ValueError(f"frame {i} has shape {fr.shape}, frame 0 has {np.asarray(frames[0]).shape}")
        if fr.shape[0] < 1 or fr.shape[1] < 1:
            raise ValueError(f"frame {i} is empty: {fr.shape}")
        out.append(np.ascontiguousarray(fr))
    return out


def write_animation(path: str | os.PathLike, frames: Sequence[np.ndarray] | np.ndarray, fps: int = 25) -> str:
    """Write frames (uint8 [H,W,3] each, or one [T,H,W,3] array) as an animation; the suffix picks the format.

    .gif: Pillow, looping forever, each frame shown 1000 / fps ms (rounded to whole ms; GIF keeps 10 ms steps).
    .mp4: PyAV, libx264 (crf 18) when available else mpeg4 (high bit rate), yuv420p, odd sizes padded to even.
    Creates the parent directory. Raises ValueError for another suffix, no frames or malformed frames.
    Returns the path as a string.
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"unsupported animation format {suffix!r} (use .gif or .mp4): {path}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    checked = _check_frames(frames)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    if suffix == ".gif":
        _write_gif(path, checked, fps)
    else:
        _write_mp4(path, checked, fps)
    return path


def _write_gif(path: str, frames: list[np.ndarray], fps: int) -> None:
    images = [Image.fromarray(fr) for fr in frames]
    duration = max(1, round(1000.0 / fps))
    images[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        loop=0,
        duration=duration,
        disposal=1,
    )


def _pad_even(frame: np.ndarray) -> np.ndarray:
    """Repeat the last row/column so both sides are even (yuv420p needs it)."""
    h, w = frame.shape[:2]
    ph, pw = h % 2, w % 2
    if ph or pw:
        frame = np.pad(frame, ((0, ph), (0, pw), (0, 0)), mode="edge")
    return frame


def _write_mp4(path: str, frames: list[np.ndarray], fps: int) -> None:
    frames = [_pad_even(fr) for fr in frames]
    h, w = frames[0].shape[:2]
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(path, mode="w") as container:
        if codec == "libx264":
            stream = container.add_stream(codec, rate=fps, options={"crf": "18", "preset": "medium"})
        else:
            stream = container.add_stream(codec, rate=fps)
            stream.bit_rate = max(2_000_000, int(w * h * fps * 0.5))  # ~0.5 bit per pixel: visually lossless
        stream.width = w
        stream.height = h
        stream.pix_fmt = "yuv420p"
        for fr in frames:
            video_frame = av.VideoFrame.from_ndarray(fr, format="rgb24")
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():  # flush
            container.mux(packet)


def read_gif_frames(path: str | os.PathLike) -> np.ndarray:  # [T,H,W,3] uint8
    """All frames of a GIF as composited RGB images [T,H,W,3] uint8."""
    out = []
    with Image.open(os.fspath(path)) as im:
        for i in range(getattr(im, "n_frames", 1)):
            im.seek(i)
            out.append(np.asarray(im.convert("RGB"), dtype=np.uint8).copy())
    return np.stack(out)


def read_mp4_frames(path: str | os.PathLike) -> np.ndarray:  # [T,H,W,3] uint8
    """All decoded frames of a video's first video stream as RGB images [T,H,W,3] uint8."""
    out = []
    with av.open(os.fspath(path), mode="r") as container:
        for frame in container.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24"))
    if not out:
        raise ValueError(f"no video frames in {path}")
    return np.stack(out)


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
