"""Differentiable 3D Gaussian splatting in pure PyTorch (CPU or any device), batched over cameras.

    means2d, conics, depths, radii = project_gaussians(means, quats, scales, K, world_to_cam)
    image, alpha = rasterize_gaussians(means, quats, scales, opacities, colors, K, world_to_cam, H, W)

This is the reference path of the splatting renderer: plain torch ops, gradients through autograd to
means, quats, scales, opacities and colours. It follows 3DGS / gsplat 1.5.3 (`rasterize_to_pixels`).

Conventions (as in model/render/mesh.py):
    - OpenCV cameras: K [C,3,3] intrinsics, world_to_cam [C,4,4] (x right, y down, z forward).
    - Pixel (x, y) has its centre at the integer coordinates (x, y); gsplat puts it at (x+0.5, y+0.5),
      so a gsplat backend must be given cx + 0.5, cy + 0.5 to reproduce these images.
    - means [N,3], quats [N,4] (w,x,y,z; normalised here), scales [N,3] (linear std devs, not log),
      opacities [N] in [0,1], colors [N,D] or [C,N,D] (any D).
    - Outputs: image [C,H,W,D], alpha [C,H,W] (alpha = 1 - final transmittance).

Projection (EWA): cov3d = R S S^T R^T, cov_cam = W cov3d W^T, cov2d = J cov_cam J^T + eps2d * I with J the
Jacobian of the pinhole projection (camera-space x/z, y/z clamped to 1.3x the field of view when forming J,
as gsplat does); eps2d = 0.3 is gsplat's default low-pass dilation. Gaussians with depth <= near are culled
(radius 0), as are those whose footprint lies off the image.

Footprint rule (shared with the dense test reference): a Gaussian contributes to a pixel only if the pixel
centre lies inside its 3-sigma ellipse, d^T conic d <= 9. That ellipse lies inside the disc of radius
radius = ceil(3 * sqrt(largest eigenvalue of cov2d)), whose bounding square decides which tiles the Gaussian
is listed in, so tiling changes nothing: the result equals brute force over all pixels and Gaussians.

Compositing (gsplat semantics), front to back by camera-space depth:
    alpha_i = min(ALPHA_MAX, opacity_i * exp(-0.5 d^T conic_i d)); skipped if alpha_i < 1/255;
    the pixel stops at the first Gaussian whose composite would leave T * (1 - alpha_i) <= 1e-4
    (that Gaussian is not composited); colour = sum_i c_i alpha_i T_i + T_final * background.
ALPHA_MAX is 0.999 as in gsplat 1.5.3's kernel (the original 3DGS used 0.99).

Memory: (tile, Gaussian) pairs are sorted by (camera, tile, depth); tiles are processed in groups, padded to a
common list length, and long lists in segments (transmittance carried between segments) so that at most
`max_pairs` (pixel, Gaussian) evaluations exist at once (at least tile_size^2). Within a step the
transmittance is an exclusive cumprod of (1 - alpha) with skipped entries set to alpha = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

ALPHA_MAX = 0.999
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4
SIGMA_CUT = 3.0  # footprint: Mahalanobis distance <= 3


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """[..., 4] (w, x, y, z), any norm -> [..., 3, 3] rotation matrices."""
    w, x, y, z = torch.unbind(quats / quats.norm(dim=-1, keepdim=True), dim=-1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )
    return R.reshape(quats.shape[:-1] + (3, 3))


def _project(means, quats, scales, K, world_to_cam, width, height, near, eps2d):
    """-> means2d [C,N,2], cov2d [C,N,2,2], depths [C,N]."""
    Rq = quat_to_rotmat(quats)
    M = Rq * scales[:, None, :]  # R diag(s)
    cov3d = M @ M.transpose(-1, -2)  # [N,3,3]
    Wr, t = world_to_cam[:, :3, :3], world_to_cam[:, :3, 3]
    p = torch.einsum("cij,nj->cni", Wr, means) + t[:, None, :]  # [C,N,3]
    cov_c = Wr[:, None] @ cov3d[None] @ Wr[:, None].transpose(-1, -2)  # [C,N,3,3]
    x, y, z = p.unbind(-1)
    safe_z = torch.where(z > near, z, torch.ones_like(z))  # culled ones are dropped later
    u, v = x / safe_z, y / safe_z
    K2 = K[:, :2, :2]  # [C,2,2]
    means2d = torch.einsum("cij,cnj->cni", K2, torch.stack([u, v], -1)) + K[:, None, :2, 2]
    # gsplat clamps the ray direction used in J to 1.3x the field of view (stability for off-screen Gaussians);
    # the image spans [-0.5, W - 0.5] here.
    fx, fy, cx, cy = K[:, 0, 0, None], K[:, 1, 1, None], K[:, 0, 2, None], K[:, 1, 2, None]
    mx, my = 0.15 * width / fx, 0.15 * height / fy
    uc = torch.minimum(torch.maximum(u, -(cx + 0.5) / fx - mx), (width - 0.5 - cx) / fx + mx)
    vc = torch.minimum(torch.maximum(v, -(cy + 0.5) / fy - my), (height - 0.5 - cy) / fy + my)
    zero = torch.zeros_like(u)
    Jn = torch.stack([1 / safe_z, zero, -uc / safe_z, zero, 1 / safe_z, -vc / safe_z], -1).reshape(p.shape[:2] + (2, 3))
    J = K2[:, None] @ Jn  # [C,N,2,3]
    cov2d = J @ cov_c @ J.transpose(-1, -2)
    cov2d = cov2d + eps2d * torch.eye(2, dtype=cov2d.dtype, device=cov2d.device)
    return means2d, cov2d, z


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    K: Tensor,
    world_to_cam: Tensor,
    *,
    near: float = 0.01,
    eps2d: float = 0.3,
    width: int | None = None,
    height: int | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EWA projection. -> means2d [C,N,2], conics [C,N,3] (a, b, c of the inverse 2D covariance
    [[a, b], [b, c]]), depths [C,N], radii [C,N] int32 (0 = culled: behind `near`, or, when width and height
    are given, footprint off the image). Without width/height the J clamp uses the image implied by
    the principal point (W = 2 cx + 1, H = 2 cy + 1)."""
    if width is None:
        width = int(round(float(2 * K[0, 0, 2] + 1)))
    if height is None:
        height = int(round(float(2 * K[0, 1, 2] + 1)))
    means2d, cov2d, depths = _project(means, quats, scales, K, world_to_cam, width, height, near, eps2d)
    a, b, c = cov2d[..., 0, 0], 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0]), cov2d[..., 1, 1]
    det = (a * c - b * b).clamp_min(1e-12)
    conics = torch.stack([c / det, -b / det, a / det], -1)
    with torch.no_grad():
        lam = 0.5 * (a + c) + torch.sqrt((0.5 * (a - c)) ** 2 + b * b)
        radius = torch.ceil(SIGMA_CUT * torch.sqrt(lam))
        valid = (depths > near) & (a * c - b * b > 0)
        mx, my = means2d[..., 0], means2d[..., 1]
        valid &= (mx + radius >= 0) & (mx - radius <= width - 1) & (my + radius >= 0) & (my - radius <= height - 1)
        radii = torch.where(valid, radius, torch.zeros_like(radius)).to(torch.int32)
    return means2d, conics, depths, radii


