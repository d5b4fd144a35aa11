"""An avatar in its canonical space from cameras around the head (a turntable), with the expression and
non-face codes of one of its own frames (canonical = world, y up, z out of the face)."""

from __future__ import annotations

import numpy as np
import torch

from model.avatar.frames import AvatarFrames
from model.avatar.model import Avatar
from model.showcase.render import render_canonical, ring


@torch.no_grad()
def turntable(avatar: Avatar, frames: AvatarFrames, n: int = 36, size: int = 256, sweep_deg: float = 360.0,
              device="cpu") -> list[np.ndarray]:
    """n uint8 [size, size, 3] views around the avatar, the first in front of the face."""
    inputs, _ = frames.batch([int(frames.train[0])], avatar.config, torch.device(device))
    z_exp, z_nf = avatar.motion_codes(inputs)
    g = avatar.canonical(z_exp, z_nf)
    K, E = ring(avatar.P_id, n, size, sweep_deg)
    return list(render_canonical(avatar, g, K, E, size)[0])
