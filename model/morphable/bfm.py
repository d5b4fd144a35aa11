"""Readers for the Basel Face Models.

BFM 2009, converted .mat (scipy.io.loadmat). Two converters write the same keys: Deep3DFaceRecon's
`BFM_model_front.mat` (util/load_mats.py) and 3DMM-Fitting-Pytorch's `BFM09_model_info.mat`
(convert_bfm09_data.py, also read by Multiview-3DMM-Fitting):

    meanshape [1, 3N]   mean shape, xyz interleaved, in decimetres (the original's micrometres / 1e5)
    idBase    [3N, 80]  identity basis, already multiplied by its standard deviations (shapeEV)
    exBase    [3N, 64]  expression basis (Guo et al.'s Exp_Pca.bin), already multiplied by std_exp
    tri       [F, 3]    triangles, 1-based (MATLAB)
    keypoints [1, 68]   iBUG-68 vertex indices, 1-based
    (also meantex, texBase, point_buf, tri_mask2, frontmask2_idx, skinmask: not used here)

BFM 2017 (`model2017-1_bfm_nomouth.h5`, `model2017-1_face12_nomouth.h5`), statismo HDF5 via h5py:

    shape/model/mean [3N], pcaBasis [3N, 199] (orthonormal columns), pcaVariance [199]
    expression/model/mean [3N] (a deformation, added), pcaBasis [3N, 100], pcaVariance [100]
    shape/representer/cells [3, F] 0-based triangles; points [3, N] the reference mesh
    millimetres. The bases are multiplied by sqrt(pcaVariance) so coefficients are N(0, 1).
    No iBUG-68 list inside: the 68 vertex indices come from a separate file (0-based, .txt or .npy).

Both BFMs are recentred on the centroid of their mean shape (as Deep3DFaceRecon does), so the model
origin sits inside the head; the frame is x to the subject's left, y up, z out of the face.
"""

from __future__ import annotations

import re

import numpy as np

from model.morphable.base import ModelFileError, check_count
from model.morphable.linear import LinearMorphableModel

BFM2009_UNIT = 0.1  # metres per unit: the converters divide the original micrometres by 1e5
BFM2017_UNIT = 0.001  # millimetres


def _matrix(path: str, name: str, value, rows: int | None = None) -> np.ndarray:
    a = np.asarray(value)
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.number) or (rows is not None and a.shape[0] != rows):
        want = f"[{rows if rows is not None else 'rows'}, K]"
        raise ModelFileError(path, f"{name} has shape {list(a.shape)} ({a.dtype}), expected {want} numbers")
    if not np.isfinite(a).all():
        raise ModelFileError(path, f"{name} holds non-finite values")
    return a


def _indices(path: str, name: str, value, *, base: int, count: int, shape_note: str) -> np.ndarray:
    """Integer-valued indices (stored as any number type) shifted to 0-based and checked in [0, count)."""
    a = np.asarray(value)
    if not np.issubdtype(a.dtype, np.number) or a.size == 0:
        raise ModelFileError(path, f"{name} has dtype {a.dtype} and shape {list(a.shape)}, expected {shape_note}")
    if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
        raise ModelFileError(path, f"{name} holds non-integer values, expected vertex indices")
    a = np.round(a).astype(np.int64) - base
    if a.min() < 0 or a.max() >= count:
        lo, hi = base, count - 1 + base
        raise ModelFileError(path, f"{name} holds indices {a.min() + base}..{a.max() + base}, "
                                   f"expected {lo}..{hi} ({'1' if base else '0'}-based, {count} vertices)")
    return a


def _recentred(mean: np.ndarray) -> np.ndarray:  # [N, 3]
    return mean - mean.mean(axis=0, keepdims=True)


