"""The rows of a shard set's frames, for the parameters a trainer keeps per frame (pose refinement,
per-expression codes)."""

from __future__ import annotations

import torch
from torch import Tensor


class FrameTable:
    """Row of every (clip, frame) of a shard set's clips, for per-frame parameters; `frame` is the sample's
    frame index in its store clip (0 .. len(frame_ids) - 1)."""

    def __init__(self, clips: list[dict]):
        self.rows: dict[tuple[int, int], int] = {}
        for c, clip in enumerate(clips):
            for t in range(len(clip["frame_ids"])):
                self.rows[(c, t)] = len(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def index(self, clip: Tensor, frame: Tensor) -> Tensor:
        """clip, frame: [B] -> [B] rows."""
        try:
            rows = [self.rows[(int(c), int(f))] for c, f in zip(clip.tolist(), frame.tolist(), strict=True)]
        except KeyError as exc:
            raise KeyError(f"(clip, frame) {exc.args[0]} is not in the shard set's clip list") from None
        return torch.tensor(rows, dtype=torch.long, device=clip.device)
