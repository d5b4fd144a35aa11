"""Unlit rendering of a scan from every camera of a rig, with the project's mesh rasterizer
(model/render/mesh.py: pure PyTorch on the CPU; nvdiffrast visibility on CUDA when installed).

Lighting: none. The scans' colours are what the scanner captured (light baked in), so a pixel takes the
colour of the visible surface as stored: the vertex colours interpolated with the perspective-correct
barycentrics of the pixel centre, or the texture map sampled bilinearly at the interpolated UV (a map
far larger than the frames is first shrunk with an area filter, datasets/scans/mesh.py). Alpha is the
coverage of the pixel centre (255 covered, 0 not): no antialiasing, the same test as the rasterizer's
visibility. Both faces of every triangle are drawn (scans are not reliably closed or consistently wound).
The background is black.

`rendered_views(url, rig)` keeps the last frames it rendered (all views of a scan at once, batched over
cameras) in a small per-process cache, so that the per-view sources of a clip share one rendering.
"""

from __future__ import annotations

from collections import OrderedDict
from threading import Lock

import numpy as np
import torch

from datasets.scans.mesh import ScanMesh, load_scan
from model.render.mesh import interpolate_covered, rasterize

CACHE_FRAMES = 2  # scans whose renders are kept per process (ingest goes frame by frame, all views)
CAMERA_BATCH = 8  # cameras rasterized together (bounds the z-buffer memory)
_cache: OrderedDict = OrderedDict()
_lock = Lock()


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _sample_texture(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """texture uint8 [Ht, Wt, 3]; uv [M, 2] (v = 0 at the bottom row) -> [M, 3] float in [0, 1], bilinear,
    clamped at the borders; texel centres at (i + 0.5) / size."""
    Ht, Wt = texture.shape[:2]
    x = (uv[:, 0] * Wt - 0.5).clamp(0, Wt - 1)
    y = ((1 - uv[:, 1]) * Ht - 0.5).clamp(0, Ht - 1)
    x0, y0 = x.floor().long(), y.floor().long()
    x1, y1 = (x0 + 1).clamp(max=Wt - 1), (y0 + 1).clamp(max=Ht - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    t = texture.float()
    top = t[y0, x0] * (1 - fx) + t[y0, x1] * fx
    bottom = t[y1, x0] * (1 - fx) + t[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy) / 255.0


@torch.no_grad()
def render_scan(mesh: ScanMesh, K: np.ndarray, world_to_cam: np.ndarray, size: int, *,
                batch: int = CAMERA_BATCH, backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """K [C, 3, 3], world_to_cam [C, 4, 4] (OpenCV, scan coordinates) -> (rgb uint8 [C, size, size, 3],
    alpha uint8 [C, size, size])."""
    device = _device() if backend == "auto" else torch.device("cpu")
    verts = torch.from_numpy(mesh.verts).to(device)
    faces = torch.from_numpy(mesh.faces).to(device)
    if mesh.textured:
        attrs = torch.from_numpy(mesh.uv).to(device)
        texture = torch.from_numpy(mesh.texture).to(device)
    else:
        attrs = torch.from_numpy(mesh.colors).to(device)
    C = len(K)
    rgb = np.zeros((C, size, size, 3), np.uint8)
    alpha = np.zeros((C, size, size), np.uint8)
    for c0 in range(0, C, batch):
        k = torch.as_tensor(np.asarray(K[c0:c0 + batch]), dtype=torch.float32, device=device)
        e = torch.as_tensor(np.asarray(world_to_cam[c0:c0 + batch]), dtype=torch.float32, device=device)
        rast = rasterize(verts, faces, k, e, size, size, backend=backend if backend != "auto" else "auto")
        values = interpolate_covered(attrs, faces, rast)  # [M, 2] uv or [M, 3] colour
        color = _sample_texture(texture, values) if mesh.textured else values
        n = k.shape[0]
        out = torch.zeros((n * size * size, 3), dtype=torch.uint8, device=device)
        out[rast.pixels] = (color.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
        rgb[c0:c0 + n] = out.view(n, size, size, 3).cpu().numpy()
        alpha[c0:c0 + n] = rast.mask.cpu().numpy().astype(np.uint8) * 255
    return rgb, alpha


def rendered_views(url: str, K: tuple, world_to_cam: tuple, size: int) -> tuple[np.ndarray, np.ndarray]:
    """All views of one scan (cached: the last CACHE_FRAMES scans of this process)."""
    key = (url, K, world_to_cam, size)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    mesh = load_scan(url, max_texture=4 * size)
    result = render_scan(mesh, np.asarray(K, np.float64), np.asarray(world_to_cam, np.float64), size)
    with _lock:
        _cache[key] = result
        while len(_cache) > CACHE_FRAMES:
            _cache.popitem(last=False)
    return result
