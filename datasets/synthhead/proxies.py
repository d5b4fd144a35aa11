"""Simple closed shapes that turn a face surface into a head and bust: cranium, hair cap, eyeballs,
mouth cavity, neck, shoulders. Each is a triangle mesh with outward (counter-clockwise) faces in the
head frame of datasets/synthhead/face_model.py, metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import LinearNDInterpolator

from datasets.synthhead.face_model import FaceModel


@dataclass
class Part:
    verts: np.ndarray  # [N, 3]
    faces: np.ndarray  # [F, 3]
    color: np.ndarray  # [N, 3] albedo in [0, 1]


def uv_sphere(n_lat: int = 24, n_lon: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Unit sphere: (verts [N, 3], faces [F, 3]) with outward counter-clockwise faces, poles on +-y."""
    lat = np.linspace(0, np.pi, n_lat + 1)[1:-1]
    lon = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    ring = np.stack([np.outer(np.sin(lat), np.sin(lon)), np.repeat(np.cos(lat)[:, None], n_lon, 1),
                     np.outer(np.sin(lat), np.cos(lon))], -1).reshape(-1, 3)
    verts = np.concatenate([[[0, 1, 0]], ring, [[0, -1, 0]]])
    top, bottom = 0, len(verts) - 1
    faces = []
    idx = lambda i, j: 1 + i * n_lon + (j % n_lon)  # noqa: E731
    for j in range(n_lon):
        faces.append((top, idx(0, j), idx(0, j + 1)))
        faces.append((bottom, idx(n_lat - 2, j + 1), idx(n_lat - 2, j)))
    for i in range(n_lat - 2):
        for j in range(n_lon):
            a, b, c, d = idx(i, j), idx(i, j + 1), idx(i + 1, j), idx(i + 1, j + 1)
            faces += [(a, c, b), (b, c, d)]
    faces = np.array(faces, dtype=np.int64)
    # make every face outward (the construction order above is not guaranteed to be)
    v = verts[faces]
    out = (np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]) * v.mean(1)).sum(-1) < 0
    faces[out] = faces[out][:, [0, 2, 1]]
    return verts, faces


def ellipsoid(center, radii, n_lat: int = 24, n_lon: int = 32) -> tuple[np.ndarray, np.ndarray]:
    v, f = uv_sphere(n_lat, n_lon)
    return v * np.asarray(radii) + np.asarray(center), f


def _openings(face: FaceModel, xy: np.ndarray) -> np.ndarray:
    """[N] in [0, 1]: how deep inside the mouth or an eye opening each (x, y) lies (smooth bumps)."""
    bump = np.zeros(len(xy))
    for center_ids, rx, ry in (([78, 308, 13, 14], 0.034, 0.032), ([33, 133], 0.024, 0.016),
                               ([263, 362], 0.024, 0.016)):
        c = face.verts[center_ids, :2].mean(0)
        d2 = ((xy[:, 0] - c[0]) / rx) ** 2 + ((xy[:, 1] - c[1]) / ry) ** 2
        bump = np.maximum(bump, np.clip(1.5 - d2, 0, 1))
    return bump


def _behind_face(verts: np.ndarray, face: FaceModel, margin: float, deep: float = 0.0) -> np.ndarray:
    """Push vertices that lie in front of the face surface back behind it by `margin`, and by
    `margin + deep` behind the mouth and eye openings (to leave room for the mouth and the eyes)."""
    surface = LinearNDInterpolator(face.verts[:468, :2], face.verts[:468, 2])
    z_face = surface(verts[:, :2])
    inside = np.isfinite(z_face)
    limit = z_face - margin - deep * _openings(face, verts[:, :2])
    too_far = inside & (verts[:, 2] > limit)
    out = verts.copy()
    out[too_far, 2] = limit[too_far]
    return out


