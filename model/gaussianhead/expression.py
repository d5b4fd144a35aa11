"""The expression condition e of each frame (GaussianHead eq. 3 feeds 3DMM expression parameters).

    source "fit/expression": the store's morphable-model coefficients (the fitting stage with a BFM/FLAME
                             backend), used as they are;
    source "landmarks":      otherwise, from the monocular 3D landmarks: the head-frame landmarks (fitted
                             pose and scale removed) minus their mean over the training frames, projected on
                             the first `dim` principal components of the training frames and divided by the
                             first component's standard deviation (zero-padded when fewer frames than
                             components). Held-out frames use the training frames' mean and basis.
The mapping (mean, basis, scale) is saved with the baseline so evaluation and driving reuse it.
"""

from __future__ import annotations

import numpy as np

from datasets.store import Store
from model.fitting.geometry import to_head_frame


def store_expression(store_url: str, clip: str, frames: np.ndarray, storage_options: dict | None = None
                     ) -> np.ndarray | None:
    """[T, E] fit/expression of the store frames `frames`, or None where the clip has none."""
    g = Store(store_url, storage_options or {}, mode="r").clip(clip)
    if "fit/expression" not in g:
        return None
    return np.asarray(g["fit/expression"].get_orthogonal_selection((frames,)), np.float32)


def landmark_basis(lmk3d: np.ndarray, pose: np.ndarray, scale: np.ndarray, train: np.ndarray, dim: int
                   ) -> dict[str, np.ndarray]:
    """The PCA mapping from the training frames' landmarks: mean [3L], basis [3L, dim], scale []."""
    X = to_head_frame(lmk3d[train], pose[train], scale[train]).reshape(len(train), -1)
    mean = X.mean(0)
    _, s, Vt = np.linalg.svd(X - mean, full_matrices=False)
    basis = np.zeros((X.shape[1], dim))
    k = min(dim, Vt.shape[0])
    basis[:, :k] = Vt[:k].T
    sd = s[0] / np.sqrt(max(len(train) - 1, 1)) if len(s) else 0.0
    return {"mean": mean.astype(np.float32), "basis": basis.astype(np.float32),
            "scale": np.float32(sd if sd > 1e-9 else 1.0)}


def landmark_expression(mapping: dict, lmk3d: np.ndarray, pose: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """[T, dim] expression vectors of frames [T] under a `landmark_basis` mapping."""
    X = to_head_frame(lmk3d, pose, scale).reshape(len(lmk3d), -1)
    return (((X - mapping["mean"]) @ mapping["basis"]) / mapping["scale"]).astype(np.float32)


def frame_expressions(arrays: dict, frames: np.ndarray, train: np.ndarray, store_url: str, clip: str, dim: int,
                      storage_options: dict | None = None) -> tuple[np.ndarray, dict]:
    """([T, E] expression of every usable frame, {"source": ..., mapping}) for an AvatarFrames' arrays."""
    fitted = store_expression(store_url, clip, frames, storage_options) if store_url else None
    if fitted is not None:
        return fitted, {"source": "fit/expression"}
    mapping = landmark_basis(arrays["lmk3d"], arrays["pose"], arrays["scale"], train, dim)
    return landmark_expression(mapping, arrays["lmk3d"], arrays["pose"], arrays["scale"]), \
        {"source": "landmarks", **mapping}


__all__ = ["frame_expressions", "landmark_basis", "landmark_expression", "store_expression"]
