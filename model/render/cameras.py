"""Camera helpers for rendering heads: look-at extrinsics, orbits, square pinhole intrinsics.

    world_to_cam = look_at(eye, target, up)                            # [4,4]
    world_to_cam = orbit_cameras(36, centre, 0.6, up, front)           # [36,4,4], a full turn
    K = intrinsics_for(512, fov_to_fit(0.15, 0.6))                     # [3,3]

Conventions (as in model/render/mesh.py and model/render/gaussians.py):
    - OpenCV cameras: x right, y down, z forward (the camera looks along +z).
    - world_to_cam maps world points to camera points: x_cam = R x_world + t, world_to_cam = [[R, t], [0, 1]].
    - Pixel (x, y) has its centre at the integer coordinates (x, y): for a square image of `size` pixels
      the principal point is cx = cy = (size - 1) / 2.
    - `up` is the world direction that should point upward in the image (toward smaller pixel y).

Rotations are built in float64 and cast at the end (float32 unless `dtype` says otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

VectorLike = torch.Tensor | Sequence[float]


def _vec(v: VectorLike) -> torch.Tensor:
    """A float64 CPU tensor [..., 3] from a tensor, array or sequence."""
    t = torch.as_tensor(v).detach().to(device="cpu", dtype=torch.float64)
    if t.shape[-1:] != (3,):
        raise ValueError(f"expected a vector of 3 components, got shape {tuple(t.shape)}")
    return t


def _normalise(v: torch.Tensor, what: str) -> torch.Tensor:
    n = torch.linalg.norm(v, dim=-1, keepdim=True)
    if bool((n < 1e-12).any()):
        raise ValueError(f"{what} has zero length")
    return v / n


def look_at(
    eye: VectorLike,  # [...,3] camera position (world)
    target: VectorLike,  # [...,3] point the camera looks at (world)
    up: VectorLike,  # [...,3] world direction that should appear upward in the image
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:  # [...,4,4] world_to_cam
    """World-to-camera transform of an OpenCV camera at `eye` looking at `target`.

    Camera z points from eye to target, camera y (image down) is -up made perpendicular to z, camera x
    (image right) completes a right-handed frame (x = y cross z). If `up` is (nearly) parallel to the
    viewing direction, the world axis least aligned with it is used as up instead. Inputs broadcast.
    """
    eye_t, target_t, up_t = torch.broadcast_tensors(_vec(eye), _vec(target), _vec(up))
    z = _normalise(target_t - eye_t, "target - eye")
    up_n = _normalise(up_t, "up")

    # fallback for up parallel to the viewing direction: the world axis least aligned with z
    degenerate = torch.linalg.norm(torch.linalg.cross(z, up_n), dim=-1) < 1e-6
    if bool(degenerate.any()):
        axes = torch.eye(3, dtype=torch.float64)
        alt = axes[torch.argmin(z.abs(), dim=-1)]  # [...,3]
        up_n = torch.where(degenerate[..., None], alt, up_n)

    x = _normalise(torch.linalg.cross(z, up_n), "right")  # right = forward x up
    y = torch.linalg.cross(z, x)  # down; unit since z, x are orthonormal
    R = torch.stack([x, y, z], dim=-2)  # [...,3,3], rows are the camera axes in world coordinates
    t = -(R @ eye_t[..., None])[..., 0]  # [...,3]

    out = torch.zeros(*R.shape[:-2], 4, 4, dtype=torch.float64)
    out[..., :3, :3] = R
    out[..., :3, 3] = t
    out[..., 3, 3] = 1.0
    return out.to(dtype=dtype, device=device)


def orbit_angles(n: int, sweep_deg: float = 360.0, start_deg: float | None = None) -> list[float]:
    """The n orbit angles in degrees used by `orbit_cameras`.

    sweep >= 360: n evenly spaced angles 0, 360/n, ... (the first is not repeated at the end).
    sweep < 360: n angles from -sweep/2 to +sweep/2 inclusive (a single camera sits at 0).
    start_deg shifts all angles so that the first one equals start_deg (spacing unchanged).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if sweep_deg >= 360.0:
        angles = [sweep_deg * i / n for i in range(n)]
    elif n == 1:
        angles = [0.0]
    else:
        angles = [-sweep_deg / 2 + sweep_deg * i / (n - 1) for i in range(n)]
    if start_deg is not None:
        angles = [a - angles[0] + start_deg for a in angles]
    return angles


def orbit_cameras(
    n: int,
    centre: VectorLike,  # [3] point all cameras look at
    radius: float,
    up: VectorLike,  # [3] world up (orbit axis; appears upward in every image)
    front: VectorLike,  # [3] direction of the angle-0 camera from the centre (e.g. the face direction)
    *,
    elevation_deg: float = 0.0,
    sweep_deg: float = 360.0,
    start_deg: float | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:  # [n,4,4] world_to_cam
    """n cameras on a circle of `radius` around `centre` in the plane perpendicular to `up`, all looking at it.

    Angle 0 puts the camera at centre + radius * front (front is first made perpendicular to up); positive
    angles turn counter-clockwise about `up` (right-hand rule), from front toward up x front. See
    `orbit_angles` for how sweep_deg / start_deg choose the angles. elevation_deg raises the camera toward
    `up` (negative lowers it) while keeping its distance to the centre equal to radius.
    """
    if radius <= 0:
        raise ValueError(f"radius must be positive, got {radius}")
    c = _vec(centre)
    u = _normalise(_vec(up), "up")
    f = _vec(front)
    f = _normalise(f - (f * u).sum() * u, "front (perpendicular to up)")
    s = torch.linalg.cross(u, f)  # the direction at +90 degrees

    theta = torch.tensor(orbit_angles(n, sweep_deg, start_deg), dtype=torch.float64) * (math.pi / 180.0)  # [n]
    el = math.radians(elevation_deg)
    horizontal = torch.cos(theta)[:, None] * f + torch.sin(theta)[:, None] * s  # [n,3]
    eyes = c + radius * (math.cos(el) * horizontal + math.sin(el) * u)  # [n,3]
    return look_at(eyes, c.expand_as(eyes), u.expand_as(eyes), dtype=dtype, device=device)


def intrinsics_for(
    size: int,
    fov_deg: float,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:  # [3,3] K
    """Pinhole intrinsics of a square `size` x `size` image with field of view `fov_deg` (both axes).

    f = size / 2 / tan(fov / 2); cx = cy = (size - 1) / 2 (pixel centres at integer coordinates).
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    f = size / 2.0 / math.tan(math.radians(fov_deg) / 2.0)
    c = (size - 1) / 2.0
    return torch.tensor([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]], dtype=dtype, device=device)


def fov_to_fit(radius_of_object: float, distance: float, margin: float = 1.1) -> float:
    """Field of view in degrees in which a sphere of `radius_of_object` at `distance` (centre on the optical
    axis) fills the image's inscribed circle when margin = 1; margin > 1 leaves room around it.

    The sphere's silhouette has tangent half-angle asin(r / d), i.e. image-plane radius r / sqrt(d^2 - r^2);
    the fov is 2 * atan(margin * r / sqrt(d^2 - r^2)).
    """
    if radius_of_object <= 0 or margin <= 0:
        raise ValueError("radius_of_object and margin must be positive")
    if distance <= radius_of_object:
        raise ValueError(f"distance ({distance}) must exceed the object's radius ({radius_of_object})")
    half = math.atan(margin * radius_of_object / math.sqrt(distance**2 - radius_of_object**2))
    return math.degrees(2.0 * half)
