"""Small head scans for the scan readers' checks: the writers of datasets/scans/synthetic.py (the NPHM and
FaceVerse layouts and formats) and plain geometry whose colours encode the surface position."""

from __future__ import annotations

import numpy as np

from datasets.scans.synthetic import Scan, write_faceverse, write_nphm  # noqa: F401 - re-exported for the tests
from datasets.synthhead.proxies import ellipsoid

MARKER = np.array([255, 0, 0], np.uint8)


def marker_head(centre, scale: float, seed: int = 0) -> tuple[Scan, np.ndarray]:
    """An ellipsoid head (metres x scale, around `centre`) coloured by position, and a small red patch on its
    front; returns (scan, the patch centre [3])."""
    rng = np.random.default_rng(seed)
    v, f = ellipsoid((0.0, 0.0, 0.0), (0.08, 0.11, 0.1), 14, 20)
    v = v + rng.normal(0, 0.002, v.shape)  # no vertex on a pixel centre's edge by construction
    colors = np.clip(90 + v / 0.11 * 120, 0, 250).astype(np.uint8)
    front = int(np.argmax(v[:, 2]))
    patch = np.linalg.norm(v - v[front], axis=1) < 0.02
    colors[patch] = MARKER
    centre = np.asarray(centre, np.float64)
    return Scan(v * scale + centre, f, colors), v[patch].mean(0) * scale + centre


def vertex_to_texture(scan: Scan, size: int = 256) -> Scan:
    """The same scan textured: every vertex gets its own 4x4 block of the texture in its colour (uniform
    triangles stay uniform under bilinear sampling only in the blocks' centres; the checks use the marker)."""
    n = len(scan.verts)
    per_row = size // 4
    rows = -(-n // per_row)
    tex = np.zeros((max(size, rows * 4), size, 3), np.uint8)
    idx = np.arange(n)
    bx, by = (idx % per_row) * 4, (idx // per_row) * 4
    for i in range(n):
        tex[by[i]:by[i] + 4, bx[i]:bx[i] + 4] = scan.colors[i]
    H, W = tex.shape[:2]
    uv = np.stack([(bx + 2) / W, 1 - (by + 2) / H], 1)
    return Scan(scan.verts, scan.faces, uv=uv, texture=tex)




def ramp_head(centre, scale: float, textured: bool, seed: int = 0) -> tuple[Scan, np.ndarray]:
    """An ellipsoid head whose colour encodes the position: red grows with x, green with y (linearly over the
    head, through the vertex colours or through a ramp texture and planar UVs), so a rendered pixel says which
    point of the surface it shows. Returns (scan, [2, 2] the x and y range the ramp spans)."""
    rng = np.random.default_rng(seed)
    v, f = ellipsoid((0.0, 0.0, 0.0), (0.08, 0.11, 0.1), 14, 20)
    v = (v + rng.normal(0, 0.0005, v.shape)) * scale + np.asarray(centre, np.float64)
    span = np.stack([v[:, :2].min(0), v[:, :2].max(0)], 1)  # [[x0, x1], [y0, y1]]
    t = (v[:, :2] - span[:, 0]) / (span[:, 1] - span[:, 0])  # [N, 2] in [0, 1]
    if not textured:
        colors = np.concatenate([np.round(t * 255), np.full((len(v), 1), 128)], 1).astype(np.uint8)
        return Scan(v, f, colors), span
    # texel (column i, row j from the top) holds red i, green 255 - j: u = (red + 0.5) / 256, v likewise
    i = np.arange(256)
    tex = np.zeros((256, 256, 3), np.uint8)
    tex[..., 0] = i[None, :]
    tex[..., 1] = (255 - i)[:, None]
    tex[..., 2] = 128
    return Scan(v, f, uv=0.05 + 0.9 * t, texture=tex), span


def decode_ramp(rgb: np.ndarray, span: np.ndarray, textured: bool) -> np.ndarray:
    """[..., 3] rendered colours -> [..., 2] the (x, y) of the surface point they show."""
    c = rgb[..., :2].astype(np.float64)
    t = ((c + 0.5) / 256 - 0.05) / 0.9 if textured else c / 255
    return span[:, 0] + t * (span[:, 1] - span[:, 0])