@dataclass
class TileBins:
    """The (tile, Gaussian) pairs of a splat: for every tile of every camera its Gaussians, depth-sorted."""

    pair_gid: Tensor  # [M] flat (camera, Gaussian) index of each pair, grouped by tile, front to back
    counts: Tensor  # [C*th*tw] pairs per tile
    offsets: Tensor  # [C*th*tw] first pair of each tile
    tiles: Tensor  # [n] the tiles with pairs, most pairs first (the order they are composited in)
    tw: int  # tiles across
    th: int  # tiles down


def bin_tiles(means2d: Tensor, depths: Tensor, radii: Tensor, width: int, height: int, tile_size: int) -> TileBins:
    """Each visible Gaussian (radii > 0) of means2d [C,N,2] against every tile its 3-sigma square overlaps,
    the pairs sorted by (camera, tile, depth)."""
    C, N = depths.shape
    dev, ts = depths.device, tile_size
    tw, th = math.ceil(width / ts), math.ceil(height / ts)
    with torch.no_grad():
        order = torch.argsort(depths.masked_fill(radii == 0, float("inf")), dim=1, stable=True)  # [C,N]
        r = radii.gather(1, order).reshape(-1).to(means2d.dtype)
        gid = (order + torch.arange(C, device=dev)[:, None] * N).reshape(-1)  # flat (c, n), depth-sorted per c
        cam = torch.arange(C, device=dev).repeat_interleave(N)
        keep = r > 0
        gid, cam, r = gid[keep], cam[keep], r[keep]
        mxy = means2d.detach().reshape(C * N, 2)[gid]
        x0 = torch.floor((mxy[:, 0] - r) / ts).clamp(0, tw - 1).long()
        x1 = torch.floor((mxy[:, 0] + r) / ts).clamp(0, tw - 1).long()
        y0 = torch.floor((mxy[:, 1] - r) / ts).clamp(0, th - 1).long()
        y1 = torch.floor((mxy[:, 1] + r) / ts).clamp(0, th - 1).long()
        nx, ny = x1 - x0 + 1, y1 - y0 + 1
        cnt = nx * ny
        pg = torch.repeat_interleave(torch.arange(gid.numel(), device=dev), cnt)
        local = torch.arange(pg.numel(), device=dev) - torch.repeat_interleave(torch.cumsum(cnt, 0) - cnt, cnt)
        tx = x0[pg] + local % nx[pg]
        ty = y0[pg] + local // nx[pg]
        tile_key = (cam[pg] * th + ty) * tw + tx
        tile_key, perm = torch.sort(tile_key, stable=True)
        counts = torch.bincount(tile_key, minlength=C * tw * th)
        tiles = torch.nonzero(counts).squeeze(1)
        tiles = tiles[torch.argsort(counts[tiles], descending=True, stable=True)]
    return TileBins(gid[pg[perm]], counts, torch.cumsum(counts, 0) - counts, tiles, tw, th)


