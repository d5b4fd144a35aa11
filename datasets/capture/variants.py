"""Harder variants of a real clip, for tests and benchmarks of the monocular path: the person moved
towards an edge (or partly out of the frame), a hand-sized occluder over the mouth, downscaled or rotated
frames, frames without a face, and a longer clip looped from a short one.

Frames are uint8 RGB [H, W, 3]; every function returns new frames and leaves its input alone.
"""

from __future__ import annotations

import os

import av
import cv2
import numpy as np

from datasets.capture.writer import VideoWriter
from datasets.raw.sources import frame_rgb


def read_video(path: str) -> tuple[list[np.ndarray], float]:
    """Every frame of a video (upright, as players show it) and its frame rate."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 25.0)
        return [frame_rgb(f) for f in container.decode(stream)], fps


def write_video(path: str, frames: list[np.ndarray], fps: float, crf: int = 20, rotation: int = 0) -> str:
    """An H.264 mp4 of the frames (even width and height, as yuv420p needs). With `rotation` (a multiple
    of 90 degrees, counter-clockwise) the frames are stored turned the other way with that display
    rotation, as a phone stores a portrait video (-90): players, and the readers, show them upright."""
    k = int(round(rotation / 90)) % 4
    stored = [np.rot90(f, -k) for f in frames] if k else frames
    h, w = stored[0].shape[:2]
    h2, w2 = h - h % 2, w - w % 2
    with VideoWriter(path, w2, h2, fps=fps, crf=crf, rotation=rotation) as writer:
        for frame in stored:
            writer.write(np.ascontiguousarray(frame[:h2, :w2]))
    return path


def _extend(frame: np.ndarray, before: int, after: int, band: float) -> np.ndarray:
    """frame widened by `before` and `after` columns, filled with its own outer `band` (fraction of the
    width) mirrored back and forth: more of the room, not a black bar and not a mirrored person."""
    w = frame.shape[1]
    k = max(1, int(band * w))
    left, right = frame[:, :k], frame[:, w - k:]

    def tiles(strip: np.ndarray, n: int, towards_left: bool) -> np.ndarray:
        # built outwards from the frame's edge (each step a mirror of the last), then put in image order
        parts, flip = [], not towards_left
        while sum(p.shape[1] for p in parts) < n:
            parts.append(strip[:, ::-1] if flip else strip)
            flip = not flip
        out = np.concatenate(parts, 1) if parts else strip[:, :0]
        return out[:, :n][:, ::-1] if towards_left else out[:, :n]

    return np.concatenate([tiles(left, before, True), frame, tiles(right, after, False)], 1)


def shift(frames: list[np.ndarray], dx: float, dy: float = 0.0, band: float = 0.2) -> list[np.ndarray]:
    """The content moved by (dx, dy) of the frame size (0.3: 30% to the right), the frame size kept; the
    uncovered side is filled with the frame's own outer band mirrored (see _extend)."""
    h, w = frames[0].shape[:2]
    ux, uy = int(round(abs(dx) * w)), int(round(abs(dy) * h))
    out = []
    for f in frames:
        wide = _extend(f, ux if dx > 0 else 0, ux if dx < 0 else 0, band)
        tall = _extend(wide.transpose(1, 0, 2), uy if dy > 0 else 0, uy if dy < 0 else 0, band).transpose(1, 0, 2)
        x0 = 0 if dx > 0 else ux
        y0 = 0 if dy > 0 else uy
        out.append(np.ascontiguousarray(tall[y0:y0 + h, x0:x0 + w]))
    return out


def occlude(frames: list[np.ndarray], centres: list[np.ndarray | None], size: float | list[float]) -> list[np.ndarray]:
    """A hand-sized occluder pasted over each frame's point in `centres` ([2] pixels, None: untouched):
    a shaded, skin-toned ellipse `size` pixels wide (one size, or one per frame) with finger grooves,
    soft-edged."""
    out = []
    sizes = size if isinstance(size, list) else [size] * len(frames)
    for frame, c, size in zip(frames, centres, sizes):
        frame = frame.copy()
        if c is not None:
            h, w = frame.shape[:2]
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            u, v = (xx - c[0]) / (0.5 * size), (yy - c[1]) / (0.36 * size)
            r = np.sqrt(u ** 2 + v ** 2)
            alpha = np.clip((1.0 - r) / 0.08, 0, 1)[..., None]
            shade = 0.75 + 0.25 * np.clip(1 - v, 0, 2) / 2 - 0.12 * (np.abs(np.sin(2.0 * np.pi * (u + 1) * 2.0)) < 0.15)
            hand = np.array([214, 160, 128], np.float32) * shade[..., None]
            frame = (frame * (1 - alpha) + hand * alpha).clip(0, 255).astype(np.uint8)
        out.append(frame)
    return out


