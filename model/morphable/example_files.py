"""For tests and benchmarks: small synthetic morphable models written in the real file formats, with the
ground truth to check a
loader against (numpy, float64, written independently of model/morphable).

    path, landmarks_path, truth = make_model_files(tmp_dir, "flame")
    truth.vertices(id, exp), truth.landmarks(id, exp)   # [B, N, 3], [B, 68, 3] in model units

The mesh is mediapipe's face mesh lifted from a real portrait (478 vertices, 852 triangles, metres; its
iBUG-68 vertices from datasets.landmarks68), cached per process. Bases are smooth random fields
(sums of low-frequency sinusoids of the vertex position), so they look like face deformations.

Formats (as the public files store them, see model/morphable/bfm.py and flame_file.py):
- bfm2009: scipy.io.savemat of meanshape [1, 3N], idBase [3N, K], exBase [3N, K], tri [F, 3] and
  keypoints [1, 68] (1-based doubles), and the unused texture/mask entries; decimetres.
- bfm2017: statismo HDF5 with orthonormal pcaBasis and pcaVariance, a small expression mean, cells
  [3, F] 0-based; millimetres; plus a text file of 68 vertex indices.
- flame: a protocol-2 pickle written the way Python 2 wrote it (str as BINSTRING, numpy arrays with raw
  byte strings, chumpy `chumpy.ch.Ch` objects with their __dict__ state, a `scipy.sparse.csc.csc_matrix`
  J_regressor), and DECA's landmark_embedding.npy (np.save of a dict, dynamic entries torch tensors).
"""

from __future__ import annotations

import copyreg
import functools
import io
import os
import pickle
import struct
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

KINDS = ("bfm2009", "bfm2017", "flame")
FLAME_SHAPE = 300  # identity components before the expression ones in shapedirs
FLAME_EXPRESSION = 100


