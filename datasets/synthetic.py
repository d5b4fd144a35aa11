"""The embedded default data: synthetic multi-view head captures in the NeRSemble v2 layout.

    write_synthetic_capture("data/demo", SynthConfig())

writes, under the output folder,
    {p:03d}/calibration/camera_params.json           16-camera rig (datasets/capture/rig.py)
    {p:03d}/sequences/EXP-{i}-{acts}/images/cam_{serial}.mp4
    {p:03d}/sequences/BACKGROUND/image_{serial}.jpg  the static studio background of each camera
and the ground truth beside the layout (readers ignore it):
    ground_truth/{p:03d}/identity.json               how the identity was made
    ground_truth/{p:03d}/{sequence}.npz              per frame: world_from_head [T, 4, 4],
        landmarks68 [T, 68, 3] (iBUG order, world, metres), landmarks478 [T, 478, 3] (mediapipe order),
        expression [T, 4] (jaw_open, smile, brow, blink), masks [T, V, H, W] bool (bit-packed on disk,
        read with `load_ground_truth`), serials [V]
Identities come from real portraits shipped in installed packages (datasets/synthhead/head.py).
The same config and seed give byte-identical files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from datasets.capture.rig import make_rig
from datasets.capture.writer import NersembleV2Writer, VideoWriter
from datasets.landmarks68 import MEDIAPIPE_TO_IBUG68
from datasets.synthhead.head import Head, identity_specs, studio_backdrop
from datasets.synthhead.motion import SCRIPTS, expressions, head_poses
from datasets.synthhead.render import HeadRenderer

RIG_TARGET = (0.0, 0.0, 0.03)  # where the cameras aim, in the head frame of a neutral pose (metres)
GROUND_TRUTH = "ground_truth"


@dataclass
class SynthConfig:
    participants: int = 2  # identities
    sequences: int = 2  # sequences per participant
    frames: int = 24  # frames per sequence
    width: int = 560  # portrait frames: the centred square is width x width
    height: int = 800
    seed: int = 0
    fps: float = 73.0  # NeRSemble's capture rate
    crf: int = 18  # H.264 quality of the camera videos
    max_yaw: float = 18.0  # degrees of head turn either way


def sequence_name(index: int) -> str:
    acts = [a for a in SCRIPTS[index % len(SCRIPTS)] if a != "blink"]
    return f"EXP-{index + 1}-" + "+".join(a.replace("_", "") for a in acts)


def write_synthetic_capture(out: str, cfg: SynthConfig,
                            progress: Callable[[int, int], None] | None = None) -> dict:
    """Write the capture and its ground truth under `out`; returns a summary dict."""
    rig = make_rig(cfg.width, cfg.height, target=RIG_TARGET)
    K = np.stack([c.K for c in rig])
    E = np.stack([c.world_to_cam for c in rig])
    serials = [c.serial for c in rig]
    writer = NersembleV2Writer(out)
    total = cfg.participants * cfg.sequences * cfg.frames
    done = 0
    summary = {"participants": [], "config": asdict(cfg)}
    for p, spec in enumerate(identity_specs(cfg.participants, cfg.seed)):
        pid = f"{p + 1:03d}"
        rng = np.random.default_rng([cfg.seed, p])
        head = Head(spec, seed=cfg.seed * 1000 + p)
        renderer = HeadRenderer(head.texture, K, E, cfg.width, cfg.height)
        writer.calibration(pid, rig[0].K, dict(zip(serials, E)))
        plates = np.stack([studio_backdrop(cfg.width, cfg.height, np.random.default_rng([cfg.seed, p, v]))
                           for v in range(len(rig))])
        for serial, plate in zip(serials, plates):
            writer.background(pid, serial, plate)
        gt_dir = os.path.join(out, GROUND_TRUTH, pid)
        os.makedirs(gt_dir, exist_ok=True)
        with open(os.path.join(gt_dir, "identity.json"), "w") as f:
            json.dump({"participant": pid, "identity": asdict(spec)}, f, indent=1)
        sequences = []
        for s in range(cfg.sequences):
            seq = sequence_name(s)
            poses = head_poses(cfg.frames, rng, cfg.max_yaw)
            exprs = expressions(cfg.frames, SCRIPTS[s % len(SCRIPTS)], rng)
            writers = [VideoWriter(writer.video_path(pid, seq, serial), cfg.width, cfg.height, cfg.fps, crf=cfg.crf)
                       for serial in serials]
            lmk478 = np.zeros((cfg.frames, 478, 3), np.float32)
            masks = []
            try:
                for t in range(cfg.frames):
                    posed = head.pose(poses[t], exprs[t])
                    images, mask = renderer.render(posed.verts, head.faces, posed.attrs, plates)
                    for w, image in zip(writers, images):
                        w.write(image)
                    lmk478[t] = posed.landmarks
                    masks.append(np.packbits(mask.reshape(len(rig), -1), axis=1))
                    done += 1
                    if progress:
                        progress(done, total)
            finally:
                for w in writers:
                    w.close()
            np.savez_compressed(
                os.path.join(gt_dir, f"{seq}.npz"),
                world_from_head=poses.astype(np.float32), landmarks478=lmk478,
                landmarks68=lmk478[:, MEDIAPIPE_TO_IBUG68], expression=np.stack([e.as_array() for e in exprs]),
                masks=np.stack(masks), mask_shape=np.array([cfg.height, cfg.width]), serials=np.array(serials))
            sequences.append(seq)
        summary["participants"].append({"id": pid, "sequences": sequences, "identity": asdict(spec)})
    with open(os.path.join(out, GROUND_TRUTH, "README.md"), "w") as f:
        f.write(__doc__)
    return summary


def load_ground_truth(root: str, participant: str, sequence: str) -> dict[str, np.ndarray]:
    """The ground truth of one sequence, masks unpacked to bool [T, V, H, W]."""
    with np.load(os.path.join(root, GROUND_TRUTH, participant, f"{sequence}.npz")) as data:
        gt = {k: data[k] for k in data.files}
    H, W = gt.pop("mask_shape")
    packed = gt.pop("masks")
    gt["masks"] = np.unpackbits(packed, axis=-1, count=H * W).reshape(packed.shape[0], packed.shape[1], H, W) > 0
    return gt
