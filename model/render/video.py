"""Writing rendered frames as animations and reading them back (grids of images: datasets/image_grid.py).

    write_animation("out/turntable.gif", frames, fps=25)   # Pillow, loops forever
    write_animation("out/turntable.mp4", frames, fps=25)   # PyAV, H.264 (or MPEG-4 Part 2), yuv420p
    frames = read_gif_frames("out/turntable.gif")          # [T,H,W,3] uint8

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
from PIL import Image

__all__ = ["read_gif_frames", "read_mp4_frames", "write_animation"]


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
