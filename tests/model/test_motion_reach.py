"""Where a driven mouth is lost (model/avatar/motion_reach.py): the reach of the expression deformation
against constructed surfaces, on and off the landmarks, and the 3D opening of landmarks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.avatar.motion_reach import MOUTH_AND_JAW, expression_reach
from model.avatar.mouth import mouth_opening


def _landmarks() -> torch.Tensor:
    """[68, 3] landmarks on the plane z = 0.5 (a face looking along +z), spread over x, y in [-0.3, 0.3]."""
    g = torch.Generator().manual_seed(0)
    lm = torch.rand(68, 2, generator=g) * 0.6 - 0.3
    return torch.cat([lm, torch.full((68, 1), 0.5)], dim=1)


def _surface(z: float, step: float = 0.02) -> torch.Tensor:
    """[N, 3] points on a grid over x, y in [-0.4, 0.4] at depth z (the spacing of the tiny preset's Gaussians)."""
    xs = torch.arange(-0.4, 0.4 + 1e-9, step)
    x, y = torch.meshgrid(xs, xs, indexing="ij")
    return torch.stack([x.flatten(), y.flatten(), torch.full((x.numel(),), z)], dim=1)


def test_a_surface_through_the_landmarks_is_reached_and_one_behind_them_is_not():
    lm = _landmarks()
    on = _surface(0.5)
    reach = expression_reach(lm, on, torch.ones(len(on)), t2=0.12)
    assert reach.deformed_near.all() and reach.distance.max() < 0.02
    assert len(reach.distance) == len(MOUTH_AND_JAW)
    assert "misses" not in reach.describe()

    behind = _surface(0.5 - 0.15)  # the surface 0.15 head lengths behind the mouth, as the tiny prior learned it
    reach = expression_reach(lm, behind, torch.ones(len(behind)), t2=0.12)
    assert not reach.deformed_near.any() and reach.distance.min() == pytest.approx(0.15, abs=1e-5)
    assert "misses the landmarks" in reach.describe()


def test_gaussians_at_the_landmarks_that_do_not_deform_do_not_count():
    lm, on = _landmarks(), _surface(0.5)
    reach = expression_reach(lm, on, torch.zeros(len(on)), t2=0.12)  # l_exp 0 everywhere
    assert not reach.deformed_near.any() and reach.distance.max() < 0.02


def test_the_3d_opening_uses_depth_and_2d_ignores_it():
    lm = np.zeros((68, 3))
    lm[48], lm[54] = (-0.2, 0, 0), (0.2, 0, 0)
    lm[62], lm[66] = (0, 0, 0), (0, 0, 0.1)  # the lower lip only deeper
    assert mouth_opening(lm, dims=3) == pytest.approx(0.25)
    assert mouth_opening(lm) == pytest.approx(0.0)
