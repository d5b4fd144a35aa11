"""A head scan as the renderer takes it, read through trimesh (PLY, OBJ + MTL + texture image, ...).

    ScanMesh.verts     float32 [N, 3]  scan coordinates, as in the file
    ScanMesh.faces     int64   [F, 3]
    ScanMesh.colors    float32 [N, 3]  vertex colours in [0, 1] (None when the scan is textured)
    ScanMesh.uv        float32 [N, 2]  texture coordinates (OBJ/PLY convention: v = 0 at the image bottom)
    ScanMesh.texture   uint8   [Ht, Wt, 3] the texture map (None for vertex-coloured scans)

A textured scan keeps its texture; a scan with vertex colours keeps those; a scan with neither is read
as mid grey and says so (`ScanMesh.note`). Paths may be local or fsspec URLs (an OBJ's MTL and texture
are then fetched beside it through the same file system).
"""

from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass

import cv2
import fsspec
import numpy as np

from datasets.urls import is_remote, local_path


class ScanReadError(ValueError):
    """A scan file that trimesh cannot read as a triangle mesh."""


@dataclass
class ScanMesh:
    verts: np.ndarray  # [N, 3] float32
    faces: np.ndarray  # [F, 3] int64
    colors: np.ndarray | None = None  # [N, 3] float32 in [0, 1]
    uv: np.ndarray | None = None  # [N, 2] float32
    texture: np.ndarray | None = None  # [Ht, Wt, 3] uint8
    note: str = ""  # what the reader assumed (no colour found, ...)

    @property
    def textured(self) -> bool:
        return self.texture is not None and self.uv is not None


def _resolver(url: str):
    import trimesh.resolvers

    class FsspecResolver(trimesh.resolvers.Resolver):
        """Files beside a remote scan (its MTL and texture), read through fsspec."""

        def __init__(self, folder: str):
            self.folder = folder

        def get(self, key):
            with fsspec.open(posixpath.join(self.folder, key), "rb") as f:
                return f.read()

        def write(self, name, data):
            raise NotImplementedError("read only")

        def namespaced(self, namespace):
            return FsspecResolver(posixpath.join(self.folder, namespace))

        def keys(self):
            return []

    return FsspecResolver(url.rsplit("/", 1)[0])


def _load_trimesh(url: str, geometry_only: bool = False):
    import trimesh

    kind = url.rsplit(".", 1)[-1].lower()
    extra = {"skip_materials": True} if geometry_only and kind == "obj" else {}
    try:
        if is_remote(url):
            with fsspec.open(url, "rb") as f:
                data = f.read()
            loaded = trimesh.load(io.BytesIO(data), file_type=kind, process=False, resolver=_resolver(url), **extra)
        else:
            loaded = trimesh.load(local_path(url), process=False, **extra)
    except Exception as e:
        raise ScanReadError(f"cannot read scan {url}: {type(e).__name__}: {e}") from e
    if isinstance(loaded, trimesh.Scene):  # an OBJ with several objects or materials: one mesh
        meshes = [g for g in loaded.geometry.values() if isinstance(g, trimesh.Trimesh)]
        if not meshes:
            raise ScanReadError(f"scan {url} holds no triangle mesh")
        loaded = meshes[0] if len(meshes) == 1 else trimesh.util.concatenate(meshes)
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise ScanReadError(f"scan {url} is not a triangle mesh (a point cloud or empty file?)")
    return loaded


def _texture_image(material) -> np.ndarray | None:
    image = getattr(material, "image", None)
    if image is None:
        image = getattr(material, "baseColorTexture", None)
    if image is None:
        return None
    return np.array(image.convert("RGB"), dtype=np.uint8)  # a writable copy


def load_scan(url: str, max_texture: int = 0) -> ScanMesh:
    """Read one scan file. max_texture > 0 shrinks a larger texture map (area filter) to that longer side:
    a prefilter, since the renderer samples the map bilinearly without mipmaps."""
    mesh = _load_trimesh(url)
    verts = np.asarray(mesh.vertices, np.float32)
    faces = np.asarray(mesh.faces, np.int64)
    visual = mesh.visual
    if visual.kind == "texture" and getattr(visual, "uv", None) is not None:
        texture = _texture_image(visual.material)
        uv = np.asarray(visual.uv, np.float32)
        if texture is not None and len(uv) == len(verts):
            if max_texture and max(texture.shape[:2]) > max_texture:
                s = max_texture / max(texture.shape[:2])
                size = (max(1, round(texture.shape[1] * s)), max(1, round(texture.shape[0] * s)))
                texture = cv2.resize(texture, size, interpolation=cv2.INTER_AREA)
            return ScanMesh(verts, faces, uv=uv, texture=texture)
    if visual.kind == "vertex":
        colors = np.asarray(visual.vertex_colors, np.float32)[:, :3] / 255.0
        return ScanMesh(verts, faces, colors=colors)
    if visual.kind == "face":  # per-face colours: spread to the vertices (a scan rarely has them)
        colors = np.asarray(visual.vertex_colors, np.float32)[:, :3] / 255.0
        return ScanMesh(verts, faces, colors=colors, note="face colours averaged to the vertices")
    grey = np.full((len(verts), 3), 0.5, np.float32)
    return ScanMesh(verts, faces, colors=grey, note="no vertex colours or texture found: rendered mid grey")


def scan_bounds(url: str) -> np.ndarray:
    """[2, 3] lower and upper corner of a scan's bounding box (its texture is not read)."""
    verts = np.asarray(_load_trimesh(url, geometry_only=True).vertices, np.float64)
    return np.stack([verts.min(0), verts.max(0)])
