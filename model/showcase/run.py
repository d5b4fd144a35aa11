"""`python cli.py render`: turntable, identity x expression grid and expression transfer of a trained
stage-2 run, written as GIF / MP4 / PNG."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from datasets.errors import UserError
from datasets.image_grid import labelled_grid
from datasets.shards.reader import ShardReader
from model.load import Trained, frame_table, load_trained
from model.render.video import write_animation
from model.showcase.conditions import clip_frames, clip_index, subject_clip
from model.showcase.render import motion_codes, random_identities, render, ring


class RenderError(UserError, ValueError):
    """A render request that cannot be met, with the reason for the user."""


class Showcase:
    def __init__(self, run: str, shards: str | None = None, device: str = "cpu", size: int = 512,
                 storage_options: dict | None = None):
        self.trained: Trained = load_trained(run, device)
        if self.trained.stage != "gaussian":
            raise RenderError(f"{self.trained.path} is a stage-1 ({self.trained.stage}) checkpoint; render needs "
                              "a stage-2 run (python cli.py train --stage gaussian)")
        self.model = self.trained.model
        self.url = shards or self.trained.shards
        self.storage_options = storage_options
        self.reader = ShardReader(self.url, storage_options=storage_options or None)  # a clip's shards stay open
        self.manifest = self.reader.manifest
        self.frames = frame_table(self.trained, self.manifest)
        self.size, self.device = size, torch.device(device)
        up = self.trained.config.refine_upsample
        if size % up:
            raise RenderError(f"--size must be a multiple of {up} (Psi upsamples by {up})")

    def _subject(self, name: str | None) -> tuple[int, str]:
        subjects = self.trained.subjects
        name = name or subjects[0]
        if name not in subjects:
            raise RenderError(f"no subject {name!r} in the model; subjects: {', '.join(subjects)}")
        return subjects.index(name), name

    def _frames(self, clip: int, limit: int = 0, frame_ids: list[int] | None = None):
        return clip_frames(self.url, clip, self.trained.config, self.frames, limit, frame_ids, self.storage_options,
                           self.reader)

    def _codes(self, driving) -> tuple[torch.Tensor, torch.Tensor | None]:
        d = self.device
        return motion_codes(self.model, driving.condition.to(d), driving.non_face.to(d), driving.rows.to(d))

    def turntable(self, out: str, subject: str | None = None, frames: int = 60, fps: int = 20) -> str:
        """The subject with the expression of its first frame, seen from `frames` angles around the head."""
        index, name = self._subject(subject)
        own = self._frames(subject_clip(self.manifest, name), limit=1)
        z_exp, z_nf = self._codes(own)
        K, E = ring(self.model.landmarks, frames, self.size)
        images = render(self.model, self.model.id_codes[index:index + 1], z_exp, z_nf, K, E, self.size)[0]
        return write_animation(out, list(images), fps=fps)

    def grid(self, out: str, identities: list[str] | None = None, n_random: int = 2,
             expressions: list[str] | None = None, n_expressions: int = 5, seed: int = 0) -> str:
        """Rows: identities (subject names, or `n_random` codes drawn near the trained ones); columns:
        expressions (CLIP:FRAME specs, or `n_expressions` frames spread over the shard set's clips)."""
        if identities:
            z_id = torch.stack([self.model.id_codes[self._subject(n)[0]] for n in identities]).detach()
            row_labels = list(identities)
        else:
            z_id = random_identities(self.model, n_random, seed)
            row_labels = [f"random {k + 1}" for k in range(n_random)]
        specs = expressions or self._spread_expressions(n_expressions, seed)
        codes, col_labels = [], []
        for spec in specs:
            clip_name, _, frame = spec.rpartition(":")
            if not clip_name or not frame.isdigit():
                raise RenderError(f"an expression is CLIP:FRAME (e.g. 001/EXP-1-jawopen:3), got {spec!r}")
            driving = self._frames(clip_index(self.manifest, clip_name), frame_ids=[int(frame)])
            codes.append(self._codes(driving))
            col_labels.append(spec)
        K, E = ring(self.model.landmarks, 1, self.size)
        n = z_id.shape[0]
        columns = [render(self.model, z_id, z_exp.expand(n, -1), None if z_nf is None else z_nf.expand(n, -1), K, E,
                          self.size)[:, 0] for z_exp, z_nf in codes]  # every identity of a column at once
        tiles = [[column[r] for column in columns] for r in range(n)]
        image = labelled_grid(tiles, row_labels=row_labels, col_labels=col_labels)
        Image.fromarray(image).save(out)
        return out

    def _spread_expressions(self, n: int, seed: int) -> list[str]:
        rng = np.random.default_rng(seed)
        clips = self.manifest.doc["clips"]
        picks = []
        for k in range(n):
            clip = clips[k % len(clips)]
            picks.append(f"{clip['clip']}:{int(rng.integers(len(clip['frame_ids'])))}")
        return picks

    def transfer(self, out: str, driver: str, subject: str | None = None, frames: int = 0, fps: int = 10,
                 own_non_face: bool = False) -> str:
        """The subject driven by the face crops (and non-face images, unless own_non_face) of the clip
        `driver`, frame by frame: [driving crop | render] side by side."""
        index, name = self._subject(subject)
        driving = self._frames(clip_index(self.manifest, driver), limit=frames)
        z_exp, z_nf = self._codes(driving)
        if own_non_face and z_nf is not None:
            own = self._frames(subject_clip(self.manifest, name), limit=1)
            z_nf = self._codes(own)[1].expand_as(z_nf)
        K, E = ring(self.model.landmarks, 1, self.size)
        z_id = self.model.id_codes[index:index + 1].expand(z_exp.shape[0], -1)
        rendered = render(self.model, z_id, z_exp, z_nf, K, E, self.size)[:, 0]
        crops = torch.from_numpy(driving.crops).permute(0, 3, 1, 2).float()
        crops = torch.nn.functional.interpolate(crops, size=(self.size, self.size), mode="bilinear")
        crops = crops.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return write_animation(out, [np.concatenate([c, r], 1) for c, r in zip(crops, rendered, strict=True)],
                               fps=fps)
