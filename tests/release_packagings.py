"""Write one small capture (frames, cameras, plates, mattes) in each NeRSemble packaging, with the file
names and formats of the releases (datasets/raw/nersemble_layouts.py lists them and their sources).

Frames go into lossless videos or PNGs so that every packaging decodes to the very same pixels."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import cv2
import numpy as np

from datasets.cameras import scale_intrinsics
from datasets.capture.rig import make_rig
from datasets.capture.writer import VideoWriter, write_calibration, write_image

P, SEQ = "017", "EXP-1-head"


@dataclass
class Capture:
    K: dict[str, np.ndarray]  # serial -> [3, 3] of the frames
    E: dict[str, np.ndarray]  # serial -> [4, 4] world-to-camera
    frames: dict[str, list[np.ndarray]]  # serial -> T x [H, W, 3]
    plates: dict[str, np.ndarray]
    mattes: dict[str, list[np.ndarray]]  # serial -> T x [H, W] uint8

    @property
    def serials(self) -> list[str]:
        return sorted(self.K)


def make_capture(width: int = 32, height: int = 48, n_frames: int = 4, n_views: int = 2, seed: int = 0) -> Capture:
    rng = np.random.default_rng(seed)
    rig = make_rig(width, height)[:n_views]
    frames, plates, mattes = {}, {}, {}
    for c in rig:
        base = cv2.resize(rng.integers(0, 255, (6, 4, 3)).astype(np.float32), (width, height),
                          interpolation=cv2.INTER_CUBIC)
        frames[c.serial] = [np.clip(base + 20 * t + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
                            for t in range(n_frames)]
        plates[c.serial] = np.clip(base * 0.5, 0, 255).astype(np.uint8)
        yy, xx = np.mgrid[:height, :width]
        mattes[c.serial] = [np.where((xx - width / 2) ** 2 + (yy - height / 2 - t) ** 2 < (width / 3) ** 2, 255, 0
                                     ).astype(np.uint8) for t in range(n_frames)]
    return Capture({c.serial: c.K for c in rig}, {c.serial: c.world_to_cam for c in rig}, frames, plates, mattes)


def write_video(path: str, frames: list[np.ndarray], fps: float = 73.0) -> None:
    h, w = frames[0].shape[:2]
    with VideoWriter(path, w, h, fps=fps, lossless=True) as video:
        for f in frames:
            video.write(f if f.ndim == 3 else np.repeat(f[..., None], 3, 2))


def _videos(folder: str, cap: Capture) -> None:
    for s in cap.serials:
        write_video(os.path.join(folder, f"cam_{s}.mp4"), cap.frames[s])


def _plates(folder: str, cap: Capture) -> None:
    for s in cap.serials:
        write_image(os.path.join(folder, f"image_{s}.jpg"), cap.plates[s])


def write_v2(root: str, cap: Capture, K: dict | None = None) -> None:
    """nersemble_data v2: {p}/calibration/camera_params.json (one shared 3x3), sequences/{SEQ}/images/cam_*.mp4."""
    shared = next(iter((K or cap.K).values()))
    write_calibration(os.path.join(root, P, "calibration", "camera_params.json"), shared, cap.E)
    _videos(os.path.join(root, P, "sequences", SEQ, "images"), cap)
    _plates(os.path.join(root, P, "sequences", "BACKGROUND"), cap)


def write_v2_benchmark(root: str, cap: Capture, tracking: dict | None = None) -> None:
    """nersemble_benchmark: nvs/{p}/calibration/camera_params.json (per-camera intrinsics), images and
    alpha_maps videos, tracking/flame2023_tracking_v2.npz; no plates."""
    p_dir = os.path.join(root, "nvs", P)
    write_calibration(os.path.join(p_dir, "calibration", "camera_params.json"), cap.K, cap.E)
    seq = os.path.join(p_dir, "sequences", SEQ)
    _videos(os.path.join(seq, "images"), cap)
    for s in cap.serials:
        write_video(os.path.join(seq, "alpha_maps", f"cam_{s}.mp4"), cap.mattes[s])
    if tracking is not None:
        os.makedirs(os.path.join(seq, "tracking"), exist_ok=True)
        np.savez(os.path.join(seq, "tracking", "flame2023_tracking_v2.npz"), **tracking)


def write_v1_release(root: str, cap: Capture) -> None:
    """The full v1 release unzipped: camera_params/{p}/, sequence_{SEQ}_part-1/{p}/{SEQ}/cam_*.mp4,
    sequence_BACKGROUND_part-1/{p}/BACKGROUND/image_*.jpg."""
    write_calibration(os.path.join(root, "camera_params", P, "camera_params.json"), cap.K[cap.serials[0]], cap.E)
    _videos(os.path.join(root, f"sequence_{SEQ}_part-1", P, SEQ), cap)
    _plates(os.path.join(root, "sequence_BACKGROUND_part-1", P, "BACKGROUND"), cap)


def write_v1_participant(root: str, cap: Capture) -> None:
    """participant_{p}/{p}/{SEQ}/cam_*.mp4 with participant_{p}/camera_params/{p}/camera_params.json."""
    base = os.path.join(root, f"participant_{P}")
    write_calibration(os.path.join(base, "camera_params", P, "camera_params.json"), cap.K[cap.serials[0]], cap.E)
    _videos(os.path.join(base, P, SEQ), cap)
    _plates(os.path.join(base, P, "BACKGROUND"), cap)


def write_v1_merged(root: str, cap: Capture) -> None:
    """VHAP's form: {p}/{SEQ}/cam_*.mp4, {p}/BACKGROUND/image_*.jpg, camera_params/{p}/camera_params.json."""
    write_calibration(os.path.join(root, "camera_params", P, "camera_params.json"), cap.K[cap.serials[0]], cap.E)
    _videos(os.path.join(root, P, SEQ), cap)
    _plates(os.path.join(root, P, "BACKGROUND"), cap)


