"""Person segmentation backends giving a soft matte [H, W] in [0, 1]: mediapipe selfie segmentation
(bundled model, offline) and rembg's U^2-Net family (model file supplied by the user)."""

from __future__ import annotations

import os

import numpy as np

from datasets.native_output import quiet_native_stderr
from datasets.weights import require_file

REMBG_MODELS_URL = "https://github.com/danielgatis/rembg/releases (assets of tag v0.0.0, e.g. u2net.onnx)"


class MediapipeSegmenter:
    """mediapipe 0.10.21 selfie segmentation (general model, 256x256), one instance per worker task."""

    def __init__(self, model_selection: int = 0):
        import mediapipe as mp

        with quiet_native_stderr():
            self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=model_selection)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """image: [H, W, 3] uint8 RGB -> [H, W] float32 probability of person."""
        with quiet_native_stderr():
            result = self._seg.process(np.ascontiguousarray(image))
        return np.clip(result.segmentation_mask.astype(np.float32), 0, 1)

    def close(self) -> None:
        self._seg.close()


def rembg_model_path(model: str = "u2net") -> str:
    """Where the rembg model file must be: REMBG_HOME or U2NET_HOME (rembg's own variable), else ~/.u2net."""
    folder = os.environ.get("REMBG_HOME") or os.environ.get("U2NET_HOME") or os.path.expanduser("~/.u2net")
    path = folder if folder.endswith(".onnx") else os.path.join(folder, f"{model}.onnx")
    return require_file(path, what=f"rembg model {model}", variable="REMBG_HOME (or U2NET_HOME)",
                        published=REMBG_MODELS_URL)


class RembgSegmenter:
    """rembg with a U^2-Net-family ONNX model from REMBG_HOME / U2NET_HOME (u2net, u2netp, u2net_human_seg,
    silueta: 320x320 input normalised with ImageNet statistics, first output channel is the matte).
    Loaded through rembg's custom-model session, so no checksum lookup or download ever happens."""

    def __init__(self, model: str = "u2net", providers: list[str] | None = None):
        path = rembg_model_path(model)
        from rembg import new_session

        self.session = new_session("u2net_custom", model_path=path,
                                   providers=providers or ["CPUExecutionProvider"])

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from PIL import Image

        mask = self.session.predict(Image.fromarray(image))[0]
        return np.asarray(mask, np.float32) / 255.0

    def close(self) -> None:
        pass
