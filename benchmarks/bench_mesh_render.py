"""Mesh rasterizer benchmark: forward (visibility + 32-channel interpolation) and the soft silhouette
with its backward pass, for a batch of 8 views (2 subjects x 4 views, a stage-1 batch), against a
dense brute-force rasterizer (every pixel against every triangle) on the size both can run.

    python benchmarks/bench_mesh_render.py [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import timed  # noqa: E402
from datasets.capture.rig import make_rig  # noqa: E402
from datasets.synthhead.proxies import uv_sphere  # noqa: E402
from model.render.mesh import interpolate, project, rasterize, soft_silhouette  # noqa: E402


def head_like_mesh(n_faces: int, device: str):
    n_lat = int(round(np.sqrt(n_faces / 4)))  # uv_sphere(n, 2n) has 4 n^2 faces
    v, f = uv_sphere(n_lat, 2 * n_lat)
    v = v * np.array([0.09, 0.12, 0.1])
    return torch.tensor(v, dtype=torch.float32, device=device), torch.tensor(f, device=device)


def cameras(size: int, device: str):
    rig = make_rig(size, size, view_height=0.3)[::2]
    K = torch.tensor(np.stack([c.K for c in rig]), dtype=torch.float32, device=device)
    E = torch.tensor(np.stack([c.world_to_cam for c in rig]), dtype=torch.float32, device=device)
    return K, E


def dense_face_ids(verts, faces, K, E, H, W):
    """Baseline: test every pixel centre against every triangle, keep the nearest (chunked over faces)."""
    xy, z = project(verts, K, E)
    ys, xs = torch.meshgrid(torch.arange(H, device=verts.device), torch.arange(W, device=verts.device), indexing="ij")
    p = torch.stack([xs, ys], -1).reshape(-1, 2).float()
    best = torch.full((K.shape[0], H * W), float("inf"), device=verts.device)
    ids = torch.full((K.shape[0], H * W), -1, dtype=torch.long, device=verts.device)
    for start in range(0, faces.shape[0], 256):
        f = faces[start:start + 256]
        a, b, c = (xy[:, f[:, i]][:, :, None] for i in range(3))  # [C, F, 1, 2]
        za, zb, zc = (z[:, f[:, i]][:, :, None] for i in range(3))
        q = p[None, None]
        area = (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])
        wa = ((b[..., 0] - q[..., 0]) * (c[..., 1] - q[..., 1]) - (b[..., 1] - q[..., 1]) * (c[..., 0] - q[..., 0])) / area
        wb = ((c[..., 0] - q[..., 0]) * (a[..., 1] - q[..., 1]) - (c[..., 1] - q[..., 1]) * (a[..., 0] - q[..., 0])) / area
        wc = 1 - wa - wb
        inside = (wa >= 0) & (wb >= 0) & (wc >= 0)
        depth = 1 / (wa / za + wb / zb + wc / zc)
        depth = torch.where(inside, depth, torch.full_like(depth, float("inf")))
        d, k = depth.min(1)
        better = d < best
        best = torch.where(better, d, best)
        ids = torch.where(better, k + start, ids)
    return ids.view(-1, H, W)



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    dev = args.device
    print(f"device {dev}, torch threads {torch.get_num_threads()}, batch of 8 views")
    sizes = [(128, 20_000), (256, 20_000), (256, 100_000)] + ([(512, 100_000)] if dev == "cuda" else [])
    for size, n in sizes:
        verts, faces = head_like_mesh(n, dev)
        K, E = cameras(size, dev)
        feats = torch.randn(verts.shape[0], 32, device=dev)

        def forward():
            return interpolate(feats, faces, rasterize(verts, faces, K, E, size, size))

        def silhouette():
            v = verts.clone().requires_grad_()
            soft_silhouette(v, faces, K, E, size, size).sum().backward()

        fwd, sil = timed(forward, dev), timed(silhouette, dev)
        print(f"{size:4d} px, {faces.shape[0]:6d} faces: raster + 32-ch interpolate {fwd * 1000:7.1f} ms, "
              f"soft silhouette + backward {sil * 1000:7.1f} ms")
    verts, faces = head_like_mesh(2_000, dev)
    K, E = cameras(128, dev)
    ours = timed(lambda: rasterize(verts, faces, K, E, 128, 128), dev)
    dense_ids = dense_face_ids(verts, faces, K, E, 128, 128)
    dense = timed(lambda: dense_face_ids(verts, faces, K, E, 128, 128), dev, repeat=1)
    same = (dense_ids == rasterize(verts, faces, K, E, 128, 128).face_id).float()
    print(f"visibility, 128 px, {faces.shape[0]} faces, 8 views: fragments {ours * 1000:.1f} ms, dense brute force "
          f"{dense * 1000:.1f} ms -> {dense / ours:.0f}x faster; same face ids on {same.mean() * 100:.2f}% of pixels")


if __name__ == "__main__":
    main()
