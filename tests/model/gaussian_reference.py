"""Brute-force Gaussian splatting for tests: every pixel against every Gaussian, one camera at a time,
Gaussians composited one by one in depth order. Independent of model/render/gaussians.py (no tiles, no
cumprod) but with the same rules: pixel centres at integer coordinates, EWA projection with the J clamp
and eps2d dilation, cut at Mahalanobis distance 3, alpha = min(0.999, o * exp(-q/2)), skip alpha < 1/255,
stop at the first Gaussian that would leave T <= 1e-4 (not composited), cull depth <= near."""

from __future__ import annotations

import torch


def _rotation(q):
    q = q / q.norm()
    w, x, y, z = q
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)]),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)]),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]),
        ]
    )


def dense_reference(means, quats, scales, opacities, colors, K, world_to_cam, height, width, *, tile_size=16,
                    background=None, near=0.01, eps2d=0.3, max_pairs=1 << 22):
    del tile_size, max_pairs  # same signature as rasterize_gaussians; no tiles here
    C, N, D = K.shape[0], means.shape[0], colors.shape[-1]
    ys, xs = torch.meshgrid(torch.arange(height, dtype=means.dtype), torch.arange(width, dtype=means.dtype),
                            indexing="ij")
    images, alphas = [], []
    for c in range(C):
        cols = colors[c] if colors.dim() == 3 else colors
        Rw, t = world_to_cam[c, :3, :3], world_to_cam[c, :3, 3]
        fx, fy, cx, cy, skew = K[c, 0, 0], K[c, 1, 1], K[c, 0, 2], K[c, 1, 2], K[c, 0, 1]
        depth = [(Rw @ means[n] + t)[2].item() for n in range(N)]
        order = sorted(range(N), key=lambda n: depth[n])
        image = torch.zeros(height, width, D, dtype=means.dtype)
        T = torch.ones(height, width, dtype=means.dtype)
        done = torch.zeros(height, width, dtype=torch.bool)
        for n in order:
            p = Rw @ means[n] + t
            if p[2] <= near:
                continue
            x, y, z = p
            u, v = x / z, y / z
            mu_x = fx * u + skew * v + cx
            mu_y = fy * v + cy
            u_lo, u_hi = -(cx + 0.5) / fx - 0.15 * width / fx, (width - 0.5 - cx) / fx + 0.15 * width / fx
            v_lo, v_hi = -(cy + 0.5) / fy - 0.15 * height / fy, (height - 0.5 - cy) / fy + 0.15 * height / fy
            uc, vc = u.clamp(u_lo, u_hi), v.clamp(v_lo, v_hi)
            zero = torch.zeros((), dtype=means.dtype)
            Jn = torch.stack([torch.stack([1 / z, zero, -uc / z]), torch.stack([zero, 1 / z, -vc / z])])
            J = K[c, :2, :2] @ Jn
            R = _rotation(quats[n])
            S = torch.diag(scales[n])
            cov3 = R @ S @ S @ R.T
            cov2 = J @ Rw @ cov3 @ Rw.T @ J.T + eps2d * torch.eye(2, dtype=means.dtype)
            inv = torch.linalg.inv(cov2)
            dx, dy = xs - mu_x, ys - mu_y
            q = inv[0, 0] * dx * dx + (inv[0, 1] + inv[1, 0]) * dx * dy + inv[1, 1] * dy * dy
            alpha = torch.clamp(opacities[n] * torch.exp(-0.5 * q), max=0.999)
            considered = (q <= 9.0) & (alpha >= 1.0 / 255.0) & ~done
            next_T = T * (1 - alpha)
            composite = considered & (next_T > 1e-4)
            done = done | (considered & ~composite)
            image = image + torch.where(composite, alpha * T, zero)[..., None] * cols[n]
            T = torch.where(composite, next_T, T)
        if background is not None:
            image = image + T[..., None] * background
        images.append(image)
        alphas.append(1 - T)
    return torch.stack(images), torch.stack(alphas)