@functools.lru_cache(maxsize=1)
def face_mesh() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(verts [478, 3] metres, faces [852, 3], ibug [68] vertex index per iBUG-68 point)."""
    from datasets.landmarks68 import MEDIAPIPE_TO_IBUG68
    from datasets.synthhead.face_model import fit_face_model, portrait

    face = fit_face_model(portrait("astronaut"))
    return face.verts.astype(np.float64), face.faces.astype(np.int64), np.asarray(MEDIAPIPE_TO_IBUG68, np.int64)


def smooth_fields(verts: np.ndarray, k: int, amplitude: float, seed: int) -> np.ndarray:
    """[N, 3, k] smooth displacement fields, component i with rms about amplitude / (1 + 0.05 i)."""
    rng = np.random.default_rng(seed)
    scale = verts.std()
    freq = rng.normal(0.0, 1.5 / scale, size=(k, 3, 4, 3))  # [k, axis, wave, xyz]
    phase = rng.uniform(0, 2 * np.pi, size=(k, 3, 4))
    gain = rng.normal(size=(k, 3, 4))
    waves = np.sin(np.einsum("kawx,nx->nkaw", freq, verts) + phase)  # [N, k, 3, 4]
    fields = (waves * gain).sum(-1)  # [N, k, 3]
    # like a PCA of registered, aligned scans: no component is a rigid motion or a change of size, so
    # a fitted pose means the pose (the fits in tests/model/test_model_fit.py check it to 1 degree)
    centred = verts - verts.mean(0)
    modes = [np.broadcast_to(axis, verts.shape) for axis in np.eye(3)]
    modes += [np.cross(axis, centred) for axis in np.eye(3)] + [centred]
    q, _ = np.linalg.qr(np.stack([m.reshape(-1) for m in modes], 1))  # [3N, 7]
    flat = fields.transpose(0, 2, 1).reshape(-1, k)  # [3N, k]... per vertex xyz interleaved
    flat = flat - q @ (q.T @ flat)
    fields = flat.reshape(len(verts), 3, k).transpose(0, 2, 1)
    fields /= np.sqrt((fields**2).mean(axis=(0, 2), keepdims=True))
    fields *= amplitude / (1 + 0.05 * np.arange(k))[None, :, None]
    return fields.transpose(0, 2, 1)  # [N, 3, k]


# ----------------------------------------------------------------------------------------------- truth


@dataclass
class ModelTruth:
    """What a loader should produce. Linear models: vertices = mean + id_basis @ id + exp_basis @ exp,
    recentred on the centroid of `mean`. FLAME: the published LBS, exp = blendshapes then 3 jaw values."""

    kind: str
    unit: float  # metres per model unit
    faces: np.ndarray  # [F, 3] 0-based
    mean: np.ndarray  # [N, 3] model units (FLAME: v_template)
    id_basis: np.ndarray  # [N, 3, K_id] scaled so coefficients are N(0, 1)
    exp_basis: np.ndarray  # [N, 3, K_exp]
    landmark_index: np.ndarray | None = None  # [68] linear models
    flame: dict = field(default_factory=dict)  # posedirs, J_regressor, weights, parents, lmk_faces, lmk_bary

    def vertices(self, id_coeffs, exp_coeffs, neck=None, eyes=None) -> np.ndarray:
        """[B, k_id], [B, k_exp] (FLAME: k_blend + 3; and optionally neck [B, 3], eyes [B, 6] axis-angle)
        -> [B, N, 3] float64."""
        id_coeffs, exp_coeffs = np.asarray(id_coeffs, np.float64), np.asarray(exp_coeffs, np.float64)
        if self.kind == "flame":
            B = len(id_coeffs)
            neck = np.zeros((B, 3)) if neck is None else np.asarray(neck, np.float64)
            eyes = np.zeros((B, 6)) if eyes is None else np.asarray(eyes, np.float64)
            return np.stack([self._flame_one(*args) for args in zip(id_coeffs, exp_coeffs, neck, eyes)])
        k_id, k_exp = id_coeffs.shape[1], exp_coeffs.shape[1]
        v = (self.mean[None] + np.einsum("nck,bk->bnc", self.id_basis[..., :k_id], id_coeffs)
             + np.einsum("nck,bk->bnc", self.exp_basis[..., :k_exp], exp_coeffs))
        return v - self.mean.mean(axis=0)

    def landmarks(self, id_coeffs, exp_coeffs, neck=None, eyes=None) -> np.ndarray:
        """[B, 68, 3] float64."""
        v = self.vertices(id_coeffs, exp_coeffs, neck, eyes)
        if self.kind != "flame":
            return v[:, self.landmark_index]
        corners = v[:, self.faces[self.flame["lmk_faces"]]]  # [B, 68, 3, 3]
        return np.einsum("blkc,lk->blc", corners, self.flame["lmk_bary"])

    def _flame_one(self, id_coeffs: np.ndarray, exp_coeffs: np.ndarray, neck: np.ndarray, eyes: np.ndarray
                   ) -> np.ndarray:
        from scipy.spatial.transform import Rotation

        fl = self.flame
        blend, jaw = exp_coeffs[:-3], exp_coeffs[-3:]
        v_shaped = (self.mean + self.id_basis[..., :len(id_coeffs)] @ id_coeffs
                    + self.exp_basis[..., :len(blend)] @ blend)
        joints = fl["J_regressor"] @ v_shaped  # [5, 3]
        pose = np.zeros((5, 3))
        pose[1], pose[2], pose[3], pose[4] = neck, jaw, eyes[:3], eyes[3:]
        rot = Rotation.from_rotvec(pose).as_matrix()  # [5, 3, 3]
        feature = np.concatenate([(rot[j] - np.eye(3)).reshape(-1) for j in range(1, 5)])
        v_posed = v_shaped + fl["posedirs"] @ feature
        world = []
        for j, parent in enumerate(fl["parents"]):
            local = np.eye(4)
            local[:3, :3] = rot[j]
            local[:3, 3] = joints[j] - (joints[parent] if parent >= 0 else 0)
            world.append(local if parent < 0 else world[parent] @ local)
        skin = []
        for j in range(5):
            unpose = np.eye(4)
            unpose[:3, 3] = -joints[j]
            skin.append(world[j] @ unpose)
        blended = np.einsum("nj,jxy->nxy", fl["weights"], np.stack(skin))  # [N, 4, 4]
        homo = np.concatenate([v_posed, np.ones((len(v_posed), 1))], 1)
        return np.einsum("nxy,ny->nx", blended, homo)[:, :3]


# ----------------------------------------------------------------------------------------------- BFM 2009


def _stored_f32(a: np.ndarray) -> np.ndarray:
    """The float64 value of what a float32 file holds."""
    return np.asarray(a).astype(np.float32).astype(np.float64)


def write_bfm2009_mat(path: str, mean: np.ndarray, id_basis: np.ndarray, exp_basis: np.ndarray,
                      faces: np.ndarray, landmark_index: np.ndarray, *, dtype=np.float32) -> None:
    """mean [N, 3], bases [N, 3, K] in decimetres, faces [F, 3] and landmark_index [68] 0-based."""
    import scipy.io

    n = len(mean)
    rng = np.random.default_rng(3)
    scipy.io.savemat(path, {
        "meanshape": mean.reshape(1, 3 * n).astype(dtype),
        "idBase": id_basis.reshape(3 * n, -1).astype(dtype),
        "exBase": exp_basis.reshape(3 * n, -1).astype(dtype),
        "meantex": rng.uniform(0, 255, (1, 3 * n)).astype(dtype),
        "texBase": rng.normal(0, 5, (3 * n, 8)).astype(dtype),
        "tri": (faces + 1).astype(np.float64),
        "point_buf": rng.integers(1, len(faces) + 1, (n, 8)).astype(np.float64),
        "tri_mask2": (np.arange(len(faces))[:, None] + 1).astype(np.float64),
        "keypoints": (landmark_index + 1).reshape(1, 68).astype(np.float64),
        "frontmask2_idx": (np.arange(n)[:, None] + 1).astype(np.float64),
        "skinmask": np.ones((1, n)),
    })


def _bfm2009_files(folder: str, name: str) -> tuple[str, str, ModelTruth]:
    verts, faces, ibug = face_mesh()
    unit = 0.1
    mean = verts / unit + np.array([0.02, 0.3, 0.4])  # the converted files are not centred
    id_basis = smooth_fields(verts, 80, 0.004 / unit, seed=11)
    exp_basis = smooth_fields(verts, 64, 0.003 / unit, seed=12)
    path = os.path.join(folder, name)
    write_bfm2009_mat(path, mean, id_basis, exp_basis, faces, ibug)
    return path, "", ModelTruth("bfm2009", unit, faces, _stored_f32(mean), _stored_f32(id_basis),
                                _stored_f32(exp_basis), ibug)


# ----------------------------------------------------------------------------------------------- BFM 2017


def _orthonormal(fields: np.ndarray) -> np.ndarray:
    """[N, 3, k] -> [3N, k] orthonormal columns spanning the fields."""
    q, _ = np.linalg.qr(fields.reshape(-1, fields.shape[2]))
    return q


def write_bfm2017_h5(path: str, shape_mean: np.ndarray, shape_basis: np.ndarray, shape_variance: np.ndarray,
                     exp_mean: np.ndarray, exp_basis: np.ndarray, exp_variance: np.ndarray, faces: np.ndarray) -> None:
    """Means [3N], orthonormal bases [3N, K], variances [K] (mm, mm^2), faces [F, 3] 0-based."""
    import h5py

    n = len(shape_mean) // 3
    with h5py.File(path, "w") as f:
        for part, mean, basis, variance in (("shape", shape_mean, shape_basis, shape_variance),
                                            ("expression", exp_mean, exp_basis, exp_variance),
                                            ("color", np.full(3 * n, 0.5), shape_basis[:, :4], np.full(4, 0.01))):
            model = f.create_group(f"{part}/model")
            model["mean"] = mean.astype(np.float32)
            model["pcaBasis"] = basis.astype(np.float32)
            model["pcaVariance"] = variance.astype(np.float32)
            model["noiseVariance"] = np.float32(1e-4)
            rep = f.create_group(f"{part}/representer")
            rep["points"] = (shape_mean.reshape(n, 3).T).astype(np.float32)
            rep["cells"] = faces.T.astype(np.uint32)
        f.create_group("metadata/landmarks")["json"] = "[]"


def write_landmark_indices(path: str, index: np.ndarray) -> None:
    with open(path, "w") as f:
        f.write("# iBUG-68 vertex indices, 0-based\n")
        f.write("\n".join(str(int(i)) for i in index) + "\n")


def _bfm2017_files(folder: str, name: str) -> tuple[str, str, ModelTruth]:
    verts, faces, ibug = face_mesh()
    unit = 0.001
    shape_mean = (verts / unit + np.array([1.0, 20.0, 60.0])).reshape(-1)
    shape_q = _orthonormal(smooth_fields(verts, 90, 1.0, seed=21))
    exp_q = _orthonormal(smooth_fields(verts, 70, 1.0, seed=22))
    n3 = shape_q.shape[0]
    shape_var = 4.0**2 * n3 / (1 + 0.05 * np.arange(90)) ** 2  # column rms 1/sqrt(3N): ~4 mm per coordinate
    exp_var = 3.0**2 * n3 / (1 + 0.05 * np.arange(70)) ** 2
    exp_mean = smooth_fields(verts, 1, 0.5, seed=23).reshape(-1)  # a small deformation, mm
    path = os.path.join(folder, name)
    write_bfm2017_h5(path, shape_mean, shape_q, shape_var, exp_mean, exp_q, exp_var, faces)
    lmk_path = os.path.join(folder, "bfm2017_ibug68.txt")
    write_landmark_indices(lmk_path, ibug)
    n = len(verts)
    mean = (_stored_f32(shape_mean) + _stored_f32(exp_mean)).reshape(n, 3)
    id_basis = (_stored_f32(shape_q) * np.sqrt(_stored_f32(shape_var))).reshape(n, 3, -1)
    exp_basis = (_stored_f32(exp_q) * np.sqrt(_stored_f32(exp_var))).reshape(n, 3, -1)
    return path, lmk_path, ModelTruth("bfm2017", unit, faces, mean, id_basis, exp_basis, ibug)


# ----------------------------------------------------------------------------------------------- FLAME


class ChumpyCh:
    """Pickles as chumpy.ch.Ch does: NEWOBJ of the class, then its __dict__ without _parents/_cache."""

    pickle_as = ("chumpy.ch", "Ch")

    def __init__(self, x):
        self.x = np.asarray(x, np.float64)

    def __reduce_ex__(self, protocol):
        state = {"_dirty_vars": set(), "_itr": None, "_depends_on_deps": {}, "_make_dense": False,
                 "_make_sparse": False, "x": self.x}
        return copyreg.__newobj__, (type(self),), state


class ScipyCsc:
    """Pickles as an old scipy csc_matrix: NEWOBJ of scipy.sparse.csc.csc_matrix, then its __dict__."""

    pickle_as = ("scipy.sparse.csc", "csc_matrix")

    def __init__(self, dense: np.ndarray):
        import scipy.sparse

        m = scipy.sparse.csc_matrix(dense)
        self.state = {"_shape": m.shape, "maxprint": 50, "format": "csc", "data": m.data,
                      "indices": m.indices.astype(np.int32), "indptr": m.indptr.astype(np.int32),
                      "_has_sorted_indices": True}

    def __reduce_ex__(self, protocol):
        return copyreg.__newobj__, (type(self),), self.state


class Py2StylePickler(pickle._Pickler):
    """Protocol 2 the way Python 2 wrote it: str and bytes as BINSTRING (read back with
    encoding='latin1'), and classes carrying `pickle_as` named by that module and name."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def __init__(self, file):
        super().__init__(file, protocol=2)

    def _binstring(self, obj, raw: bytes):
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    def save_bytes(self, obj):
        self._binstring(obj, obj)

    def save_str(self, obj):
        if obj.isascii():
            self._binstring(obj, obj.encode("ascii"))
        else:
            super().save_str(obj)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str

    def save_global(self, obj, name=None):
        alias = getattr(obj, "pickle_as", None) if isinstance(obj, type) else None
        if alias is None:
            return super().save_global(obj, name)
        self.write(pickle.GLOBAL + f"{alias[0]}\n{alias[1]}\n".encode("ascii"))
        self.memoize(obj)


