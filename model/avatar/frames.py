"""The frames of one camera of one store clip as avatar training and evaluation images.

A frame is usable when its image decoded, it was fitted and it has a face crop. The last `holdout` share of
the usable frames (at least one when there are two or more) is held out for evaluation and never fitted,
as the paper evaluates on the last seconds of a clip; one image has no held-out frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from datasets.errors import UserError
from datasets.non_face import non_face_image
from datasets.store import Store, frame_intrinsics
from model.guiding.config import GuidingConfig
from model.guiding.model import Inputs
from model.train.data import Targets, as_views, prepare_batch
from model.train.frames import FrameTable

NEEDED = ("rgb", "rgb_ok", "alpha", "face_crop", "crop_ok", "face_mask", "fit/pose", "fit/scale", "fit/lmk3d", "fit/ok")


class AvatarDataError(UserError, ValueError):
    """The store clip cannot make an avatar (a stage missing, no usable frame)."""


@dataclass
class AvatarFrames:
    store: str
    clip: str
    view: int
    frames: np.ndarray  # [T] store frame index of each usable frame
    train: np.ndarray  # indices into `frames` used for fitting
    heldout: np.ndarray  # indices into `frames` held out
    arrays: dict[str, np.ndarray]  # per usable frame: rgb [T, R, R, 3], alpha, condition, non_face, K, ...
    holdout: float = 0.2

    @staticmethod
    def load(store_url: str, clip: str, view: int = 0, holdout: float = 0.2,
             storage_options: dict | None = None) -> "AvatarFrames":
        store = Store(store_url, storage_options or {}, mode="r")
        if clip not in store.clips():
            raise AvatarDataError(f"{store_url} has no clip {clip!r} (it has {', '.join(store.clips()) or 'none'})")
        g = store.clip(clip)
        missing = [n for n in NEEDED if n not in g]
        if missing:
            raise AvatarDataError(f"{store_url} clip {clip} lacks {', '.join(missing)}: run the stages ingest, "
                                  "matting, landmarks, fitting and crops on it")
        V = len(g.attrs["views"])
        if not 0 <= view < V:
            raise AvatarDataError(f"clip {clip} has {V} camera(s); --view {view} is not one of them")
        ok = g["rgb_ok"][:, view] & g["crop_ok"][:, view] & g["fit/ok"][:]
        frames = np.flatnonzero(ok)
        if len(frames) == 0:
            raise AvatarDataError(f"clip {clip} has no frame with an image, a fit and a face crop in view {view}")
        if not 0 <= holdout < 1:
            raise AvatarDataError(f"holdout must be in [0, 1), got {holdout}")
        n_out = 0 if len(frames) < 2 or holdout == 0 else max(1, math.floor(holdout * len(frames)))
        sel = (frames,)
        rgb = g["rgb"].get_orthogonal_selection((frames, [view]))[:, 0]
        arrays = {
            "rgb": rgb, "alpha": g["alpha"].get_orthogonal_selection((frames, [view]))[:, 0],
            "condition": g["face_crop"].get_orthogonal_selection((frames, [view]))[:, 0],
            "non_face": non_face_image(rgb, g["face_mask"].get_orthogonal_selection((frames, [view]))[:, 0]),
            "K": frame_intrinsics(g, frames)[:, view].astype(np.float32),
            "world_to_cam": np.repeat(g["cameras/world_to_cam"][view][None], len(frames), 0).astype(np.float32),
            "pose": g["fit/pose"].get_orthogonal_selection(sel).astype(np.float32),
            "scale": g["fit/scale"].get_orthogonal_selection(sel).astype(np.float32),
            "lmk3d": g["fit/lmk3d"].get_orthogonal_selection(sel).astype(np.float32)}
        if "lmk2d" in g:  # the frames' own 2D landmarks (for the mouth check of driving), NaN where none
            lmk2d = g["lmk2d"].get_orthogonal_selection((frames, [view]))[:, 0].astype(np.float32)
            lmk2d[lmk2d[..., 2] <= 0] = np.nan
            arrays["lmk2d"] = lmk2d
        idx = np.arange(len(frames))
        return AvatarFrames(store_url, clip, view, frames, idx[:len(frames) - n_out], idx[len(frames) - n_out:], arrays,
                            holdout)

    def subset(self, rows) -> "AvatarFrames":
        """Those usable frames (indices into `frames`) as a clip of their own, all of them training frames
        (a driver made of an avatar's held-out frames)."""
        rows = np.asarray(rows, int)
        return AvatarFrames(self.store, self.clip, self.view, self.frames[rows], np.arange(len(rows)),
                            np.zeros(0, int), {k: v[rows] for k, v in self.arrays.items()}, 0.0)

    def __len__(self) -> int:
        return len(self.frames)

    def table(self) -> FrameTable:
        """The per-frame rows of these frames (made once: batch() runs every iteration)."""
        if getattr(self, "_table", None) is None or len(self._table) != len(self.frames):
            self._table = FrameTable([{"frame_ids": list(range(len(self.frames)))}])
        return self._table

    def batch(self, rows: list[int], config: GuidingConfig, device: torch.device) -> tuple[Inputs, Targets]:
        """Model inputs and targets of the usable frames `rows` (indices into `frames`)."""
        rows = list(rows)
        batch = {k: torch.from_numpy(np.ascontiguousarray(v[rows])) for k, v in self.arrays.items() if k != "lmk2d"}
        batch.update(identity=torch.zeros(len(rows), dtype=torch.long), clip=torch.zeros(len(rows), dtype=torch.long),
                     frame=torch.tensor(rows, dtype=torch.long))
        return prepare_batch(as_views(batch), config, self.table(), device)

    def describe(self) -> dict:
        return {"store": self.store, "clip": self.clip, "view": self.view, "holdout": self.holdout,
                "frames": self.frames.tolist(), "train": self.train.tolist(), "heldout": self.heldout.tolist()}

    @staticmethod
    def of_avatar(described: dict) -> "AvatarFrames":
        """The frames an avatar was fitted on (its file's `frames`), checked to be the same ones."""
        frames = AvatarFrames.load(described["store"], described["clip"], described["view"], described["holdout"])
        if frames.describe() != described:
            raise AvatarDataError(f"{described['store']} clip {described['clip']} changed since the avatar was "
                                  "fitted (other usable frames): evaluate it on the store it was fitted on")
        return frames
