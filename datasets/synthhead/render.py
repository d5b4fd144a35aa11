"""Rendering posed heads into camera images with the project's mesh rasterizer."""

from __future__ import annotations

import numpy as np
import torch

from model.render.mesh import interpolate_covered, rasterize


class HeadRenderer:
    """Renders one identity (its texture) for a fixed rig: K [C, 3, 3], world_to_cam [C, 4, 4]."""

    def __init__(self, texture: np.ndarray, K: np.ndarray, world_to_cam: np.ndarray, width: int, height: int):
        self.texture = torch.from_numpy(texture).permute(2, 0, 1)[None].float() / 255.0  # [1, 3, Ht, Wt]
        self.K = torch.from_numpy(np.asarray(K, np.float32))
        self.E = torch.from_numpy(np.asarray(world_to_cam, np.float32))
        self.width, self.height = width, height

    @torch.no_grad()
    def render(self, verts: np.ndarray, faces: np.ndarray, attrs: np.ndarray,
               backgrounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """verts [N, 3] world, faces [F, 3], attrs [N, 6] (rgb, u, v, textured), backgrounds [C, H, W, 3]
        uint8 -> (images [C, H, W, 3] uint8, masks [C, H, W] bool)."""
        H, W = self.height, self.width
        f = torch.from_numpy(faces)
        rast = rasterize(torch.from_numpy(verts.astype(np.float32)), f, self.K, self.E, H, W, cull_backfaces=True)
        feat = interpolate_covered(torch.from_numpy(attrs), f, rast)  # [M, 6] at the covered pixels only
        color = feat[:, :3].clone()
        textured = (feat[:, 5] > 0.5).nonzero(as_tuple=True)[0]
        Ht, Wt = self.texture.shape[-2:]
        uv = feat[textured, 3:5]
        grid = torch.stack([(2 * uv[:, 0] + 1) / Wt - 1, (2 * uv[:, 1] + 1) / Ht - 1], -1)[None, None]
        sampled = torch.nn.functional.grid_sample(self.texture, grid, mode="bilinear", padding_mode="border",
                                                  align_corners=False)  # [1, 3, 1, M_t]
        color[textured] = sampled[0, :, 0].T
        images = np.array(backgrounds, copy=True).reshape(-1, 3)
        images[rast.pixels.numpy()] = (color.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
        return images.reshape(backgrounds.shape), rast.mask.numpy()
