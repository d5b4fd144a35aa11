"""Synthetic head scans written in the NPHM and FaceVerse releases' layouts and formats (see
datasets/raw/scans.py for the layouts and their sources), for tests, benchmarks and demos:

    NPHM       <root>/{subject:03d}/{expression:03d}/scan.ply (binary PLY, vertex colours) beside flame.ply,
               registration.ply, s.npy, R.npy, t.npy (placeholders: the reader does not read them)
    FaceVerse  <root>/{identity:03d}_{expression:02d}.obj + .mtl (map_Kd) + .jpg texture map

`synthetic_head_scans` poses the synthetic identities of datasets/synthhead (a real portrait's face, head,
hair and neck) in a few expressions, unlit (albedo), textured or vertex-coloured."""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np
import trimesh

from datasets.synthhead.expression import Expression
from datasets.synthhead.head import Head, identity_specs


@dataclass
class Scan:
    verts: np.ndarray  # [N, 3] scan coordinates
    faces: np.ndarray  # [F, 3]
    colors: np.ndarray | None = None  # [N, 3] uint8 vertex colours
    uv: np.ndarray | None = None  # [N, 2] OBJ texture coordinates (v = 0 at the bottom)
    texture: np.ndarray | None = None  # [Ht, Wt, 3] uint8 RGB


def write_ply(path: str, scan: Scan) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    colors = np.concatenate([scan.colors, np.full((len(scan.colors), 1), 255, np.uint8)], 1)
    mesh = trimesh.Trimesh(scan.verts, scan.faces, vertex_colors=colors, process=False)
    with open(path, "wb") as f:
        f.write(trimesh.exchange.ply.export_ply(mesh, encoding="binary"))


def write_obj(folder: str, stem: str, scan: Scan) -> None:
    """OBJ + MTL + JPEG texture named as FaceVerse names them (001_01.obj, 001_01.mtl, 001_01.jpg)."""
    os.makedirs(folder, exist_ok=True)
    lines = [f"mtllib {stem}.mtl", f"usemtl {stem}"]
    lines += [f"v {x:.7f} {y:.7f} {z:.7f}" for x, y, z in scan.verts]
    lines += [f"vt {u:.7f} {v:.7f}" for u, v in scan.uv]
    lines += ["f " + " ".join(f"{i + 1}/{i + 1}" for i in tri) for tri in scan.faces]
    with open(os.path.join(folder, f"{stem}.obj"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(folder, f"{stem}.mtl"), "w") as f:
        f.write(f"\nnewmtl {stem}\nKa 1 1 1\nKd 1 1 1\nd 1\nNs 0\nillum 1\nmap_Kd {stem}.jpg\n")
    cv2.imwrite(os.path.join(folder, f"{stem}.jpg"), cv2.cvtColor(scan.texture, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 100, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])


def write_nphm(root: str, scans: dict[tuple[int, int], Scan]) -> None:
    for (subject, expression), scan in scans.items():
        folder = os.path.join(root, f"{subject:03d}", f"{expression:03d}")
        write_ply(os.path.join(folder, "scan.ply"), scan)
        coarse = Scan(scan.verts[:3], np.array([[0, 1, 2]]), np.full((3, 3), 128, np.uint8))
        write_ply(os.path.join(folder, "flame.ply"), coarse)
        write_ply(os.path.join(folder, "registration.ply"), coarse)
        np.save(os.path.join(folder, "s.npy"), np.array(0.004))
        np.save(os.path.join(folder, "R.npy"), np.eye(3))
        np.save(os.path.join(folder, "t.npy"), np.zeros(3))


def write_faceverse(root: str, scans: dict[tuple[int, int], Scan]) -> None:
    for (identity, expression), scan in scans.items():
        write_obj(root, f"{identity:03d}_{expression:02d}", scan)


EXPRESSIONS = (Expression(), Expression(jaw_open=0.8), Expression(smile=0.9), Expression(brow=0.8, blink=0.5))
_PARTS_DROPPED = ("shoulders",)  # a head scan ends at the neck


def synthetic_head_scans(identities: int, expressions: int, textured: bool, scale: float = 1.0,
                         offset=(0.0, 0.0, 0.0)) -> dict[tuple[int, int], Scan]:
    """The synthetic heads (a portrait's face, head, hair, neck) in their expressions, unlit albedo: as a
    textured mesh (the face's portrait texture plus a block of each other part's colour), or vertex-coloured
    (the texture sampled at the vertices). Head frame: metres x scale + offset, y up, face towards +z."""
    out = {}
    for i, spec in enumerate(identity_specs(identities, 0)):
        head = Head(spec, seed=i)
        keep = np.ones(len(head.rest), bool)
        for name in _PARTS_DROPPED:
            keep[head.slices[name]] = False
        faces = head.faces[keep[head.faces].all(1)]
        remap = np.cumsum(keep) - 1
        faces = remap[faces]
        tex = head.texture
        Ht, Wt = tex.shape[:2]
        parts = [(n, s) for n, s in head.slices.items() if n not in _PARTS_DROPPED and not head.textured[s].any()]
        block = 8
        strip = np.zeros((block, Wt, 3), np.uint8)
        uv_px = head.uv.copy()
        for k, (name, s) in enumerate(parts):
            strip[:, k * block:(k + 1) * block] = np.clip(head.albedo[s].mean(0) * 255, 0, 255).astype(np.uint8)
            uv_px[s] = (k * block + block / 2 - 0.5, Ht + block / 2 - 0.5)
        atlas = np.concatenate([tex, strip])
        Ha = atlas.shape[0]
        uv = np.stack([(uv_px[:, 0] + 0.5) / Wt, 1 - (uv_px[:, 1] + 0.5) / Ha], 1)
        for e in range(expressions):
            posed = head.pose(np.eye(4), EXPRESSIONS[e % len(EXPRESSIONS)])
            verts = posed.verts[keep] * scale + np.asarray(offset)
            if textured:
                scan = Scan(verts, faces, uv=uv[keep], texture=atlas)
            else:
                px = np.clip(np.round(uv_px[keep]).astype(int), 0, [Wt - 1, Ha - 1])
                scan = Scan(verts, faces, colors=atlas[px[:, 1], px[:, 0]])
            out[i + 1, e + 1] = scan
    return out