def downscale(frames: list[np.ndarray], factor: float) -> list[np.ndarray]:
    h, w = frames[0].shape[:2]
    size = (max(2, int(round(w / factor))), max(2, int(round(h / factor))))
    return [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]


def rotate(frames: list[np.ndarray], degrees: float) -> list[np.ndarray]:
    """The content rolled by `degrees` about the frame centre (mirror fill)."""
    h, w = frames[0].shape[:2]
    M = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0)
    return [cv2.warpAffine(f, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT) for f in frames]


def with_blank_frames(frames: list[np.ndarray], at: int, count: int, kind: str = "black") -> list[np.ndarray]:
    """`count` frames without a face inserted before frame `at`: black, or a blurred, noisy wall."""
    h, w = frames[0].shape[:2]
    rng = np.random.default_rng(0)
    if kind == "black":
        blank = [np.zeros((h, w, 3), np.uint8) for _ in range(count)]
    else:
        wall = cv2.GaussianBlur(frames[0], (0, 0), 25)
        blank = [(wall + rng.normal(0, 4, wall.shape)).clip(0, 255).astype(np.uint8) for _ in range(count)]
    return frames[:at] + blank + frames[at:]


def ping_pong(frames: list[np.ndarray], n_out: int) -> list[np.ndarray]:
    """n_out frames that play the clip forwards, backwards, forwards... (no cut in the motion)."""
    cycle = frames + frames[-2:0:-1] if len(frames) > 2 else frames
    return [cycle[i % len(cycle)] for i in range(n_out)]


def mouths(frames: list[np.ndarray]) -> list[tuple[np.ndarray, float] | None]:
    """Per frame, where its mouth is (pixels) and how wide its face is (pixels), by mediapipe's face
    mesh; None without a face: where, and how large, to put an occluder."""
    import mediapipe as mp

    from datasets.native_output import quiet_native_stderr

    lips, cheeks = [13, 14, 78, 308], [234, 454]  # inner lips and mouth corners, the face's sides (of 478)
    out = []
    with quiet_native_stderr():
        mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1)
        try:
            for frame in frames:
                found = mesh.process(np.ascontiguousarray(frame)).multi_face_landmarks
                if not found:
                    out.append(None)
                    continue
                h, w = frame.shape[:2]
                p = np.array([[q.x * w, q.y * h] for q in found[0].landmark])
                out.append((p[lips].mean(0), float(np.linalg.norm(p[cheeks[0]] - p[cheeks[1]]))))
        finally:
            mesh.close()
    return out


def harder_variants(source: str, folder: str) -> dict[str, str]:
    """Harder variants of the real clip `source` as videos in `folder`, name -> path: right (the person
    moved 30% to the right, where the largest centred square cuts the face), occluded (that, with a
    hand-sized occluder over the mouth for frames 15-54), small (moved left and downscaled 3x), phone (a
    portrait crop stored sideways with a display rotation of -90 degrees, as phones record)."""
    os.makedirs(folder, exist_ok=True)
    frames, fps = read_video(source)
    right = shift(frames, 0.3)
    found = mouths(right)
    centres = [m[0] if m is not None and 15 <= t < 55 else None for t, m in enumerate(found)]
    covered = occlude(right, centres, [0.9 * m[1] if m is not None else 0.0 for m in found])
    return {
        "right": write_video(os.path.join(folder, "right.mp4"), right, fps),
        "occluded": write_video(os.path.join(folder, "occluded.mp4"), covered, fps),
        "small": write_video(os.path.join(folder, "small.mp4"), downscale(shift(frames, -0.25), 3), fps),
        "phone": write_video(os.path.join(folder, "phone.mp4"), [f[:, 150:420] for f in frames], fps, rotation=-90),
    }
