"""Frame sources: a video file decoded once, sequentially, or a list of image files, one per frame.

`iter_frames` yields (frame_id, image) for the requested original frame ids in increasing order; when a
frame cannot be had, it yields (frame_id, FrameError) with the reason instead, and goes on where it can.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import av
import cv2
import fsspec
import numpy as np

from datasets.urls import is_remote, local_path


class FrameError(str):
    """The reason a frame is missing (a str, so it travels into the ledger as is)."""


@dataclass(frozen=True)
class VideoSource:
    """One camera's video (e.g. NeRSemble v2 `cam_<serial>.mp4`)."""

    url: str

    def describe(self) -> tuple[int, int, int, float]:
        """(n_frames, width, height, fps) from the container (demux-count fallback), the size as the video
        is shown: a phone video stored sideways with a display rotation of 90 degrees is taller than wide
        (the first frame is decoded to read it)."""
        with _open_video(self.url) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0.0)
            n = int(stream.frames or 0)
            width, height = stream.codec_context.width, stream.codec_context.height
            try:
                first = next(container.decode(stream), None)
            except (av.error.FFmpegError, OSError, ValueError):
                first = None
            if first is not None and _quarter_turns(first) % 2:
                width, height = height, width
            if n <= 0:  # containers without a frame count: count packets, still no decoding
                container.seek(0, stream=stream)
                n = sum(1 for p in container.demux(stream) if p.size)
            return n, width, height, fps


@dataclass(frozen=True)
class ImageSequence:
    """One image file per frame; `urls[i]` is frame id `frame_ids[i]`."""

    urls: tuple[str, ...]
    frame_ids: tuple[int, ...]

    def describe(self) -> tuple[int, int, int, float]:
        """(n_frames, width, height, 0) with the size of the first readable image (header only)."""
        for url in self.urls[:8]:
            size = image_size(url)
            if size is not None:
                return len(self.urls), size[0], size[1], 0.0
        raise ValueError(f"none of the first images could be read, e.g. {self.urls[0]}")


def _open_video(url: str):
    if is_remote(url):
        return av.open(fsspec.open(url, "rb").open())
    return av.open(local_path(url))


def read_bytes(url: str) -> bytes:
    with fsspec.open(url, "rb") as f:
        return f.read()


