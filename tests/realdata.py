"""The real clips of ../shared/realdata (short videos of a real person; see its README for source and
licence) and harder variants the tests build from them. Tests that use them are skipped, with the
reason, where the folder is absent."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from datasets.capture import variants

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
FRONTAL = REALDATA / "frontal_man.mp4"  # 640x360, 30 fps, 72 frames: neutral, then smiling (with a blink)
CUT = REALDATA / "cartoon_then_face.mov"  # 96 cartoon frames, the same man for 72, one black frame; VFR

needs_realdata = pytest.mark.skipif(not FRONTAL.exists() or not CUT.exists(),
                                    reason=f"the real clips are not in {REALDATA} (the shared folder beside "
                                           "the checkout); real-footage tests need them")


def raw_landmarks(frames: list[np.ndarray]) -> list[np.ndarray | None]:
    """mediapipe's face mesh (static mode) on each raw frame: iBUG-68 [68, 3] or None."""
    from pipeline.backends.mediapipe_landmarks import MediapipeFaceLandmarks

    detector = MediapipeFaceLandmarks(tracking=False)
    try:
        return [detector(f).landmarks68 for f in frames]
    finally:
        detector.close()


def write_variants(folder: str) -> dict[str, str]:
    """The harder variants of the frontal clip (datasets/capture/variants.harder_variants) and the two real
    clips as they are, as video files in `folder` (each file is one subject). Returns name -> path."""
    out = variants.harder_variants(str(FRONTAL), folder)
    for name, path in (("frontal_man", FRONTAL), ("cartoon_then_face", CUT)):
        out[name] = shutil.copy(path, os.path.join(folder, path.name))
    return out
