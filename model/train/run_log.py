"""TensorBoard scalars and image grids, and preview PNGs of the same grids."""

from __future__ import annotations

import os

import cv2
import numpy as np
import torch
from torch import Tensor

from datasets.image_grid import labelled_grid


def image_grid(rows: list[Tensor]) -> Tensor:
    """rows: each [V, C, H, W] with C 1 or 3, values in [0, 1], same H, W -> [3, rows*H, V*W] (views side
    by side, 8-bit like the preview PNGs)."""
    tiles = []
    for r in rows:
        r = r.detach().float().clamp(0, 1).cpu()
        if r.shape[1] == 1:
            r = r.expand(-1, 3, -1, -1)
        images = (r.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)  # [V, H, W, 3]
        tiles.append([np.ascontiguousarray(img) for img in images])
    return torch.from_numpy(labelled_grid(tiles, pad=0)).permute(2, 0, 1).float() / 255


class RunLog:
    """Writes under <out>/tensorboard and <out>/previews."""

    def __init__(self, out: str):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(os.path.join(out, "tensorboard"))
        self.previews = os.path.join(out, "previews")
        os.makedirs(self.previews, exist_ok=True)

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def grid(self, tag: str, grid: Tensor, step: int) -> str:
        """grid: [3, H, W] in [0, 1] -> the preview file written."""
        self.writer.add_image(tag, grid, step)
        path = os.path.join(self.previews, f"{tag.replace('/', '_')}_{step:07d}.png")
        img = (grid.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        cv2.imwrite(path, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        return path

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