def write_v1_paper(root: str, cap: Capture) -> None:
    """The paper subset: {p}/camera_params.json with the intrinsics of the full resolution, PNG frames at
    half of it in frame_{t:05d}/images-2x-73fps/, mattes in alpha_map-73fps/."""
    full = scale_intrinsics(cap.K[cap.serials[0]], 2.0)
    write_calibration(os.path.join(root, P, "camera_params.json"), full, cap.E)
    for s in cap.serials:
        for t, (f, a) in enumerate(zip(cap.frames[s], cap.mattes[s])):
            frame = os.path.join(root, P, "sequences", SEQ, f"frame_{t:05d}")
            write_image(os.path.join(frame, "images-2x-73fps", f"cam_{s}.png"), f)
            os.makedirs(os.path.join(frame, "alpha_map-73fps"), exist_ok=True)
            cv2.imwrite(os.path.join(frame, "alpha_map-73fps", f"cam_{s}.png"), a)


def write_processed(root: str, cap: Capture) -> None:
    """DiffusionAvatars' release: calibration/calibration_result.json (Rodrigues rs, ts; fx fy cx cy) and
    config.json (serials, image_size), sequences/{SEQ}/timesteps/frame_{t:05d}/images/cam_*.png."""
    serials = cap.serials
    rs = [cv2.Rodrigues(cap.E[s][:3, :3])[0].reshape(3).tolist() for s in serials]
    ts = [cap.E[s][:3, 3].tolist() for s in serials]
    K = cap.K[serials[0]]
    intrinsics = [{"fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2]}]
    calib = os.path.join(root, P, "calibration")
    os.makedirs(calib, exist_ok=True)
    with open(os.path.join(calib, "calibration_result.json"), "w") as f:
        json.dump({"params_result": {"rs": rs, "ts": ts, "intrinsics": intrinsics}, "runtime": 1.0,
                   "cost_history": [], "n_residuals": 0}, f)
    h, w = cap.frames[serials[0]][0].shape[:2]
    with open(os.path.join(calib, "config.json"), "w") as f:
        json.dump({"serials": serials, "image_size": [w, h], "optimizer_per_camera_intrinsics": False}, f)
    for s in serials:
        for t, frame in enumerate(cap.frames[s]):
            write_image(os.path.join(root, P, "sequences", SEQ, "timesteps", f"frame_{t:05d}", "images",
                                     f"cam_{s}.png"), frame)


WRITERS = {"v2": write_v2, "v2-benchmark": write_v2_benchmark, "v1-release": write_v1_release,
           "v1-participant": write_v1_participant, "v1-merged": write_v1_merged, "v1-paper": write_v1_paper,
           "processed": write_processed}
