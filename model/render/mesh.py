"""Differentiable triangle-mesh rasterization in PyTorch, batched over cameras (OpenCV K and
world_to_cam, pixel centres at integer coordinates).

    rast = rasterize(verts, faces, K, world_to_cam, H, W)      # z-buffered visibility per pixel
    feat = interpolate(attrs, faces, rast)                    # perspective-correct, any channel count
    mask = soft_silhouette(verts, faces, K, world_to_cam, H, W)  # coverage with gradients to vertices

How it works: every triangle's screen bounding box is expanded into a list of candidate (pixel,
triangle) fragments, processed in chunks of at most `max_fragments` (bounded memory); per pixel the
nearest covering fragment wins (z-buffer through scatter-min). Visibility is not differentiable; the
barycentrics of the winning triangle are recomputed with autograd from the projected vertices, so
interpolated attributes carry gradients to attributes and vertex positions. Silhouettes get gradients
from a soft coverage: each triangle within a few sigma of a pixel covers it with probability
sigmoid(-signed distance / sigma), combined as 1 - prod(1 - p) (the soft rasterizer formulation).

The entry points (project, rasterize, interpolate, soft_silhouette) compute in float32 under a caller's bf16
autocast (model/render/precision.py): rounded depths and positions would move edges by pixels.

On CUDA with nvdiffrast importable, `rasterize` takes visibility from nvdiffrast and shares the
differentiable barycentric step; `backend="torch"` forces the pure-PyTorch path.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from model.render.precision import float32_region

_EPS_AREA = 1e-12


@dataclass
class Rasterized:
    """Visibility per pixel; the covered pixels' barycentrics and depth are kept sparse (M pixels)."""

    face_id: Tensor  # [C, H, W] int64, -1 where no triangle covers the pixel centre
    pixels: Tensor  # [M] flat indices (c * H * W + y * W + x) of the covered pixels
    bary_covered: Tensor  # [M, 3] perspective-correct barycentrics of the visible triangle (differentiable)
    depth_covered: Tensor  # [M] camera-space z of the visible surface (differentiable)

    @property
    def mask(self) -> Tensor:
        """[C, H, W] bool: a triangle covers the pixel centre."""
        return self.face_id >= 0

    def _dense(self, values: Tensor, fill: float) -> Tensor:
        C, H, W = self.face_id.shape
        out = torch.full((C * H * W,) + values.shape[1:], fill, dtype=values.dtype, device=values.device)
        return out.index_put((self.pixels,), values).view(C, H, W, *values.shape[1:])

    @property
    def bary(self) -> Tensor:
        """[C, H, W, 3] barycentrics, zero on background."""
        return self._dense(self.bary_covered, 0.0)

    @property
    def depth(self) -> Tensor:
        """[C, H, W] depth, +inf on background."""
        return self._dense(self.depth_covered, float("inf"))


def _to_camera(verts: Tensor, world_to_cam: Tensor) -> Tensor:
    """verts: [N, 3] or [C, N, 3] -> [C, N, 3] camera coordinates."""
    if verts.dim() == 2:
        verts = verts.unsqueeze(0).expand(world_to_cam.shape[0], -1, -1)
    return torch.einsum("cij,cnj->cni", world_to_cam[:, :3, :3], verts) + world_to_cam[:, None, :3, 3]


@float32_region
def project(verts: Tensor, K: Tensor, world_to_cam: Tensor) -> tuple[Tensor, Tensor]:
    """verts: [N, 3] or [C, N, 3] world; K: [C, 3, 3]; world_to_cam: [C, 4, 4]
    -> (xy [C, N, 2] pixel coordinates, z [C, N] camera depth)."""
    cam = _to_camera(verts, world_to_cam)
    z = cam[..., 2]
    uvw = torch.einsum("cij,cnj->cni", K, cam)
    xy = uvw[..., :2] / uvw[..., 2:3]
    return xy, z


@dataclass
class _Fragments:
    cam: Tensor  # [M] camera index
    face: Tensor  # [M] triangle index
    px: Tensor  # [M] pixel column
    py: Tensor  # [M] pixel row