def read_image(url: str) -> np.ndarray:
    """An image file -> uint8 [H, W, 3] RGB. Raises ValueError with the reason."""
    data = read_bytes(url)
    if not data:
        raise ValueError(f"empty file (0 bytes): {url}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"not a decodable image ({len(data)} bytes): {url}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def image_size(url: str) -> tuple[int, int] | None:
    """(width, height) of an image file, or None when it cannot be decoded."""
    try:
        from PIL import Image

        with fsspec.open(url, "rb") as f, Image.open(f) as im:
            return im.size
    except Exception:  # noqa: BLE001 - any unreadable file counts as no size
        return None


class LazyFrame:
    """A frame whose RGB pixels are made only when asked for (`rgb()`): a decoded video frame not yet
    converted from its codec's YUV, or an image file not yet read. A pass that looks at some frames only
    (the framing pass) skips the conversion, or the whole decode, of the others."""

    def __init__(self, make):
        self._make = make

    def rgb(self) -> np.ndarray:
        return self._make()


def iter_frames(source: VideoSource | ImageSequence, frame_ids: Sequence[int], threads: int = 1, lazy: bool = False
                ) -> Iterator[tuple[int, np.ndarray | LazyFrame | FrameError]]:
    """(frame id, uint8 [H, W, 3] RGB) for the wanted frame ids in increasing order, FrameError where a
    frame cannot be had; with `lazy`, LazyFrame instead of the pixels (an image file's errors surface
    when its pixels are asked for)."""
    if not frame_ids:
        return
    if isinstance(source, VideoSource):
        yield from _iter_video(source.url, list(frame_ids), threads, lazy)
    elif hasattr(source, "iter_frames"):  # a source that makes its frames (scans rendered, datasets/scans)
        for fid, image in source.iter_frames(frame_ids, threads):
            yield fid, LazyFrame(lambda im=image: im) if lazy and not isinstance(image, FrameError) else image
    else:
        index = {fid: i for i, fid in enumerate(source.frame_ids)}
        for fid in frame_ids:
            if fid not in index:
                yield fid, FrameError(f"no image file for frame {fid}")
                continue
            if lazy:
                yield fid, LazyFrame(lambda url=source.urls[index[fid]]: read_image(url))
                continue
            try:
                yield fid, read_image(source.urls[index[fid]])
            except (ValueError, OSError) as e:
                yield fid, FrameError(str(e))


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns that show the frame upright (its display matrix: phones store
    portrait videos sideways with a rotation of -90 degrees)."""
    return int(round((frame.rotation or 0) / 90.0)) % 4


def frame_rgb(frame: av.VideoFrame) -> np.ndarray:
    """uint8 [H, W, 3] RGB of a decoded frame, turned upright as players show it."""
    rgb = frame.to_ndarray(format="rgb24")
    k = _quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


def _frame_index(frame: av.VideoFrame, stream, fps: float) -> int | None:
    if frame.pts is None or not fps:
        return None
    start = stream.start_time or 0
    return int(round(float((frame.pts - start) * stream.time_base) * fps))


def _iter_video(url: str, frame_ids: list[int], threads: int, lazy: bool = False
                ) -> Iterator[tuple[int, np.ndarray | LazyFrame | FrameError]]:
    """Decode sequentially from the keyframe at or before the first wanted frame; never seek per frame."""
    wanted = sorted(set(frame_ids))
    for seek in (wanted[0] > 0, False):
        try:
            container = _open_video(url)
        except (av.error.FFmpegError, OSError, ValueError) as e:
            for fid in wanted:
                yield fid, FrameError(f"cannot open video {url}: {e}")
            return
        with container:
            placed = yield from _decode_wanted(container, url, wanted, threads, seek, lazy)
        if placed:
            return
        # the frame reached by the seek could not be numbered: decode again from frame 0


def _constant_rate(stream) -> bool:
    """The stream's frames are evenly spaced (average rate = nominal rate), so a timestamp gives the frame's
    number. Phone videos are often variable-rate; there frames must be counted from the first."""
    nominal = stream.base_rate or stream.guessed_rate
    return bool(stream.average_rate and nominal) and abs(float(stream.average_rate) / float(nominal) - 1) < 1e-3


def _decode_wanted(container, url: str, wanted: list[int], threads: int, seek: bool, lazy: bool = False):
    """Yield the wanted frames; return False (having yielded nothing) when a seek cannot be placed."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = max(0, int(threads))
    fps = float(stream.average_rate or stream.guessed_rate or 0.0)
    pending = iter(wanted)
    next_id = next(pending)
    index = 0
    if seek and not _constant_rate(stream):
        return False  # a variable frame rate: timestamps do not number the frames; count from the start
    if seek and fps > 0 and stream.time_base:
        target = int(math.floor(wanted[0] / fps / float(stream.time_base))) + (stream.start_time or 0)
        try:
            container.seek(target, stream=stream, backward=True, any_frame=False)
        except av.error.FFmpegError:
            return False
    reason = None
    try:
        for n, frame in enumerate(container.decode(stream)):
            if seek and n == 0:
                first = _frame_index(frame, stream, fps)
                if first is None or first > wanted[0]:
                    return False
                index = first
            if index == next_id:
                yield index, LazyFrame(lambda f=frame: frame_rgb(f)) if lazy else frame_rgb(frame)
                next_id = next(pending, None)
                if next_id is None:
                    return True
            index += 1
    except (av.error.FFmpegError, OSError, ValueError) as e:
        reason = f"decoding {url} failed at frame {index}: {e}"
    reason = reason or f"video {url} ended after {index} frames (truncated or corrupt file)"
    while next_id is not None:
        yield next_id, FrameError(reason)
        next_id = next(pending, None)
    return True


def sample_frames(source: VideoSource | ImageSequence, frame_ids: Sequence[int], n: int) -> list[
        tuple[int, np.ndarray]]:
    """About n frames spread over `frame_ids`, cheaply: exact frames of an image sequence; for a video
    the keyframe at or before each sampled position (one seek and one decoded frame each, no decoding
    through the video). Frames that cannot be read are left out; returns (frame id or -1, image)."""
    ids = list(frame_ids)
    if not ids or n < 1:
        return []
    picks = sorted({ids[int(round(i))] for i in np.linspace(0, len(ids) - 1, min(n, len(ids)))})
    if isinstance(source, ImageSequence) or hasattr(source, "iter_frames"):
        return [(fid, image) for fid, image in iter_frames(source, picks) if not isinstance(image, FrameError)]
    out: list[tuple[int, np.ndarray]] = []
    try:
        container = _open_video(source.url)
    except (av.error.FFmpegError, OSError, ValueError):
        return out
    with container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        for fid in picks:
            try:
                if fid > 0 and fps > 0 and stream.time_base:
                    target = int(math.floor(fid / fps / float(stream.time_base))) + (stream.start_time or 0)
                    container.seek(target, stream=stream, backward=True, any_frame=False)
                elif fid > 0:
                    continue
                else:
                    container.seek(stream.start_time or 0, stream=stream, backward=True, any_frame=False)
                frame = next(container.decode(stream), None)
            except (av.error.FFmpegError, OSError, ValueError):
                continue
            if frame is not None:
                index = _frame_index(frame, stream, fps)
                out.append((-1 if index is None else index, frame_rgb(frame)))
    return out
