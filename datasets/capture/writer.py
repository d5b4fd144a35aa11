"""Writers of the NeRSemble v2 and v1 layouts (see datasets/raw/nersemble.py for the layouts)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

import av
import cv2
import numpy as np


def write_calibration(path: str, K: np.ndarray | dict, world_to_cam: dict[str, np.ndarray]) -> None:
    """camera_params.json: 'intrinsics' (one 3x3, or serial -> 3x3) and 'world_2_cam' (serial -> 4x4)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    intr = {s: np.asarray(k).tolist() for s, k in K.items()} if isinstance(K, dict) else np.asarray(K).tolist()
    data = {"intrinsics": intr, "world_2_cam": {s: np.asarray(e).tolist() for s, e in world_to_cam.items()}}
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def write_image(path: str, image: np.ndarray, quality: int = 95) -> None:
    """RGB uint8 [H, W, 3] -> .jpg (quality) or .png (lossless), by the file suffix."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.lower().endswith((".jpg", ".jpeg")) else []
    if not cv2.imwrite(path, bgr, params):
        raise OSError(f"could not write {path}")


class VideoWriter:
    """H.264 mp4 writer (PyAV). `lossless` stores RGB exactly (libx264rgb, qp 0).

    Encoding is single-threaded so the same frames give byte-identical files.
    """

    def __init__(self, path: str, width: int, height: int, fps: float = 73.0, crf: int = 18,
                 gop: int = 24, lossless: bool = False, faststart: bool = False, rotation: int = 0):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        options = {"movflags": "+faststart"} if faststart else {}
        self.container = av.open(path, "w", options=options)
        if lossless:
            self.stream = self.container.add_stream("libx264rgb", rate=_rate(fps))
            self.stream.pix_fmt = "rgb24"
            opts = {"qp": "0", "preset": "ultrafast"}
        else:
            self.stream = self.container.add_stream("libx264", rate=_rate(fps))
            self.stream.pix_fmt = "yuv420p"
            opts = {"crf": str(crf), "preset": "veryfast"}
        opts.update({"g": str(gop), "threads": "1", "bf": "0"})
        self.stream.width, self.stream.height = width, height
        if rotation:  # a display matrix, as phones write (players turn the frames by it)
            self.stream.set_display_rotation(rotation)
        self.stream.options = opts
        self.stream.codec_context.thread_count = 1
        self.format = "rgb24"

    def write(self, frame: np.ndarray) -> None:
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format=self.format)
        for packet in self.stream.encode(video_frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _rate(fps: float):
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1000)


class NersembleV2Writer:
    """Writes `{p}/calibration/camera_params.json`, `{p}/sequences/{SEQ}/images/cam_{serial}.mp4`
    and `{p}/sequences/BACKGROUND/image_{serial}.jpg` under `root`."""

    def __init__(self, root: str):
        self.root = root

    def participant_dir(self, participant: str) -> str:
        return os.path.join(self.root, participant)

    def calibration(self, participant: str, K: np.ndarray | dict, world_to_cam: dict[str, np.ndarray]) -> None:
        write_calibration(os.path.join(self.participant_dir(participant), "calibration", "camera_params.json"),
                          K, world_to_cam)

    def background(self, participant: str, serial: str, image: np.ndarray, quality: int = 95) -> None:
        write_image(os.path.join(self.participant_dir(participant), "sequences", "BACKGROUND",
                                 f"image_{serial}.jpg"), image, quality)

    def video_path(self, participant: str, sequence: str, serial: str) -> str:
        return os.path.join(self.participant_dir(participant), "sequences", sequence, "images", f"cam_{serial}.mp4")

    def video(self, participant: str, sequence: str, serial: str, frames: Iterable[np.ndarray], fps: float = 73.0,
              **kwargs) -> str:
        frames = iter(frames)
        first = next(frames)
        path = self.video_path(participant, sequence, serial)
        with VideoWriter(path, first.shape[1], first.shape[0], fps, **kwargs) as w:
            w.write(first)
            for f in frames:
                w.write(f)
        return path


class NersembleV1Writer:
    """Writes `{p}/camera_params.json` and
    `{p}/sequences/{SEQ}/timesteps/frame_{t:05d}/{images_dir}/cam_{serial}.{ext}`."""

    def __init__(self, root: str, images_dir: str = "images-2x", ext: str = "jpg"):
        self.root, self.images_dir, self.ext = root, images_dir, ext

    def calibration(self, participant: str, K, world_to_cam: dict[str, np.ndarray]) -> None:
        write_calibration(os.path.join(self.root, participant, "camera_params.json"), K, world_to_cam)

    def frame_path(self, participant: str, sequence: str, frame_id: int, serial: str) -> str:
        return os.path.join(self.root, participant, "sequences", sequence, "timesteps", f"frame_{frame_id:05d}",
                            self.images_dir, f"cam_{serial}.{self.ext}")

    def frame(self, participant: str, sequence: str, frame_id: int, serial: str, image: np.ndarray,
              quality: int = 95) -> str:
        path = self.frame_path(participant, sequence, frame_id, serial)
        write_image(path, image, quality)
        return path