def load_bfm2009(path: str, *, n_id: int | None = None, n_exp: int | None = None) -> LinearMorphableModel:
    """BFM 2009 converted to `BFM_model_front.mat` / `BFM09_model_info.mat` (see the module notes)."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path, variable_names=["meanshape", "idBase", "exBase", "tri", "keypoints"])
    except NotImplementedError as e:  # MATLAB v7.3 files are HDF5
        raise ModelFileError(path, f"a MATLAB v7.3 (HDF5) file; save it as a v5 .mat ({e})") from e
    except Exception as e:  # scipy raises ValueError/TypeError/OSError/... on bytes that are not a .mat
        raise ModelFileError(path, f"not a readable MATLAB .mat file ({type(e).__name__}: {e})") from e
    for key in ("meanshape", "idBase", "exBase", "tri", "keypoints"):
        if key not in mat:
            raise ModelFileError(path, f"missing key {key!r} (a converted BFM09 .mat holds meanshape, idBase, "
                                       f"exBase, tri, keypoints)")
    meanshape = np.asarray(mat["meanshape"])
    if not np.issubdtype(meanshape.dtype, np.number) or meanshape.size % 3 or meanshape.size == 0 \
            or sorted(meanshape.shape)[:-1] not in ([], [1]):
        raise ModelFileError(path, f"meanshape has shape {list(meanshape.shape)}, expected [1, 3N]")
    n = meanshape.size // 3
    mean = meanshape.reshape(n, 3).astype(np.float64)
    id_base = _matrix(path, "idBase", mat["idBase"], rows=3 * n)
    ex_base = _matrix(path, "exBase", mat["exBase"], rows=3 * n)
    tri = np.asarray(mat["tri"])
    if tri.ndim != 2 or tri.shape[1] != 3:
        raise ModelFileError(path, f"tri has shape {list(tri.shape)}, expected [F, 3]")
    faces = _indices(path, "tri", tri, base=1, count=n, shape_note="[F, 3] 1-based vertex indices")
    keypoints = np.asarray(mat["keypoints"])
    if keypoints.size != 68:
        raise ModelFileError(path, f"keypoints has shape {list(keypoints.shape)}, expected [1, 68]")
    lmk = _indices(path, "keypoints", keypoints.reshape(68), base=1, count=n, shape_note="[1, 68] 1-based")
    k_id = check_count("bfm2009", "n_id", n_id, 80, id_base.shape[1])
    k_exp = check_count("bfm2009", "n_exp", n_exp, 64, ex_base.shape[1])
    return LinearMorphableModel(
        kind="bfm2009", path=path, landmarks_path="", unit=BFM2009_UNIT,
        mean=_recentred(mean),
        id_basis=id_base[:, :k_id].reshape(n, 3, k_id),
        exp_basis=ex_base[:, :k_exp].reshape(n, 3, k_exp),
        faces=faces, landmark_index=lmk)


def read_landmark_indices(path: str, n_vertices: int) -> np.ndarray:
    """[68] 0-based vertex indices in iBUG-68 order from a .npy (integer array) or a text file (integers
    separated by white space or commas; '#' starts a comment)."""
    if path.lower().endswith(".npy"):
        try:
            values = np.load(path, allow_pickle=False)
        except Exception as e:
            raise ModelFileError(path, f"not a plain .npy integer array ({type(e).__name__}: {e})") from e
    else:
        try:
            with open(path, encoding="utf-8") as f:
                text = "\n".join(line.split("#", 1)[0] for line in f)
        except UnicodeDecodeError as e:
            raise ModelFileError(path, "not a text file of vertex indices (and not named .npy)") from e
        tokens = [t for t in re.split(r"[\s,]+", text) if t]
        if not all(re.fullmatch(r"[+-]?\d+", t) for t in tokens):
            bad = next(t for t in tokens if not re.fullmatch(r"[+-]?\d+", t))
            raise ModelFileError(path, f"{bad[:20]!r} is not an integer vertex index")
        values = np.array([int(t) for t in tokens], dtype=np.int64)
    values = np.asarray(values)
    if values.size != 68 or not np.issubdtype(values.dtype, np.integer):
        raise ModelFileError(path, f"holds {values.size} values of type {values.dtype}, expected 68 integer "
                                   f"vertex indices (0-based, iBUG-68 order)")
    return _indices(path, "the landmark index list", values.reshape(68), base=0, count=n_vertices,
                    shape_note="68 integers")


_BFM2017_KEYS = ("shape/model/mean", "shape/model/pcaBasis", "shape/model/pcaVariance",
                 "expression/model/mean", "expression/model/pcaBasis", "expression/model/pcaVariance",
                 "shape/representer/cells")


def load_bfm2017(path: str, landmarks_path: str, *, n_id: int | None = None,
                 n_exp: int | None = None) -> LinearMorphableModel:
    """BFM 2017 statismo .h5 plus a file of 68 landmark vertex indices (see the module notes)."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except Exception as e:
        raise ModelFileError(path, f"not a readable HDF5 file ({type(e).__name__}: {e})") from e
    with f:
        for key in _BFM2017_KEYS:
            if not isinstance(f.get(key), h5py.Dataset):
                raise ModelFileError(path, f"missing dataset {key!r} (a BFM 2017 .h5 holds "
                                           f"shape/model/{{mean,pcaBasis,pcaVariance}}, the same under "
                                           f"expression/model, and shape/representer/cells)")
        shape_mean = np.asarray(f["shape/model/mean"][()], dtype=np.float64)
        if shape_mean.ndim != 1 or shape_mean.size % 3 or shape_mean.size == 0:
            raise ModelFileError(path, f"shape/model/mean has shape {list(shape_mean.shape)}, expected [3N]")
        n = shape_mean.size // 3
        blocks = {}
        for part, want, asked in (("shape", 80, n_id), ("expression", 64, n_exp)):
            basis_ds, var_ds = f[f"{part}/model/pcaBasis"], f[f"{part}/model/pcaVariance"]
            if len(basis_ds.shape) != 2 or basis_ds.shape[0] != 3 * n:
                raise ModelFileError(path, f"{part}/model/pcaBasis has shape {list(basis_ds.shape)}, "
                                           f"expected [{3 * n}, K]")
            k_all = basis_ds.shape[1]
            if var_ds.shape != (k_all,):
                raise ModelFileError(path, f"{part}/model/pcaVariance has shape {list(var_ds.shape)}, "
                                           f"expected [{k_all}]")
            k = check_count("bfm2017", "n_id" if part == "shape" else "n_exp", asked, want, k_all)
            basis = np.asarray(basis_ds[:, :k], dtype=np.float64)
            variance = np.asarray(var_ds[:k], dtype=np.float64)
            if not (np.isfinite(basis).all() and np.isfinite(variance).all()) or (variance < 0).any():
                raise ModelFileError(path, f"{part}/model holds non-finite values or negative variances")
            blocks[part] = (basis * np.sqrt(variance)).reshape(n, 3, k)
        exp_mean = np.asarray(f["expression/model/mean"][()], dtype=np.float64)
        if exp_mean.shape != (3 * n,):
            raise ModelFileError(path, f"expression/model/mean has shape {list(exp_mean.shape)}, "
                                       f"expected [{3 * n}] like shape/model/mean")
        cells = np.asarray(f["shape/representer/cells"][()])
    if cells.ndim != 2 or 3 not in cells.shape:
        raise ModelFileError(path, f"shape/representer/cells has shape {list(cells.shape)}, expected [3, F]")
    cells = cells.T if cells.shape[0] == 3 and cells.shape[1] != 3 else cells
    faces = _indices(path, "shape/representer/cells", cells, base=0, count=n, shape_note="[3, F] 0-based")
    landmark_index = read_landmark_indices(landmarks_path, n)
    mean = (shape_mean + exp_mean).reshape(n, 3)
    return LinearMorphableModel(
        kind="bfm2017", path=path, landmarks_path=landmarks_path, unit=BFM2017_UNIT,
        mean=_recentred(mean), id_basis=blocks["shape"], exp_basis=blocks["expression"],
        faces=faces, landmark_index=landmark_index)
