"""Reading and checking FLAME's files, all through the restricted unpickler (model/morphable/safe_pickle.py).

`generic_model.pkl` (FLAME 2020; `flame2023.pkl` of FLAME 2023 has the same layout), a Python 2 pickle
of a dict; chumpy arrays and the sparse regressor become plain numpy here:

    v_template    [N, 3]       template mesh, metres (N = 5023)
    shapedirs     [N, 3, 400]  300 identity components, then 100 expression components (chumpy Ch)
    posedirs      [N, 3, 36]   pose blendshapes on the 4 non-root joints' (R - I) entries (chumpy Ch)
    J_regressor   [5, N]       joints from vertices (scipy csc_matrix)
    weights       [N, 5]       skinning weights (chumpy Ch)
    kintree_table [2, 5]       row 0: parent of each joint (root's is -1 or 2**32 - 1), row 1: joint ids
    f             [F, 3]       triangles, 0-based (F = 9976)
    (also J, bs_style 'lbs', bs_type 'lrotmin': not used)
    joints: 0 global, 1 neck, 2 jaw, 3 left eye, 4 right eye

68-point landmark embedding, `landmark_embedding.npy` as DECA/EMOCA distribute it: np.save of a dict
(a pickle inside the .npy), keys
    full_lmk_faces_idx [1, 68] face per iBUG-68 point, full_lmk_bary_coords [1, 68, 3] barycentric coords,
    static_lmk_faces_idx [51], static_lmk_bary_coords [51, 3] (points 17-67),
    dynamic_lmk_faces_idx [79, 17], dynamic_lmk_bary_coords [79, 17, 3] (pose-dependent jaw contour;
    stored as torch tensors).
RingNet's `flame_static_embedding.pkl` (`lmk_face_idx` [51], `lmk_b_coords` [51, 3]) lacks the jaw
contour and is refused with that reason; a file with `lmk_face_idx`/`lmk_b_coords` of 68 points (.pkl,
.npy or .npz) is taken.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass

import numpy as np

from model.morphable.base import ModelFileError
from model.morphable.safe_pickle import (
    PickleRefusedError,
    load_npy_restricted,
    load_restricted,
)

FLAME_SHAPE_COMPONENTS = 300  # shapedirs[..., :300] identity, shapedirs[..., 300:] expression
FLAME_JOINTS = 5


@dataclass
class FlameArrays:
    v_template: np.ndarray  # [N, 3] metres
    shapedirs: np.ndarray  # [N, 3, K] K = 300 identity + expression components
    posedirs: np.ndarray  # [N, 3, 9 * (J - 1)]
    J_regressor: np.ndarray  # [J, N] dense
    weights: np.ndarray  # [N, J]
    parents: np.ndarray  # [J] int64, parents[0] = -1, parents[i] < i
    faces: np.ndarray  # [F, 3] int64

    @property
    def n_exp_available(self) -> int:
        return self.shapedirs.shape[2] - FLAME_SHAPE_COMPONENTS


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _unpickle(path: str, data: bytes, what: str):
    try:
        if data[:6] == b"\x93NUMPY":
            return load_npy_restricted(data)
        return load_restricted(data)
    except PickleRefusedError as e:
        raise ModelFileError(path, f"{e}") from e
    except pickle.UnpicklingError as e:
        raise ModelFileError(path, f"not a {what}: {e}") from e


def _array(path: str, name: str, value, ndim: int, shape_note: str) -> np.ndarray:
    a = value.toarray() if hasattr(value, "toarray") else np.asarray(value)
    if a.ndim != ndim or not np.issubdtype(a.dtype, np.number):
        raise ModelFileError(path, f"{name} has shape {list(a.shape)} ({a.dtype}), expected {shape_note}")
    if not np.isfinite(a).all():
        raise ModelFileError(path, f"{name} holds non-finite values")
    return a


def read_flame_model(path: str) -> FlameArrays:
    model = _unpickle(path, _read_bytes(path), "FLAME model pickle")
    if not isinstance(model, dict):
        raise ModelFileError(path, f"holds a {type(model).__name__}, expected the FLAME dict of arrays")
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f"):
        if key not in model:
            raise ModelFileError(path, f"missing key {key!r} (a FLAME model holds v_template, shapedirs, "
                                       f"posedirs, J_regressor, weights, kintree_table, f)")
    v_template = _array(path, "v_template", model["v_template"], 2, "[N, 3]")
    n = v_template.shape[0]
    if v_template.shape[1] != 3:
        raise ModelFileError(path, f"v_template has shape {list(v_template.shape)}, expected [N, 3]")
    shapedirs = _array(path, "shapedirs", model["shapedirs"], 3, f"[{n}, 3, K]")
    if shapedirs.shape[:2] != (n, 3) or shapedirs.shape[2] <= FLAME_SHAPE_COMPONENTS:
        raise ModelFileError(path, f"shapedirs has shape {list(shapedirs.shape)}, expected [{n}, 3, K] with "
                                   f"K > {FLAME_SHAPE_COMPONENTS} (300 identity then expression components)")
    kintree = _array(path, "kintree_table", model["kintree_table"], 2, f"[2, {FLAME_JOINTS}]")
    if kintree.shape != (2, FLAME_JOINTS):
        raise ModelFileError(path, f"kintree_table has shape {list(kintree.shape)}, expected [2, {FLAME_JOINTS}] "
                                   f"(global, neck, jaw, left eye, right eye)")
    parents = kintree[0].astype(np.int64)
    parents[0] = -1
    if any(not 0 <= parents[i] < i for i in range(1, FLAME_JOINTS)):
        raise ModelFileError(path, f"kintree_table has parents {kintree[0].tolist()}, expected each joint's "
                                   f"parent before it (FLAME: root, 0, 1, 1, 1)")
    j = FLAME_JOINTS
    posedirs = _array(path, "posedirs", model["posedirs"], 3, f"[{n}, 3, {9 * (j - 1)}]")
    if posedirs.shape != (n, 3, 9 * (j - 1)):
        raise ModelFileError(path, f"posedirs has shape {list(posedirs.shape)}, expected [{n}, 3, {9 * (j - 1)}]")
    regressor = _array(path, "J_regressor", model["J_regressor"], 2, f"[{j}, {n}]")
    if regressor.shape != (j, n):
        raise ModelFileError(path, f"J_regressor has shape {list(regressor.shape)}, expected [{j}, {n}]")
    weights = _array(path, "weights", model["weights"], 2, f"[{n}, {j}]")
    if weights.shape != (n, j):
        raise ModelFileError(path, f"weights has shape {list(weights.shape)}, expected [{n}, {j}]")
    faces = _array(path, "f", model["f"], 2, "[F, 3]")
    if faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer) or faces.min() < 0 or faces.max() >= n:
        raise ModelFileError(path, f"f has shape {list(faces.shape)} ({faces.dtype}), expected [F, 3] integer "
                                   f"vertex indices in 0..{n - 1}")
    return FlameArrays(v_template.astype(np.float64), shapedirs.astype(np.float64), posedirs.astype(np.float64),
                       regressor.astype(np.float64), weights.astype(np.float64), parents, faces.astype(np.int64))


def read_flame_landmarks(path: str, n_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """([68] face index, [68, 3] barycentric coordinates) of the iBUG-68 points on the FLAME mesh."""
    data = _read_bytes(path)
    if data[:2] == b"PK":  # .npz: plain arrays only
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                content = {k: npz[k] for k in npz.files}
        except Exception as e:
            raise ModelFileError(path, f"not a readable .npz of plain arrays ({type(e).__name__}: {e})") from e
    else:
        content = _unpickle(path, data, "FLAME landmark embedding")
    if isinstance(content, np.ndarray) and content.dtype == object and content.shape == ():
        content = content.item()  # np.save of a dict
    if not isinstance(content, dict):
        raise ModelFileError(path, f"holds a {type(content).__name__}, expected a dict with full_lmk_faces_idx "
                                   f"and full_lmk_bary_coords (DECA's landmark_embedding.npy)")
    if "full_lmk_faces_idx" in content and "full_lmk_bary_coords" in content:
        face_key, bary_key = "full_lmk_faces_idx", "full_lmk_bary_coords"
    elif "lmk_face_idx" in content and "lmk_b_coords" in content:
        face_key, bary_key = "lmk_face_idx", "lmk_b_coords"
    else:
        raise ModelFileError(path, f"missing key 'full_lmk_faces_idx'/'full_lmk_bary_coords' (keys: "
                                   f"{sorted(map(str, content))[:12]})")
    faces = np.asarray(content[face_key])
    bary = np.asarray(content[bary_key])
    if faces.size == 51 and face_key == "lmk_face_idx":
        raise ModelFileError(path, "holds RingNet's 51-point static embedding (iBUG points 17-67, no jaw "
                                   "contour); the 68-point fit needs a full embedding such as DECA's "
                                   "landmark_embedding.npy (full_lmk_faces_idx, full_lmk_bary_coords)")
    if faces.size != 68 or not np.issubdtype(faces.dtype, np.integer):
        raise ModelFileError(path, f"{face_key} has shape {list(faces.shape)} ({faces.dtype}), expected [1, 68] "
                                   f"or [68] face indices")
    if bary.size != 68 * 3 or bary.shape[-1] != 3 or not np.issubdtype(bary.dtype, np.floating):
        raise ModelFileError(path, f"{bary_key} has shape {list(bary.shape)} ({bary.dtype}), expected [1, 68, 3] "
                                   f"or [68, 3] barycentric coordinates")
    faces = faces.reshape(68).astype(np.int64)
    bary = bary.reshape(68, 3).astype(np.float64)
    if faces.min() < 0 or faces.max() >= n_faces:
        raise ModelFileError(path, f"{face_key} holds faces {faces.min()}..{faces.max()}, but the model has "
                                   f"{n_faces} faces: the embedding belongs to another mesh")
    if not np.isfinite(bary).all():
        raise ModelFileError(path, f"{bary_key} holds non-finite values")
    return faces, bary
