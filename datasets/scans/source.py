"""A frame source that renders scans instead of decoding frames: one per camera of a scan clip (rgb),
and one per camera for its alpha (the release's "mattes": the render's own coverage).

It has what datasets/raw/sources.py asks of a source: `describe()` and `iter_frames(frame_ids)`; frame
t of the clip is the scan `scans[i]` where `frame_ids[i] == t` (one expression per frame)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

OUTPUTS = ("rgb", "alpha")


@dataclass(frozen=True)
class ScanRender:
    scans: tuple[str, ...]  # URL of each frame's scan file
    frame_ids: tuple[int, ...]  # the frame id of each scan (its expression number)
    K: tuple  # [V][3][3] the whole rig (all views of a scan are rendered at once)
    world_to_cam: tuple  # [V][4][4] OpenCV, scan coordinates
    size: int  # side of the square frames, pixels
    view: int  # which camera of the rig this source is
    output: str = "rgb"  # rgb | alpha

    def describe(self) -> tuple[int, int, int, float]:
        return len(self.scans), self.size, self.size, 0.0

    def iter_frames(self, frame_ids: Sequence[int], threads: int = 1
                    ) -> Iterator[tuple[int, np.ndarray | str]]:
        from datasets.raw.sources import FrameError
        from datasets.scans.mesh import ScanReadError
        from datasets.scans.render import rendered_views

        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        index = {fid: i for i, fid in enumerate(self.frame_ids)}
        for fid in frame_ids:
            if fid not in index:
                yield fid, FrameError(f"no scan for frame {fid}")
                continue
            try:
                rgb, alpha = rendered_views(self.scans[index[fid]], self.K, self.world_to_cam, self.size)
            except (ScanReadError, OSError) as e:
                yield fid, FrameError(str(e))
                continue
            yield fid, (rgb if self.output == "rgb" else alpha)[self.view]