def composite_tiles(grp: Tensor, bins: TileBins, m2: Tensor, con: Tensor, opac: Tensor, cols: Tensor, width: int,
                    height: int, tile_size: int, seg: int) -> tuple[Tensor, Tensor, Tensor]:
    """Front-to-back alpha compositing of a group of tiles grp [k] (each pixel its Gaussians `seg` at a
    time), with gsplat's rules. m2 [C*N,2], con [C*N,3], opac [C*N], cols [C*N,D] flat over (camera,
    Gaussian). -> (flat pixel index [M], colour [M,D], transmittance [M]) of the tiles' pixels in the image."""
    ts, tw, th = tile_size, bins.tw, bins.th
    P, D, dt, dev = ts * ts, cols.shape[-1], m2.dtype, m2.device
    with torch.no_grad():
        lp = torch.arange(P, device=dev)
        g_cam = grp // (tw * th)
        g_ty = (grp % (tw * th)) // tw
        g_tx = grp % tw
        px = g_tx[:, None] * ts + lp % ts  # [k,P]
        py = g_ty[:, None] * ts + lp // ts
        pix_ok = (px < width) & (py < height)
        pix = (g_cam[:, None] * height + py) * width + px
        g_off, g_cnt = bins.offsets[grp], bins.counts[grp]
    L = int(g_cnt.max())
    pxy = torch.stack([px, py], -1).to(dt)  # [k,P,2]
    T = torch.ones(grp.numel(), P, dtype=dt, device=dev)
    done = torch.zeros(grp.numel(), P, dtype=torch.bool, device=dev)
    acc = torch.zeros(grp.numel(), P, D, dtype=dt, device=dev)
    for s in range(0, L, seg):
        with torch.no_grad():
            j = s + torch.arange(seg, device=dev)
            ok = j[None, :] < g_cnt[:, None]  # [k,seg]
            idx = torch.where(ok, g_off[:, None] + j[None, :], torch.zeros_like(j[None, :]))
            g = torch.where(ok, bins.pair_gid[idx], torch.zeros_like(idx))
        d = pxy[:, :, None, :] - m2[g][:, None, :, :]  # [k,P,seg,2]
        cg = con[g][:, None]  # [k,1,seg,3]
        q = cg[..., 0] * d[..., 0] ** 2 + 2 * cg[..., 1] * d[..., 0] * d[..., 1] + cg[..., 2] * d[..., 1] ** 2
        a = (opac[g][:, None, :] * torch.exp(-0.5 * q)).clamp_max(ALPHA_MAX)
        with torch.no_grad():
            use = ok[:, None, :] & (q <= SIGMA_CUT**2) & (a >= ALPHA_MIN)
        a = torch.where(use, a, torch.zeros_like(a))
        with torch.no_grad():
            T_after = T[..., None] * torch.cumprod(1 - a, dim=-1)  # [k,P,seg]
            inc = ~done[..., None] & (T_after > T_MIN)
            done = done | (use & ~inc).any(-1)
        a = torch.where(inc, a, torch.zeros_like(a))
        T_before = T[..., None] * torch.cumprod(torch.cat([torch.ones_like(a[..., :1]), 1 - a[..., :-1]], -1), -1)
        acc = acc + torch.einsum("kps,ksd->kpd", a * T_before, cols[g])
        T = T * torch.prod(1 - a, dim=-1)
    return pix[pix_ok], acc[pix_ok], T[pix_ok]


