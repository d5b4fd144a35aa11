"""Where a driven mouth is lost, when the re-detected mouth (model/avatar/mouth.py) does not follow the driver.
Two checks on the avatar itself, before any rendering:

    openings = landmark_openings(avatar, driver)     the avatar's own deformed 3D lip landmarks P_id +
                                                     f_exp(H_lmk, E_exp(crop)) per driving frame: do the
                                                     encoder and f_exp carry the mouth at all?
    reach = expression_reach(P_id, X_id, l_exp)      do the Gaussians at the mouth and jaw deform with the
                                                     expression? l_exp (GPHMv2 eq. 7) is 0 farther than t2
                                                     from every landmark, so where the learned surface lies
                                                     off the landmarks the expression never moves it

Landmarks that follow the driver over Gaussians that do not reach them point at the geometry (a surface
that misses the chin and lips), not at the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from model.avatar.frames import AvatarFrames
from model.avatar.model import Avatar
from model.avatar.mouth import mouth_opening

MOUTH_AND_JAW = tuple(range(5, 12)) + tuple(range(48, 68))  # iBUG-68: the lower jaw line and the lips
NEAR = 0.05  # head lengths: "a Gaussian at this landmark" (about two Gaussian spacings of the tiny preset)
DEFORMED = 0.5  # l_exp above this: the Gaussian moves mostly with the expression


def landmark_openings(avatar: Avatar, driver: AvatarFrames, device="cpu", max_frames: int = 0) -> np.ndarray:
    """[T] the opening (inner-lip gap over mouth width, in 3D) of the avatar's deformed canonical landmarks
    for each driving frame's face crop."""
    device = torch.device(device)
    openings = []
    with torch.no_grad():
        for r in range(len(driver))[: max_frames or None]:
            inputs, _ = driver.batch([r], avatar.config, device)
            landmarks = avatar.expression_landmarks(avatar.E_exp(inputs.condition))  # [1, L, 3]
            openings.append(float(mouth_opening(landmarks[0].cpu().numpy(), dims=3)))
    return np.array(openings)


@dataclass
class Reach:
    distance: np.ndarray  # [K] head lengths from each mouth/jaw landmark to its nearest Gaussian
    deformed_near: np.ndarray  # [K] bool: a Gaussian with l_exp > DEFORMED within NEAR of the landmark
    t2: float

    def describe(self) -> str:
        k, hit = len(self.distance), int(self.deformed_near.sum())
        text = (f"mouth and jaw: {hit}/{k} landmarks have an expression-deformed Gaussian (l_exp > {DEFORMED}) "
                f"within {NEAR} head lengths; nearest Gaussian {np.median(self.distance):.3f} (median), up to "
                f"{self.distance.max():.3f} away (l_exp is 0 beyond t2 = {self.t2})")
        if hit < k / 2:
            text += ": the learned surface misses the landmarks there, so the expression does not move it"
        return text


def expression_reach(landmarks: Tensor, points: Tensor, weights: Tensor, t2: float) -> Reach:
    """landmarks: [68, 3] canonical (iBUG order); points: [N, 3] canonical Gaussian means; weights: [N]
    their l_exp; t2: the model's outer radius of l_exp."""
    lm = landmarks[list(MOUTH_AND_JAW)].detach().float().cpu()
    pts, w = points.detach().float().cpu(), weights.detach().float().cpu()
    d = torch.cdist(lm, pts)  # [K, N]
    near_deformed = ((d < NEAR) & (w[None] > DEFORMED)).any(dim=1)
    return Reach(d.min(dim=1).values.numpy(), near_deformed.numpy(), float(t2))


def avatar_reach(avatar: Avatar) -> Reach:
    return expression_reach(avatar.P_id, avatar.X_id, avatar.weights, avatar.config.t2)