def _bboxes(xy: Tensor, z: Tensor, faces: Tensor, H: int, W: int, pad: float, near: float,
            keep: Tensor | None = None, region: Tensor | None = None):
    """Pixel bounding boxes of every (camera, face) in front of the near plane, clipped to the image.

    keep: optional [C, F] bool of the (camera, face) pairs to consider at all;
    region: optional [C, H, W] bool; boxes holding no pixel of it are dropped."""
    tri = xy[:, faces]  # [C, F, 3, 2]
    tz = z[:, faces]  # [C, F, 3]
    x0 = torch.ceil(tri[..., 0].amin(-1) - pad).clamp(min=0)
    x1 = torch.floor(tri[..., 0].amax(-1) + pad).clamp(max=W - 1)
    y0 = torch.ceil(tri[..., 1].amin(-1) - pad).clamp(min=0)
    y1 = torch.floor(tri[..., 1].amax(-1) + pad).clamp(max=H - 1)
    ok = (tz > near).all(-1) & (x1 >= x0) & (y1 >= y0) & torch.isfinite(tri).all(-1).all(-1)
    if keep is not None:
        ok &= keep
    cam, face = ok.nonzero(as_tuple=True)
    x0, x1, y0, y1 = (v[cam, face].long() for v in (x0, x1, y0, y1))
    if region is not None:  # count region pixels in each box with a summed-area table
        sat = torch.nn.functional.pad(region.long().cumsum(1).cumsum(2), (1, 0, 1, 0))
        inside = sat[cam, y1 + 1, x1 + 1] - sat[cam, y0, x1 + 1] - sat[cam, y1 + 1, x0] + sat[cam, y0, x0]
        sel = inside > 0
        cam, face, x0, x1, y0, y1 = (v[sel] for v in (cam, face, x0, x1, y0, y1))
    return cam, face, x0, y0, x1 - x0 + 1, y1 - y0 + 1


def _expand(counts: Tensor) -> tuple[Tensor, Tensor]:
    """For runs of the given lengths: (owner run of each element, index within its run)."""
    owner = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    start = torch.cumsum(counts, 0) - counts
    return owner, torch.arange(owner.numel(), device=counts.device) - start[owner]