def py2_pickle_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    Py2StylePickler(buffer).dump(obj)
    return buffer.getvalue()


def write_flame_pkl(path: str, v_template, shapedirs, posedirs, J_regressor, weights, parents, faces) -> None:
    """v_template [N, 3], shapedirs [N, 3, 400], posedirs [N, 3, 36], J_regressor [5, N] dense,
    weights [N, 5], parents [5] (root -1), faces [F, 3] 0-based; the layout of generic_model.pkl."""
    root_as_uint = np.where(np.asarray(parents) < 0, 2**32 - 1, parents)  # how the files store the root's parent
    kintree = np.stack([root_as_uint, np.arange(len(parents))]).astype(np.int64)
    model = {
        "f": np.asarray(faces, np.uint32),
        "v_template": ChumpyCh(v_template),
        "shapedirs": ChumpyCh(shapedirs),
        "posedirs": ChumpyCh(posedirs),
        "J_regressor": ScipyCsc(J_regressor),
        "weights": ChumpyCh(weights),
        "kintree_table": kintree,
        "J": ChumpyCh(J_regressor @ v_template),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    with open(path, "wb") as f:
        f.write(py2_pickle_bytes(model))


def write_flame_embedding(path: str, lmk_faces: np.ndarray, lmk_bary: np.ndarray, n_faces: int,
                          full_shape: str = "[1, 68]") -> None:
    """DECA's landmark_embedding.npy: np.save of a dict; full_* [1, 68] (or [68] with full_shape='[68]'),
    static_* for points 17-67, dynamic_* [79, 17] as torch tensors (how DECA's file holds them)."""
    import torch

    rng = np.random.default_rng(5)
    lead = (1,) if full_shape == "[1, 68]" else ()
    bary_dyn = rng.dirichlet(np.ones(3), size=(79, 17))
    embedding = {
        "static_lmk_faces_idx": lmk_faces[17:].astype(np.int64),
        "static_lmk_bary_coords": lmk_bary[17:].astype(np.float64),
        "dynamic_lmk_faces_idx": torch.from_numpy(rng.integers(0, n_faces, (79, 17))),
        "dynamic_lmk_bary_coords": torch.from_numpy(bary_dyn.astype(np.float32)),
        "full_lmk_faces_idx": lmk_faces.astype(np.int64).reshape(*lead, 68),
        "full_lmk_bary_coords": lmk_bary.astype(np.float64).reshape(*lead, 68, 3),
    }
    np.save(path, embedding, allow_pickle=True)


def _flame_rig(verts: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(J_regressor [5, N], weights [N, 5], parents) for the face mesh: root and neck below the chin, jaw
    between the ears, eyes at the irises; the jaw moves what lies below the mouth corners."""
    n = len(verts)
    reg = np.zeros((5, n))
    reg[0, [152, 234, 454]] = 1 / 3
    reg[1, [152, 58, 288, 234, 454]] = 1 / 5
    reg[2, [234, 454, 132, 361]] = [0.4, 0.4, 0.1, 0.1]
    iris_a, iris_b = np.arange(468, 473), np.arange(473, 478)
    left, right = (iris_a, iris_b) if verts[iris_a, 0].mean() > 0 else (iris_b, iris_a)  # left eye at +x
    reg[3, left] = 1 / 5
    reg[4, right] = 1 / 5
    mouth_y = verts[[61, 291], 1].mean()
    jaw = 1 / (1 + np.exp(-(mouth_y - verts[:, 1]) / 0.006))
    weights = np.stack([0.3 * (1 - jaw), 0.7 * (1 - jaw), jaw, np.zeros(n), np.zeros(n)], 1)
    weights[left], weights[right] = np.eye(5)[3], np.eye(5)[4]
    return reg, weights, [-1, 0, 1, 1, 1]


def _landmark_embedding(faces: np.ndarray, ibug: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A face containing each iBUG vertex, with barycentric weights mostly on that vertex."""
    rng = np.random.default_rng(7)
    lmk_faces, lmk_bary = np.zeros(68, np.int64), np.zeros((68, 3))
    for i, v in enumerate(ibug):
        face = int(np.flatnonzero((faces == v).any(1))[0])
        w = rng.uniform(0.05, 0.25, 3)
        w[list(faces[face]).index(v)] = 1.0
        lmk_faces[i], lmk_bary[i] = face, w / w.sum()
    return lmk_faces, lmk_bary


def _flame_files(folder: str, name: str) -> tuple[str, str, ModelTruth]:
    verts, faces, ibug = face_mesh()
    shapedirs = np.concatenate([smooth_fields(verts, FLAME_SHAPE, 0.003, seed=31),
                                smooth_fields(verts, FLAME_EXPRESSION, 0.002, seed=32)], 2)
    posedirs = smooth_fields(verts, 36, 0.001, seed=33)
    reg, weights, parents = _flame_rig(verts)
    path = os.path.join(folder, name)
    write_flame_pkl(path, verts, shapedirs, posedirs, reg, weights, parents, faces)
    lmk_faces, lmk_bary = _landmark_embedding(faces, ibug)
    lmk_path = os.path.join(folder, "landmark_embedding.npy")
    write_flame_embedding(lmk_path, lmk_faces, lmk_bary, len(faces))
    flame = {"posedirs": posedirs, "J_regressor": reg, "weights": weights, "parents": parents,
             "lmk_faces": lmk_faces, "lmk_bary": lmk_bary}
    return path, lmk_path, ModelTruth("flame", 1.0, faces, verts, shapedirs[..., :FLAME_SHAPE],
                                      shapedirs[..., FLAME_SHAPE:], None, flame)


_DEFAULT_NAMES = {"bfm2009": "BFM_model_front.mat", "bfm2017": "model2017-1_face12_nomouth.h5",
                  "flame": "generic_model.pkl"}


def make_model_files(folder: str, kind: str, name: str = "") -> tuple[str, str, ModelTruth]:
    """Write a small model of `kind` into `folder` (under its usual file name, or `name`):
    (model path, landmark file path or '', truth)."""
    os.makedirs(folder, exist_ok=True)
    name = name or _DEFAULT_NAMES[kind]
    make = {"bfm2009": _bfm2009_files, "bfm2017": _bfm2017_files, "flame": _flame_files}[kind]
    return make(str(folder), name)
