"""A synthetic identity: a portrait's textured face surface plus head and bust proxies, posed per frame.

Identities come from the two real portraits shipped in installed packages (scikit-image's astronaut,
matplotlib's Grace Hopper) and plausible changes of them: mirrored, skin tone, hair colour, clothing,
face proportions.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from datasets.landmarks68 import MEDIAPIPE_TO_IBUG68
from datasets.synthhead import proxies
from datasets.synthhead.expression import Expression, deform, jaw_weights
from datasets.synthhead.face_model import FaceModel, fit_face_model, portrait


@dataclass(frozen=True)
class IdentitySpec:
    portrait: str  # astronaut | grace_hopper
    mirror: bool = False
    skin_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)  # RGB gain of the face texture
    hair: tuple[float, float, float] = (0.25, 0.16, 0.09)
    cloth: tuple[float, float, float] = (0.15, 0.18, 0.3)
    shape: tuple[float, float, float] = (1.0, 1.0, 1.0)  # face width, height, depth scale


BASE_IDENTITIES = (
    IdentitySpec("astronaut", hair=(0.33, 0.21, 0.12), cloth=(0.1, 0.1, 0.12)),
    IdentitySpec("grace_hopper", hair=(0.72, 0.72, 0.7), cloth=(0.08, 0.09, 0.16)),
    IdentitySpec("astronaut", mirror=True, skin_gain=(0.72, 0.6, 0.5), hair=(0.06, 0.05, 0.05),
                 cloth=(0.55, 0.12, 0.1), shape=(1.05, 0.97, 1.0)),
    IdentitySpec("grace_hopper", mirror=True, skin_gain=(1.06, 1.02, 0.96), hair=(0.8, 0.64, 0.34),
                 cloth=(0.2, 0.4, 0.25), shape=(0.95, 1.04, 1.02)),
)


def identity_specs(n: int, seed: int) -> list[IdentitySpec]:
    """The first n identities: the four base ones, then random variations of them."""
    rng = np.random.default_rng(seed)
    specs = list(BASE_IDENTITIES[:n])
    while len(specs) < n:
        base = BASE_IDENTITIES[len(specs) % len(BASE_IDENTITIES)]
        specs.append(IdentitySpec(
            base.portrait, bool(rng.integers(0, 2)), tuple(rng.uniform(0.65, 1.08, 3).round(3)),
            tuple(rng.uniform(0.05, 0.8, 3).round(3)), tuple(rng.uniform(0.05, 0.6, 3).round(3)),
            tuple(rng.uniform(0.94, 1.06, 3).round(3))))
    return specs


def _appearance(image: np.ndarray, spec: IdentitySpec) -> np.ndarray:
    if spec.mirror:
        image = image[:, ::-1]
    if spec.skin_gain != (1.0, 1.0, 1.0):
        image = np.clip(image * np.array(spec.skin_gain), 0, 255)
    return np.ascontiguousarray(image.astype(np.uint8))


@dataclass
class PosedHead:
    verts: np.ndarray  # [N, 3] world
    attrs: np.ndarray  # [N, 6] float32: shaded RGB, texture u, v (pixels), textured flag
    landmarks: np.ndarray  # [478, 3] world positions of the mediapipe face-mesh points


class Head:
    """Static topology and appearance of one identity; `pose(world_from_head, expression)` per frame."""

    def __init__(self, spec: IdentitySpec, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.spec = spec
        face = fit_face_model(_appearance(portrait(spec.portrait), spec))
        face.verts = face.verts * np.array(spec.shape)
        self.face: FaceModel = face
        self.texture = face.texture
        skin = face.skin_color()
        eyes, eye_uv = proxies.eyeballs(face)
        parts = [
            ("face", proxies.Part(face.verts, face.faces, np.zeros((len(face.verts), 3)))),
            ("eyes", eyes),
            ("mouth", proxies.mouth_cavity(face)),
            ("cranium", proxies.cranium(face, skin)),
            ("hair", proxies.hair(face, np.array(spec.hair), rng)),
            ("neck", proxies.neck(skin)),
            ("shoulders", proxies.shoulders(np.array(spec.cloth))),
        ]
        offsets, faces, colors, self.slices = 0, [], [], {}
        for name, part in parts:
            self.slices[name] = slice(offsets, offsets + len(part.verts))
            faces.append(part.faces + offsets)
            colors.append(part.color)
            offsets += len(part.verts)
        self.rest = np.concatenate([p.verts for _, p in parts])  # [N, 3] head frame
        self.faces = np.concatenate(faces)
        self.albedo = np.concatenate(colors)
        self.uv = np.zeros((offsets, 2))
        self.textured = np.zeros(offsets, bool)
        self.uv[self.slices["face"]] = face.uv
        self.uv[self.slices["eyes"]] = eye_uv
        self.textured[self.slices["face"]] = True
        self.textured[self.slices["eyes"]] = True
        self.jaw_w = jaw_weights(face.verts)
        y = self.rest[self.slices["neck"], 1]
        self.neck_w = np.clip((y + 0.24) / 0.14, 0, 1) ** 2 * (3 - 2 * np.clip((y + 0.24) / 0.14, 0, 1))

    def pose(self, world_from_head: np.ndarray, expr: Expression,
             light: np.ndarray = np.array([0.35, 0.55, 1.0])) -> PosedHead:
        v = self.rest.copy()
        v[self.slices["face"]] = deform(self.face.verts, expr, self.jaw_w)
        R, t = world_from_head[:3, :3], world_from_head[:3, 3]
        world = v @ R.T + t
        neck = self.slices["neck"]
        w = self.neck_w[:, None]
        world[neck] = w * world[neck] + (1 - w) * v[neck]  # the neck bends between head and torso
        shoulders = self.slices["shoulders"]
        world[shoulders] = v[shoulders]  # the torso stays put
        normals = vertex_normals(world, self.faces)
        lit = 0.55 + 0.45 * np.clip(normals @ (light / np.linalg.norm(light)), 0, 1)
        rgb = self.albedo * lit[:, None]
        attrs = np.concatenate([rgb, self.uv, self.textured[:, None]], 1).astype(np.float32)
        return PosedHead(world, attrs, world[self.slices["face"]])

    def landmarks68(self, posed: PosedHead) -> np.ndarray:
        return posed.landmarks[MEDIAPIPE_TO_IBUG68]


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals [N, 3]."""
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    fn = np.cross(b - a, c - a)
    n = np.zeros_like(verts)
    for i in range(3):
        np.add.at(n, faces[:, i], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def studio_backdrop(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A plausible static studio background: a lit grey-beige wall with soft texture, uint8 [H, W, 3]."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.array(rng.uniform(0.55, 0.75, 3), np.float32) * np.array([1.0, 0.98, 0.94], np.float32)
    vignette = 1.0 - 0.25 * (((x - width / 2) / width) ** 2 + ((y - height * 0.4) / height) ** 2)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (height // 8 + 1, width // 8 + 1)).astype(np.float32), (0, 0), 1.5)
    noise = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    img = base[None, None] * (vignette * (1 + 0.05 * noise))[..., None]
    stripe = (np.sin(x * 0.05 + rng.uniform(0, 6)) > 0.97)[..., None] * 0.05  # panel seams
    return np.clip((img - stripe) * 255, 0, 255).astype(np.uint8)