def rasterize_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    K: Tensor,
    world_to_cam: Tensor,
    height: int,
    width: int,
    *,
    tile_size: int = 16,
    background: Tensor | None = None,
    near: float = 0.01,
    eps2d: float = 0.3,
    max_pairs: int = 1 << 22,
) -> tuple[Tensor, Tensor]:
    """Tile-based front-to-back splatting. -> image [C,H,W,D], alpha [C,H,W]. See the module docstring.
    Tiles are composited in groups whose (pixel, Gaussian) work stays within `max_pairs`."""
    C, N = K.shape[0], means.shape[0]
    D = colors.shape[-1]
    dev, dt = means.device, means.dtype
    means2d, conics, depths, radii = project_gaussians(
        means, quats, scales, K, world_to_cam, near=near, eps2d=eps2d, width=width, height=height
    )
    cols = colors.expand(C, N, D).reshape(C * N, D)
    opac = opacities.expand(C, N).reshape(C * N)
    m2 = means2d.reshape(C * N, 2)
    con = conics.reshape(C * N, 3)
    bins = bin_tiles(means2d, depths, radii, width, height, tile_size)
    P = tile_size * tile_size
    counts_l, tiles_l = bins.counts.tolist(), bins.tiles.tolist()
    budget = max(max_pairs, P)
    pix_parts, col_parts, T_parts = [], [], []
    i = 0
    while i < len(tiles_l):  # tiles sorted by pair count: the first of a group is its longest
        L = counts_l[tiles_l[i]]
        seg = min(L, max(1, budget // P))
        k = max(1, budget // (P * seg))
        pix, acc, T = composite_tiles(bins.tiles[i:i + k], bins, m2, con, opac, cols, width, height, tile_size, seg)
        i += k
        pix_parts.append(pix)
        col_parts.append(acc)
        T_parts.append(T)

    total = C * height * width
    image = torch.zeros(total, D, dtype=dt, device=dev)
    T_img = torch.ones(total, dtype=dt, device=dev)
    if pix_parts:
        pix_all = torch.cat(pix_parts)
        image = image.index_put((pix_all,), torch.cat(col_parts))
        T_img = T_img.index_put((pix_all,), torch.cat(T_parts))
    if background is not None:
        image = image + T_img[:, None] * background.to(dt)
    return image.view(C, height, width, D), (1 - T_img).view(C, height, width)
