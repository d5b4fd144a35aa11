"""A marker capture: coloured 3D points on a moving head-sized ellipsoid over a textured backdrop,
seen by a NeRSemble-like rig and written in the v2 layout. Every marker is drawn as a Gaussian blob
centred exactly on its projection, so tests can check cameras to a fraction of a pixel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from datasets.cameras import project
from datasets.capture.rig import Camera, make_rig
from datasets.capture.writer import NersembleV2Writer


@dataclass
class MarkerScene:
    points: np.ndarray  # [N, 3] canonical positions (metres, around the origin)
    colors: np.ndarray  # [N, 3] uint8

    @staticmethod
    def make(n: int = 48, seed: int = 0) -> "MarkerScene":
        rng = np.random.default_rng(seed)
        # points on the front half of a head-sized ellipsoid
        u = rng.uniform(-1.2, 1.2, n)
        v = rng.uniform(-1.0, 1.0, n)
        pts = np.stack([0.08 * np.sin(u) * np.cos(v), 0.11 * np.sin(v), 0.09 * np.cos(u) * np.cos(v)], 1)
        colors = rng.integers(60, 256, (n, 3)).astype(np.uint8)
        return MarkerScene(pts, colors)

    def at(self, frame: int, n_frames: int) -> np.ndarray:
        """[N, 3] world positions at a frame: a slow nod and turn."""
        a = 2 * np.pi * frame / max(1, n_frames)
        yaw, pitch = 0.35 * np.sin(a), 0.15 * np.sin(2 * a)
        cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
        R = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) @ np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        return self.points @ R.T + np.array([0.01 * np.sin(a), 0.005 * np.cos(a), 0.0])


def backdrop(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth textured background, uint8 [H, W, 3]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        fx, fy, ph = rng.uniform(0.005, 0.03, 2).tolist() + [rng.uniform(0, 6.28)]
        img[..., c] = 90 + 40 * np.sin(x * fx + ph) * np.cos(y * fy)
    return np.clip(img, 0, 255).astype(np.uint8)


def draw_markers(background: np.ndarray, uv: np.ndarray, colors: np.ndarray, sigma: float) -> np.ndarray:
    """Blend Gaussian blobs of `colors` centred at `uv` [N, 2] (pixel centres at integers)."""
    img = background.astype(np.float32)
    h, w = img.shape[:2]
    r = int(np.ceil(3.5 * sigma))
    for (u, v), col in zip(uv, colors.astype(np.float32)):
        x0, x1 = max(int(np.floor(u)) - r, 0), min(int(np.ceil(u)) + r + 1, w)
        y0, y1 = max(int(np.floor(v)) - r, 0), min(int(np.ceil(v)) + r + 1, h)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        a = np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * sigma**2))[..., None]
        img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - a) + col * a
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_view(scene: MarkerScene, cam: Camera, frame: int, n_frames: int, background: np.ndarray,
                sigma: float) -> np.ndarray:
    pts = scene.at(frame, n_frames)
    return draw_markers(background, project(pts, cam.K, cam.world_to_cam), scene.colors, sigma)


def write_marker_capture(root: str, participants: int = 1, sequences: int = 1, n_frames: int = 8,
                         width: int = 560, height: int = 800, seed: int = 0, sigma: float | None = None,
                         lossless: bool = False, rig: list[Camera] | None = None, scene: MarkerScene | None = None,
                         black_background: bool = False) -> dict:
    """Write a NeRSemble v2 capture of the marker scene; returns {participant: {"rig", "scene"}}."""
    rig = rig or make_rig(width, height)
    sigma = sigma or max(1.5, height / 250)
    writer = NersembleV2Writer(root)
    out = {}
    for p in range(participants):
        pid = f"{p + 1:03d}"
        p_scene = scene or MarkerScene.make(seed=seed + p)
        writer.calibration(pid, rig[0].K, {c.serial: c.world_to_cam for c in rig})
        plates = {c.serial: np.zeros((c.height, c.width, 3), np.uint8) if black_background
                  else backdrop(c.width, c.height, seed * 1000 + p * 100 + i) for i, c in enumerate(rig)}
        for c in rig:
            writer.background(pid, c.serial, plates[c.serial], quality=98)
        for s in range(sequences):
            seq = f"EXP-{s + 1}-markers"
            for c in rig:
                frames = (render_view(p_scene, c, t, n_frames, plates[c.serial], sigma) for t in range(n_frames))
                writer.video(pid, seq, c.serial, frames, lossless=lossless)
        out[pid] = {"rig": rig, "scene": p_scene}
    os.makedirs(root, exist_ok=True)
    return out
