"""A textured 3D face surface from one portrait: mediapipe's face mesh (478 points with refined
irises) lifted to metres, rotated to face +z, triangulated from FACEMESH_TESSELATION, textured by the
photo itself.

Head frame: x towards the image right of a frontal view (the subject's left), y up, z out of the face
(towards a frontal camera); origin between the ears (landmarks 234 and 454) at their height.
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from datasets.native_output import quiet_native_stderr


class NoFaceError(RuntimeError):
    pass


@dataclass
class FaceModel:
    verts: np.ndarray  # [478, 3] metres, head frame
    uv: np.ndarray  # [478, 2] pixel coordinates of each vertex in `texture`
    faces: np.ndarray  # [852, 3] int, counter-clockwise seen from the front (outward normals)
    texture: np.ndarray  # [H, W, 3] uint8 RGB

    def skin_color(self) -> np.ndarray:
        """Median colour of the cheeks, float RGB in [0, 1]."""
        cheeks = np.concatenate([self.uv[[50, 101, 118, 123, 187, 205]], self.uv[[280, 330, 347, 352, 411, 425]]])
        samples = [self.texture[int(round(v)), int(round(u))] for u, v in cheeks]
        return np.median(np.array(samples, float), 0) / 255.0


def portrait(name: str) -> np.ndarray:
    """A real portrait shipped inside an installed package, RGB uint8."""
    if name == "astronaut":
        from skimage import data

        return data.astronaut()
    if name == "grace_hopper":
        import matplotlib.cbook as cbook
        from PIL import Image

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            return np.array(Image.open(f).convert("RGB"))
    raise ValueError(f"unknown portrait {name!r}; available: astronaut, grace_hopper")


@functools.lru_cache(maxsize=1)
def face_mesh_triangles() -> np.ndarray:
    """[852, 3] triangles of mediapipe's face mesh: the 3-cliques of its tessellation edges, without
    the two cliques that enclose a vertex (49-64-129 and 279-294-358 are not faces)."""
    import mediapipe as mp

    edges = {tuple(sorted(e)) for e in mp.solutions.face_mesh.FACEMESH_TESSELATION}
    adj = defaultdict(set)
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    tris = sorted({tuple(sorted((a, b, c))) for a, b in edges for c in adj[a] & adj[b]})
    uses = Counter(e for t in tris for e in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])))
    tris = [t for t in tris if not all(uses[e] > 2 for e in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])))]
    return np.array(tris, dtype=np.int64)


def detect_landmarks(image: np.ndarray) -> np.ndarray:
    """[478, 3] mediapipe landmarks (x, y in pixels, z in pixels of the same scale) of the face."""
    import mediapipe as mp

    with quiet_native_stderr(), mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, refine_landmarks=True, max_num_faces=1) as mesh:
        result = mesh.process(np.ascontiguousarray(image))
    if not result.multi_face_landmarks:
        raise NoFaceError("mediapipe found no face in the portrait")
    h, w = image.shape[:2]
    pts = np.array([[p.x * w, p.y * h, p.z * w] for p in result.multi_face_landmarks[0].landmark])
    return pts


def head_frame(points_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R [3, 3], origin [3]) taking image-space landmarks (x right, y down, z away) to the head frame."""
    p = points_px * np.array([1.0, -1.0, -1.0])  # x right, y up, z towards the viewer
    x = p[454] - p[234]
    x /= np.linalg.norm(x)
    up = p[10] - p[152]
    y = up - x * (up @ x)
    y /= np.linalg.norm(y)
    z = np.cross(x, y)
    R = np.stack([x, y, z])
    origin = 0.5 * (p[234] + p[454])
    return R, origin


def fit_face_model(image: np.ndarray, face_width: float = 0.145) -> FaceModel:
    """Lift a portrait's face mesh to a metric, frontal 3D face surface textured by the portrait.

    face_width: distance in metres between the face-oval points beside the ears (234, 454)."""
    pts = detect_landmarks(image)
    R, origin = head_frame(pts)
    p = pts * np.array([1.0, -1.0, -1.0])
    verts = (p - origin) @ R.T
    verts *= face_width / np.linalg.norm(verts[454] - verts[234])
    faces = face_mesh_triangles().copy()
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    flip = np.cross(b - a, c - a)[:, 2] < 0  # orient every triangle towards +z (the face is a height field)
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return FaceModel(verts, pts[:, :2].copy(), faces, image)
