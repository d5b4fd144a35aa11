"""Small captures with known content, made by the tests themselves."""

from __future__ import annotations

import os
import shutil

import av
import numpy as np

from datasets.capture.markers import write_marker_capture
from datasets.capture.rig import make_rig
from datasets.capture.writer import NersembleV1Writer
from pipeline.config import PreprocessConfig


def tiny_rig(width: int = 112, height: int = 160):
    return make_rig(width, height)


def marker_capture(root: str, participants: int = 1, sequences: int = 1, n_frames: int = 6, width: int = 112,
                   height: int = 160, **kwargs) -> dict:
    return write_marker_capture(root, participants, sequences, n_frames, width, height, **kwargs)


def decode_all(path: str) -> list[np.ndarray]:
    with av.open(path) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


def v2_to_v1(v2_root: str, v1_root: str, images_dir: str = "images", ext: str = "png") -> None:
    """Rewrite a v2 capture in the v1 layout with the very same decoded pixels (lossless PNG)."""
    writer = NersembleV1Writer(v1_root, images_dir=images_dir, ext=ext)
    for p in sorted(os.listdir(v2_root)):
        calib = os.path.join(v2_root, p, "calibration", "camera_params.json")
        os.makedirs(os.path.join(v1_root, p), exist_ok=True)
        shutil.copy(calib, os.path.join(v1_root, p, "camera_params.json"))
        bg = os.path.join(v2_root, p, "sequences", "BACKGROUND")
        shutil.copytree(bg, os.path.join(v1_root, p, "sequences", "BACKGROUND"))
        for seq in sorted(os.listdir(os.path.join(v2_root, p, "sequences"))):
            if seq == "BACKGROUND":
                continue
            img_dir = os.path.join(v2_root, p, "sequences", seq, "images")
            for name in sorted(os.listdir(img_dir)):
                serial = name[4:-4]
                for t, frame in enumerate(decode_all(os.path.join(img_dir, name))):
                    writer.frame(p, seq, t, serial, frame)


def ingest_config(store: str, root: str, dataset: str = "nersemble", workers: int = 0, crop: str | None = None,
                  **ingest) -> PreprocessConfig:
    """Ingest settings as keywords; `crop` is the framing mode (e.g. 'center', 'pad', 'X0,Y0,SIZE')."""
    cfg = PreprocessConfig(store=store, stages=["ingest"])
    cfg.source.dataset = dataset
    cfg.source.root = root
    cfg.runner.workers = workers
    if crop is not None:
        framing = cfg.stage_config("framing")
        framing.mode = crop
        framing.__post_init__()
    ing = cfg.stage_config("ingest")
    for k, v in ingest.items():
        setattr(ing, k, v)
    ing.__post_init__()
    return cfg



def run_config(store: str, root: str, stages: list[str], block_frames: int, stage: str = "", **settings
               ) -> PreprocessConfig:
    """ingest_config running `stages`, with `settings` of one `stage` applied (and re-validated)."""
    from pipeline.config import apply_overrides

    cfg = ingest_config(store, root, block_frames=block_frames)
    cfg.stages = stages
    if stage:
        apply_overrides(cfg.stage_config(stage), **settings)
    return cfg
