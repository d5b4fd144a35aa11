"""The starting point of the Gaussian model: per-point tensors and networks, from a trained guiding model
(the paper's strategy) or from the landmark-placed head template (the ablation it is compared with).

    points = from_guiding(guiding, config)     # X0 = V0 of the mean mesh, Gamma0 = f_mean(V0), networks kept
    points = from_template(template, config)   # X0 on the initial head template, Gamma0 = 0, networks random

Either way the Gaussian attributes start as in 3D Gaussian Splatting: log scale = log of the root mean
squared distance to the `knn` nearest points (isotropic), rotation = identity, opacity = `opacity_init`.

The template: the paper fits FLAME to the mean fitted landmarks and samples its surface. Without a
morphable model file here, the template is the head shape stage 1 starts from (an ellipsoid head on a
neck, placed in the canonical frame that the mean fitted landmarks define), meshed at the same grid; its
networks are the untrained ones of a fresh guiding model.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from model.gaussian.config import GaussianConfig
from model.guiding.model import GuidingModel

POINT_TENSORS = ("positions", "features", "scales", "rotations", "opacities", "landmark_features")


def knn_log_scales(points: Tensor, k: int) -> Tensor:
    """points: [N, 3] -> [N, 3] isotropic log scales, log sqrt(mean squared distance to the k nearest)."""
    x = points.detach().cpu().double().numpy()
    k = min(k, len(x) - 1)
    dist, _ = cKDTree(x).query(x, k=k + 1)  # the first neighbour is the point itself
    d2 = np.maximum((dist[:, 1:] ** 2).mean(1), 1e-14)
    return torch.tensor(0.5 * np.log(d2), dtype=torch.float32)[:, None].repeat(1, 3)


def unique_points(points: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
    """Drop repeated points (marching tetrahedra puts one vertex per crossing edge, and edges that cross at a
    shared grid vertex give the same point): [N, 3], [N, D] -> [M, 3], [M, D], first occurrences in order."""
    key = np.round(points.detach().cpu().double().numpy() / 1e-7).astype(np.int64)
    _, first = np.unique(key, axis=0, return_index=True)
    keep = torch.as_tensor(np.sort(first), device=points.device)
    return points[keep], features[keep]


@torch.no_grad()
def _mean_mesh(guiding: GuidingModel, resolution: int) -> tuple[Tensor, Tensor]:
    """-> (V0 [N, 3], Gamma [N, D]) of the mean mesh, each point once. Changes the guiding model's grid."""
    shape = guiding.mean_shape
    if resolution and resolution != shape.resolution:  # f_mean is continuous: mesh it on another grid
        shape.resolution, shape._grid = resolution, None
    mesh = shape.extract()
    if mesh.verts.shape[0] < 4:
        raise ValueError("the stage-1 mean SDF has no surface to put Gaussians on")
    return unique_points(mesh.verts, mesh.features)


@torch.no_grad()
def _attributes(points: Tensor, features: Tensor, landmark_features: Tensor, config: GaussianConfig
                ) -> dict[str, Tensor]:
    n = points.shape[0]
    rotations = torch.zeros(n, 4)
    rotations[:, 0] = 1
    logit = math.log(config.opacity_init / (1 - config.opacity_init))
    return {"positions": points.float().cpu(), "features": features.float().cpu(),
            "scales": knn_log_scales(points, config.knn), "rotations": rotations,
            "opacities": torch.full((n,), logit), "landmark_features": landmark_features.float().cpu()}


def from_guiding(guiding: GuidingModel, config: GaussianConfig) -> dict[str, Tensor]:
    """X0 = V0, Gamma0 = f_mean(V0) and the landmarks' features f_mean(P0), from a trained guiding model."""
    points, features = _mean_mesh(guiding, config.points_resolution)
    with torch.no_grad():
        _, landmark_features = guiding.mean_shape(guiding.landmarks)
    return _attributes(points, features, landmark_features, config)


def from_template(template: GuidingModel, config: GaussianConfig) -> dict[str, Tensor]:
    """X0 on the template surface, Gamma0 = 0 (the paper's FLAME baseline sets them to zero too)."""
    points, features = _mean_mesh(template, config.points_resolution)
    L = template.landmarks.shape[0]
    return _attributes(points, torch.zeros_like(features), torch.zeros(L, features.shape[1]), config)