def keep_faces(verts: np.ndarray, faces: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-mesh of the faces where `keep` [F] is True, with unused vertices dropped."""
    faces = faces[keep]
    used = np.unique(faces)
    remap = -np.ones(len(verts), np.int64)
    remap[used] = np.arange(len(used))
    return verts[used], remap[faces]


def cranium(face: FaceModel, skin: np.ndarray) -> Part:
    top = face.verts[10, 1]
    v, f = ellipsoid((0.0, 0.012, -0.012), (0.079, top + 0.05, 0.105), 28, 36)
    v = _behind_face(v, face, margin=0.004, deep=0.032)
    return Part(v, f, np.tile(skin, (len(v), 1)))


def hair(face: FaceModel, color: np.ndarray, rng: np.random.Generator) -> Part:
    top = face.verts[10, 1]
    v, f = ellipsoid((0.0, 0.016, -0.016), (0.086, top + 0.058, 0.112), 56, 72)
    v = _behind_face(v, face, margin=0.002, deep=0.032)
    centroid = v[f].mean(1)
    hairline = top - 0.004
    # top and back of the head, down to the ears at the sides
    keep = (centroid[:, 1] > hairline) | ((centroid[:, 2] < 0.01) & (centroid[:, 1] > -0.03)) | (
        (centroid[:, 2] < -0.03) & (centroid[:, 1] > -0.075))
    v, f = keep_faces(v, f, keep)
    # strands: low-frequency streaks along the hair's fall direction
    phase = rng.uniform(0, 2 * np.pi, 3)
    streak = 0.5 + 0.5 * np.sin(v[:, 0] * 260 + phase[0]) * np.sin(v[:, 2] * 180 + phase[1])
    shade = 0.8 + 0.35 * streak[:, None]
    return Part(v, f, np.clip(color * shade, 0, 1))


def eyeballs(face: FaceModel) -> tuple[Part, np.ndarray]:
    """Two eyeballs behind the eye openings, textured from the photo: (part, uv [N, 2])."""
    verts, faces, uvs = [], [], []
    offset = 0
    for contour, iris in (([33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7], 468),
                          ([263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249], 473)):
        ring = face.verts[contour]
        width = np.linalg.norm(ring[0] - ring[8])
        radii = np.array([0.55, 0.42, 0.45]) * width
        v, f = ellipsoid(ring.mean(0) - np.array([0, 0, radii[2] - 0.002]), radii, 12, 16)
        # texture: the affine map that takes the eye contour's (x, y) to its pixels in the photo
        A = np.c_[ring[:, :2], np.ones(len(ring))]
        coef, *_ = np.linalg.lstsq(A, face.uv[contour], rcond=None)
        uvs.append(np.c_[v[:, :2], np.ones(len(v))] @ coef)
        verts.append(v)
        faces.append(f + offset)
        offset += len(v)
    v = np.concatenate(verts)
    return Part(v, np.concatenate(faces), np.zeros((len(v), 3))), np.concatenate(uvs)


def mouth_cavity(face: FaceModel) -> Part:
    inner = face.verts[[78, 308, 13, 14]]
    center = inner.mean(0) - np.array([0.0, 0.006, 0.013])
    width = np.linalg.norm(inner[0] - inner[1])
    v, f = ellipsoid(center, (0.55 * width, 0.024, 0.014), 12, 16)
    color = np.tile([0.28, 0.06, 0.07], (len(v), 1))
    teeth = (v[:, 1] > center[1] + 0.011) & (v[:, 2] > center[2])
    color[teeth] = [0.92, 0.9, 0.84]
    return Part(v, f, color)


def neck(skin: np.ndarray) -> Part:
    v, f = ellipsoid((0.0, -0.15, -0.02), (0.052, 0.11, 0.05), 16, 24)
    return Part(v, f, np.tile(skin * 0.93, (len(v), 1)))


def shoulders(cloth: np.ndarray) -> Part:
    v, f = ellipsoid((0.0, -0.33, -0.03), (0.21, 0.12, 0.11), 20, 32)
    ridge = 0.9 + 0.1 * np.sin(v[:, 0] * 90)[:, None]
    return Part(v, f, np.clip(cloth * ridge, 0, 1))