def _row_spans(tri: Tensor, y: Tensor, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
    """Pixel columns [first, last] where row y crosses the triangle (tri [R, 3, 2]), within [x0, x1].
    Slightly conservative: the barycentric test that follows decides pixels on the edges."""
    ya, yb = tri[..., 1], tri[:, [1, 2, 0], 1]
    xa, xb = tri[..., 0], tri[:, [1, 2, 0], 0]
    yy = y[:, None].to(tri.dtype)
    crosses = ((ya - yy) * (yb - yy) <= 0) & (ya != yb)
    t = (yy - ya) / torch.where(ya != yb, yb - ya, torch.ones_like(ya))
    x = xa + t * (xb - xa)
    flat = (ya == yb) & (ya == yy)  # a horizontal edge lying on the row: both its ends
    lo = torch.where(crosses, x, torch.where(flat, torch.minimum(xa, xb), torch.full_like(x, float("inf"))))
    hi = torch.where(crosses, x, torch.where(flat, torch.maximum(xa, xb), torch.full_like(x, -float("inf"))))
    first = torch.ceil(lo.amin(-1) - 1e-4).clamp(min=-1).long().clamp(min=0)
    last = torch.floor(hi.amax(-1) + 1e-4).clamp(max=1 << 30).long()
    return torch.maximum(first, x0), torch.minimum(last, x1)


def _fragments(xy: Tensor, z: Tensor, faces: Tensor, H: int, W: int, pad: float, near: float,
               max_fragments: int, keep: Tensor | None = None, region: Tensor | None = None
               ) -> Iterator[_Fragments]:
    """Candidate (pixel, triangle) pairs in chunks of at most max_fragments (one triangle per chunk at
    least). Without padding, each triangle yields the pixels of its scanline spans; with padding (soft
    silhouettes), its padded bounding box.

    Integer bookkeeping only (no autograd); the caller's grad mode stays as it is across the yields."""
    xy, z = xy.detach(), z.detach()
    cam, face, x0, y0, w, h = _bboxes(xy, z, faces, H, W, pad, near, keep, region)
    if cam.numel() == 0:
        return
    if pad == 0:
        row_owner, row_index = _expand(h)
        tri = xy.view(-1, 2).index_select(0, ((cam * xy.shape[1])[:, None] + faces[face]).view(-1)).view(-1, 3, 2)
        rows_y = y0[row_owner] + row_index
        first, last = _row_spans(tri[row_owner], rows_y, x0[row_owner], x0[row_owner] + w[row_owner] - 1)
        row_len = (last - first + 1).clamp(min=0)
        counts = torch.zeros_like(w).index_add_(0, row_owner, row_len)
        row_start = torch.cumsum(h, 0) - h  # first row of each triangle
    else:
        counts = w * h
    ends = torch.cumsum(counts, 0)
    start = 0
    while start < counts.numel():
        base = int(ends[start - 1]) if start > 0 else 0
        stop = max(int(torch.searchsorted(ends, base + max_fragments, right=True)), start + 1)
        if pad == 0:
            rows = slice(int(row_start[start]), int(row_start[stop - 1] + h[stop - 1]))
            owner, local = _expand(row_len[rows])
            row = rows.start + owner
            yield _Fragments(cam[row_owner[row]], face[row_owner[row]], first[row] + local, rows_y[row])
        else:
            sl = slice(start, stop)
            owner, local = _expand(counts[sl])
            ww = w[sl][owner]
            yield _Fragments(cam[sl][owner], face[sl][owner], x0[sl][owner] + local % ww,
                             y0[sl][owner] + local // ww)
        start = stop


def _screen_barycentrics(tri: Tensor, px: Tensor, py: Tensor) -> tuple[Tensor, Tensor]:
    """tri: [M, 3, 2] screen vertices; pixel centres (px, py) [M] -> (barycentrics [M, 3], signed area [M])."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    safe = torch.where(area.abs() > _EPS_AREA, area, torch.full_like(area, _EPS_AREA))
    wa = ((b[:, 0] - px) * (c[:, 1] - py) - (b[:, 1] - py) * (c[:, 0] - px)) / safe
    wb = ((c[:, 0] - px) * (a[:, 1] - py) - (c[:, 1] - py) * (a[:, 0] - px)) / safe
    return torch.stack([wa, wb, 1 - wa - wb], -1), area


def _perspective(bary2d: Tensor, tz: Tensor) -> tuple[Tensor, Tensor]:
    """Screen barycentrics [M, 3] and vertex depths [M, 3] -> (perspective-correct barycentrics, depth)."""
    w = bary2d / tz
    inv_z = w.sum(-1)
    return w / inv_z[:, None], 1.0 / inv_z


@float32_region
def rasterize(verts: Tensor, faces: Tensor, K: Tensor, world_to_cam: Tensor, height: int, width: int, *,
              near: float = 1e-3, cull_backfaces: bool = False, max_fragments: int = 1 << 21,
              backend: str = "auto") -> Rasterized:
    """Z-buffered rasterization of a triangle mesh seen by C cameras.

    verts: [N, 3] (shared) or [C, N, 3] (per camera) world positions; faces: [F, 3] int64;
    K: [C, 3, 3]; world_to_cam: [C, 4, 4]. Triangles with a vertex behind `near` are skipped;
    with cull_backfaces, so are triangles facing away (counter-clockwise = front, seen from outside),
    which halves the work on closed meshes (the picture may differ in a few contour pixels, where a
    back face covered a pixel centre by floating-point rounding).
    """
    faces = faces.long()
    xy, z = project(verts, K, world_to_cam)
    C = K.shape[0]
    keep = None
    if cull_backfaces:
        with torch.no_grad():
            keep = _front_facing(_to_camera(verts.detach(), world_to_cam), faces)
    if backend == "nvdiffrast" or (backend == "auto" and xy.is_cuda and _nvdiffrast() is not None):
        face_id = _visible_faces_nvdiffrast(xy, z, faces, height, width, near, keep)
    else:
        face_id = _visible_faces_torch(xy, z, faces, height, width, near, max_fragments, keep)
    return _resolve(xy, z, faces, face_id, C, height, width)


def _plane_coefficients(xy: Tensor, z: Tensor, faces: Tensor) -> tuple[Tensor, Tensor]:
    """Per (camera, face): the screen-linear functions w_a, w_b (barycentrics) and 1/z as rows of
    [C, F, 3, 3] coefficients (px, py, 1); and the signed screen area [C, F]."""
    a, b, c = (xy[:, faces[:, i]] for i in range(3))  # [C, F, 2]
    area = (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])
    safe = torch.where(area.abs() > _EPS_AREA, area, torch.full_like(area, _EPS_AREA))

    def edge(p: Tensor, q: Tensor) -> Tensor:  # weight of the vertex opposite the edge p -> q
        return torch.stack([p[..., 1] - q[..., 1], q[..., 0] - p[..., 0],
                            p[..., 0] * q[..., 1] - p[..., 1] * q[..., 0]], -1) / safe[..., None]

    wa, wb = edge(b, c), edge(c, a)
    wc = -wa - wb
    wc[..., 2] += 1
    za, zb, zc = (z[:, faces[:, i]][..., None] for i in range(3))
    inv_z = wa / za + wb / zb + wc / zc
    return torch.stack([wa, wb, inv_z], -2), area


def _front_facing(verts_cam: Tensor, faces: Tensor) -> Tensor:
    """[C, F] bool: the face's normal (right-handed winding) points towards the camera."""
    a, b, c = (verts_cam[:, faces[:, i]] for i in range(3))
    normal = torch.linalg.cross(b - a, c - a)
    return (normal * a).sum(-1) < 0


def _visible_faces_torch(xy: Tensor, z: Tensor, faces: Tensor, H: int, W: int, near: float,
                         max_fragments: int, keep: Tensor | None = None) -> Tensor:
    C = xy.shape[0]
    with torch.no_grad():
        xy_d, z_d = xy.detach(), z.detach()
        coef, area = _plane_coefficients(xy_d, z_d, faces)
        usable = area.abs() > _EPS_AREA
        keep = usable if keep is None else keep & usable
        zbuf = torch.full((C * H * W,), float("inf"), dtype=xy.dtype, device=xy.device)
        fbuf = torch.full((C * H * W,), -1, dtype=torch.long, device=xy.device)
        for frag in _fragments(xy_d, z_d, faces, H, W, 0.0, near, max_fragments, keep):
            k = coef.view(-1, 3, 3).index_select(0, frag.cam * coef.shape[1] + frag.face)  # [M, 3, 3]
            vals = k[..., 0] * frag.px[:, None] + k[..., 1] * frag.py[:, None] + k[..., 2]  # [M, 3]
            inside = (vals[:, 0] >= -1e-7) & (vals[:, 1] >= -1e-7) & (vals[:, 0] + vals[:, 1] <= 1 + 1e-7)
            if not inside.any():
                continue
            depth = 1.0 / vals[inside, 2]
            face = frag.face[inside]
            # fragments come in camera order: work on the pixel range of this chunk's cameras only
            lo, hi = int(frag.cam[0]) * H * W, (int(frag.cam[-1]) + 1) * H * W
            pix = (frag.cam[inside] * H + frag.py[inside]) * W + frag.px[inside] - lo
            _merge_nearest(zbuf[lo:hi], fbuf[lo:hi], pix, depth, face)
    return fbuf.view(C, H, W)


def _merge_nearest(zbuf: Tensor, fbuf: Tensor, pix: Tensor, depth: Tensor, ident: Tensor) -> None:
    """In place: where a fragment is nearer than the buffer, take its depth and id (ties: lowest id)."""
    chunk_min = torch.full_like(zbuf, float("inf")).scatter_reduce(0, pix, depth, "amin")
    wins = depth == chunk_min[pix]
    chunk_id = torch.full_like(fbuf, torch.iinfo(torch.long).max).scatter_reduce(0, pix[wins], ident[wins], "amin")
    better = chunk_min < zbuf
    zbuf.copy_(torch.where(better, chunk_min, zbuf))
    fbuf.copy_(torch.where(better, chunk_id, fbuf))


def _resolve(xy: Tensor, z: Tensor, faces: Tensor, face_id: Tensor, C: int, H: int, W: int) -> Rasterized:
    """Differentiable barycentrics and depth of the visible triangle at every covered pixel."""
    flat = face_id.view(-1)
    covered = (flat >= 0).nonzero(as_tuple=True)[0]
    cam = covered // (H * W)
    rem = covered % (H * W)
    py, px = (rem // W).to(xy.dtype), (rem % W).to(xy.dtype)
    vid = faces.index_select(0, flat.index_select(0, covered))  # [M, 3]
    flat_vid = (vid + (cam * xy.shape[1])[:, None]).reshape(-1)
    tri = xy.reshape(-1, 2).index_select(0, flat_vid).view(-1, 3, 2)
    bary2d, _ = _screen_barycentrics(tri, px, py)
    bary, depth = _perspective(bary2d, z.reshape(-1).index_select(0, flat_vid).view(-1, 3))
    return Rasterized(face_id, covered, bary, depth)


@float32_region
def interpolate_covered(attrs: Tensor, faces: Tensor, rast: Rasterized) -> Tensor:
    """attrs: [N, D] (shared) or [C, N, D] per-vertex attributes -> [M, D] at the covered pixels."""
    C, H, W = rast.face_id.shape
    vid = faces.long().index_select(0, rast.face_id.view(-1).index_select(0, rast.pixels))  # [M, 3]
    if attrs.dim() == 3:  # per-camera attributes: index the flattened [C * N, D] table
        vid = vid + (rast.pixels // (H * W) * attrs.shape[1])[:, None]
        attrs = attrs.reshape(-1, attrs.shape[-1])
    vals = attrs.index_select(0, vid.reshape(-1)).view(*vid.shape, -1)  # [M, 3, D]
    return torch.einsum("mk,mkd->md", rast.bary_covered, vals)


@float32_region
def interpolate(attrs: Tensor, faces: Tensor, rast: Rasterized) -> Tensor:
    """attrs: [N, D] (shared) or [C, N, D] per-vertex attributes -> [C, H, W, D]; zero where uncovered."""
    return rast._dense(interpolate_covered(attrs, faces, rast), 0.0)


def _segment_distance(p: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Distance from points p [M, 2] to segments (a, b) [M, 2]."""
    ab = b - a
    t = ((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=_EPS_AREA)
    closest = a + t.clamp(0, 1)[:, None] * ab
    return (p - closest).norm(dim=-1)


def contour_edges(faces: Tensor, front: Tensor) -> tuple[Tensor, Tensor]:
    """Silhouette candidates per camera. faces: [F, 3]; front: [C, F] bool (facing the camera)
    -> (edges [3F, 2] vertex pairs, one per face corner; is_contour [C, 3F]).

    An edge is a contour when its face looks at the camera and the face across it does not, or when
    no face lies across it (the border of an open surface)."""
    F = faces.shape[0]
    a = faces.reshape(-1)
    b = faces[:, [1, 2, 0]].reshape(-1)
    owner = torch.arange(F, device=faces.device).repeat_interleave(3)
    n = int(faces.max()) + 1
    key = a * n + b
    order = torch.argsort(key)
    sorted_key = key[order]
    twin_key = b * n + a
    pos = torch.searchsorted(sorted_key, twin_key).clamp(max=key.numel() - 1)
    has_twin = sorted_key[pos] == twin_key
    twin_face = owner[order[pos]]
    own_front = front[:, owner]
    across_front = torch.where(has_twin, front[:, twin_face], torch.zeros_like(own_front))
    is_contour = (own_front & ~across_front) | ~has_twin
    return torch.stack([a, b], -1), is_contour


@float32_region
def soft_silhouette(verts: Tensor, faces: Tensor, K: Tensor, world_to_cam: Tensor, height: int, width: int, *,
                    sigma: float = 0.5, near: float = 1e-3, max_fragments: int = 1 << 21) -> Tensor:
    """[C, H, W] soft coverage in [0, 1] with gradients to the vertex positions.

    Near the edge of the hard silhouette (within 5 sigma pixels) a pixel's coverage is
    sigmoid(+-d / sigma), d its distance to the nearest contour edge of the mesh and the sign + inside
    the hard mask; elsewhere it is the hard mask (no gradient). The silhouette's position thus
    depends smoothly on the contour vertices, and a mask loss moves them.
    """
    faces = faces.long()
    xy, z = project(verts, K, world_to_cam)
    C, H, W = K.shape[0], height, width
    reach = 5.0 * sigma
    with torch.no_grad():
        hard = _visible_faces_torch(xy, z, faces, H, W, near, max_fragments) >= 0
        r = int(math.ceil(reach))
        grow = lambda m: torch.nn.functional.max_pool2d(m.float()[:, None], 2 * r + 1, 1, r)[:, 0] > 0  # noqa
        band = grow(hard) & grow(~hard)
        edges, is_contour = contour_edges(faces, _front_facing(_to_camera(verts.detach(), world_to_cam), faces))
        segments = torch.cat([edges, edges[:, 1:]], 1)  # an edge as a degenerate triangle (a, b, b)
        best = torch.full((C * H * W,), float("inf"), dtype=xy.dtype, device=xy.device)
        best_edge = torch.full((C * H * W,), -1, dtype=torch.long, device=xy.device)
        for frag in _fragments(xy.detach(), z.detach(), segments, H, W, reach + 1.5, near, max_fragments,
                               keep=is_contour, region=band):
            sel = band[frag.cam, frag.py, frag.px]
            cam, edge, px, py = frag.cam[sel], frag.face[sel], frag.px[sel], frag.py[sel]
            p = torch.stack([px, py], -1).to(xy.dtype)
            dist = _segment_distance(p, xy[cam, edges[edge, 0]].detach(), xy[cam, edges[edge, 1]].detach())
            _merge_nearest(best, best_edge, (cam * H + py) * W + px, dist, edge)
    soft = hard.to(xy.dtype).reshape(-1)
    found = (best_edge >= 0).nonzero(as_tuple=True)[0]
    cam = found // (H * W)
    py, px = (found % (H * W)) // W, found % W
    e = best_edge[found]
    dist = _segment_distance(torch.stack([px, py], -1).to(xy.dtype), xy[cam, edges[e, 0]], xy[cam, edges[e, 1]])
    sign = torch.where(hard.reshape(-1)[found], 1.0, -1.0).to(xy.dtype)
    soft = soft.index_put((found,), torch.sigmoid(sign * dist / sigma))
    return soft.view(C, H, W)


# ------------------------------------------------------------------------------------------- nvdiffrast
_NVDR = None


def _nvdiffrast():
    """The nvdiffrast module and a CUDA context, or None when it is not installed."""
    global _NVDR
    if _NVDR is None:
        try:
            import nvdiffrast.torch as dr

            _NVDR = (dr, dr.RasterizeCudaContext())
        except (ImportError, RuntimeError):
            _NVDR = False
    return _NVDR or None


def _visible_faces_nvdiffrast(xy: Tensor, z: Tensor, faces: Tensor, H: int, W: int, near: float,
                              keep: Tensor | None = None) -> Tensor:
    """Visibility from nvdiffrast's hardware-style rasterizer (pixel centres: NDC (2i + 1) / W - 1,
    row 0 at NDC y = -1, so image rows need no flip); depth ordering by camera z."""
    dr, ctx = _nvdiffrast()
    far = float(z.detach().max()) * 2 + 1.0
    w = z.detach()
    x_ndc = (2 * xy.detach()[..., 0] + 1) / W - 1
    y_ndc = (2 * xy.detach()[..., 1] + 1) / H - 1
    z_ndc = (far + near) / (far - near) - 2 * far * near / ((far - near) * w)
    clip = torch.stack([x_ndc * w, y_ndc * w, z_ndc * w, w], -1).float().contiguous()
    rast, _ = dr.rasterize(ctx, clip, faces.int().contiguous(), (H, W))
    face_id = rast[..., 3].long() - 1
    if keep is not None:  # culled faces: nvdiffrast draws both sides, so re-run without the culled ones
        ids = torch.arange(faces.shape[0], device=faces.device)
        out = torch.full_like(face_id, -1)
        for c in range(xy.shape[0]):
            sub = ids[keep[c]]
            r, _ = dr.rasterize(ctx, clip[c:c + 1], faces[sub].int().contiguous(), (H, W))
            fid = r[0, ..., 3].long() - 1
            out[c] = torch.where(fid >= 0, sub[fid.clamp(min=0)], fid)
        face_id = out
    return face_id
