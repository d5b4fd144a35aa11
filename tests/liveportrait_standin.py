"""A STAND-IN LivePortrait checkout for tests. It is NOT LivePortrait and contains none of its code or weights.

`write_standin_checkout` writes a folder laid out like a LivePortrait checkout: the module paths, class names,
method names, signatures and tensor shapes that pipeline/backends/liveportrait.py uses
(src/live_portrait_wrapper.py: LivePortraitWrapper; src/config/inference_config.py: InferenceConfig;
src/utils/camera.py), implemented with simple deterministic torch ops, plus small placeholder files (not
weights) at the real weight paths. Non-empty, because the backend treats an empty weight file as missing.

What the stand-in computes, so tests can check it (x: [B, 3, 256, 256] in [0, 1]):
  - get_kp_info: pose from the TOP half's channel means (pitch, yaw, roll in degrees, scale, t), expression
    exp[b, n] = (bottom-half channel means - 0.5) * EXP_WEIGHTS[n], canonical keypoints kp = a fixed grid
    scaled by the whole image's mean;
  - transform_keypoint: LivePortrait's s * (kp @ R + exp) + [tx, ty, 0];
  - stitching: kp_driving + STITCH_PULL * (kp_source - kp_driving);
  - extract_feature_3d packs the image losslessly into the [B, 32, 16, 64, 64] feature volume;
  - warp_decode unpacks it, upsamples 2x to 512 (like the real 2x generator) and adds, per channel (R, G, B),
    OFFSET_GAIN * mean over keypoints of (kp_driving - kp_source)[:, :, (x, y, z)].
Every wrapper call appends (method name, batch size) to CALLS in src/live_portrait_wrapper.py.
"""

from __future__ import annotations

import os

from pipeline.backends.liveportrait import CODE_FILES, WEIGHT_FILES

_CONFIG = '''"""STAND-IN for LivePortrait's InferenceConfig (tests/liveportrait_standin.py). Not LivePortrait."""
import os.path as osp
from dataclasses import dataclass
from typing import Tuple


def make_abs_path(fn):
    return osp.join(osp.dirname(osp.realpath(__file__)), fn)


@dataclass(repr=False)
class InferenceConfig:
    models_config: str = make_abs_path("./models.yaml")
    checkpoint_F: str = make_abs_path(
        "../../pretrained_weights/liveportrait/base_models/appearance_feature_extractor.pth")
    checkpoint_M: str = make_abs_path("../../pretrained_weights/liveportrait/base_models/motion_extractor.pth")
    checkpoint_G: str = make_abs_path("../../pretrained_weights/liveportrait/base_models/spade_generator.pth")
    checkpoint_W: str = make_abs_path("../../pretrained_weights/liveportrait/base_models/warping_module.pth")
    checkpoint_S: str = make_abs_path(
        "../../pretrained_weights/liveportrait/retargeting_models/stitching_retargeting_module.pth")
    flag_use_half_precision: bool = True
    device_id: int = 0
    flag_stitching: bool = True
    flag_relative_motion: bool = True
    flag_force_cpu: bool = False
    flag_do_torch_compile: bool = False
    driving_multiplier: float = 1.0
    animation_region: str = "all"
    input_shape: Tuple[int, int] = (256, 256)
'''

_CAMERA = '''"""STAND-IN for LivePortrait's src/utils/camera.py (tests/liveportrait_standin.py). Not LivePortrait."""
import math

import torch


def headpose_pred_to_degree(pred):
    """[B, 66] bin logits -> [B] degrees (soft argmax, 3 degrees per bin from -97.5); anything else unchanged."""
    if pred.ndim > 1 and pred.shape[1] == 66:
        bins = torch.arange(66, dtype=pred.dtype, device=pred.device)
        return (pred.softmax(dim=1) * bins).sum(dim=1) * 3 - 97.5
    return pred


def get_rotation_matrix(pitch_, yaw_, roll_):
    """degrees [B] or [B, 1] -> [B, 3, 3], (Rz Ry Rx) transposed, to right-multiply row vectors."""
    x, y, z = (a.reshape(-1) * (math.pi / 180) for a in (pitch_, yaw_, roll_))
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rx = torch.stack([one, zero, zero, zero, x.cos(), -x.sin(), zero, x.sin(), x.cos()], 1).reshape(-1, 3, 3)
    ry = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], 1).reshape(-1, 3, 3)
    rz = torch.stack([z.cos(), -z.sin(), zero, z.sin(), z.cos(), zero, zero, zero, one], 1).reshape(-1, 3, 3)
    return (rz @ ry @ rx).transpose(1, 2)
'''

_WRAPPER = '''"""STAND-IN for LivePortrait's LivePortraitWrapper (tests/liveportrait_standin.py). NOT LivePortrait:
the same methods, signatures and tensor shapes, computed by simple deterministic torch ops (see that file)."""
import os

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .config.inference_config import InferenceConfig
from .utils.camera import get_rotation_matrix, headpose_pred_to_degree

CALLS = []  # (method name, batch size) of every call
NUM_KP = 21
EXP_WEIGHTS = torch.linspace(0.5, 1.5, NUM_KP)  # [21]
STITCH_PULL = 0.1
OFFSET_GAIN = 1.0


def canonical_grid():
    """[21, 3] fixed keypoint layout."""
    i = torch.arange(NUM_KP, dtype=torch.float32)
    return 0.3 * torch.stack([i.cos(), i.sin(), 0.1 * (i - 10)], dim=1)


def motion_of(x):
    """x: [B, 3, H, W] in [0, 1] -> the refined keypoint info (see tests/liveportrait_standin.py)."""
    half = x.shape[2] // 2
    top = x[:, :, :half].mean(dim=(2, 3))  # [B, 3]
    bottom = x[:, :, half:].mean(dim=(2, 3))  # [B, 3]
    whole = x.mean(dim=(1, 2, 3))  # [B]
    return {
        "pitch": 60 * (top[:, 0:1] - 0.5), "yaw": 60 * (top[:, 1:2] - 0.5), "roll": 60 * (top[:, 2:3] - 0.5),
        "scale": 0.8 + 0.4 * top[:, 1:2],
        "t": torch.stack([top[:, 2] - 0.5, top[:, 0] - 0.5, top[:, 1]], dim=1),
        "exp": (bottom - 0.5)[:, None, :] * EXP_WEIGHTS.to(x.device)[None, :, None],
        "kp": canonical_grid().to(x.device)[None] * (0.5 + whole)[:, None, None],
    }


def _record(name, batch):
    CALLS.append((name, int(batch)))


class LivePortraitWrapper(object):
    def __init__(self, inference_cfg: InferenceConfig):
        self.inference_cfg = inference_cfg
        self.device_id = inference_cfg.device_id
        self.compile = inference_cfg.flag_do_torch_compile
        self.device = "cpu" if inference_cfg.flag_force_cpu else "cuda:" + str(self.device_id)
        for path in (inference_cfg.models_config, inference_cfg.checkpoint_F, inference_cfg.checkpoint_M,
                     inference_cfg.checkpoint_W, inference_cfg.checkpoint_G):
            if not os.path.isfile(path):
                raise FileNotFoundError(path)
        self.stitching_retargeting_module = ({"stitching": None} if os.path.isfile(inference_cfg.checkpoint_S)
                                             else None)

    def prepare_source(self, img: np.ndarray) -> torch.Tensor:
        h, w = img.shape[:2]  # like the real one: a 4-D batch only passes when shape[:2] equals input_shape
        if (h, w) != tuple(self.inference_cfg.input_shape):
            x = cv2.resize(img, self.inference_cfg.input_shape)
        else:
            x = img.copy()
        if x.ndim == 3:
            x = x[np.newaxis].astype(np.float32) / 255.0
        elif x.ndim == 4:
            x = x.astype(np.float32) / 255.0
        else:
            raise ValueError(f"img ndim should be 3 or 4: {x.ndim}")
        _record("prepare_source", x.shape[0])
        return torch.from_numpy(np.clip(x, 0, 1)).permute(0, 3, 1, 2).to(self.device)

    def extract_feature_3d(self, x: torch.Tensor) -> torch.Tensor:
        _record("extract_feature_3d", x.shape[0])
        packed = F.pixel_unshuffle(x, 4)  # [B, 48, 64, 64]
        volume = torch.zeros(x.shape[0], 512, 64, 64, dtype=x.dtype, device=x.device)
        volume[:, :48] = packed
        return volume.reshape(x.shape[0], 32, 16, 64, 64)

    def get_kp_info(self, x: torch.Tensor, **kwargs) -> dict:
        _record("get_kp_info", x.shape[0])
        if not kwargs.get("flag_refine_info", True):
            raise NotImplementedError("the stand-in gives only the refined keypoint info")
        return motion_of(x)

    def transform_keypoint(self, kp_info: dict):
        kp, exp = kp_info["kp"], kp_info["exp"]
        _record("transform_keypoint", kp.shape[0])
        pitch, yaw, roll = (headpose_pred_to_degree(kp_info[k]) for k in ("pitch", "yaw", "roll"))
        bs = kp.shape[0]
        num_kp = kp.shape[1] // 3 if kp.ndim == 2 else kp.shape[1]
        rot = get_rotation_matrix(pitch, yaw, roll)  # [B, 3, 3]
        out = kp.view(bs, num_kp, 3) @ rot + exp.view(bs, num_kp, 3)
        out = out * kp_info["scale"][..., None]
        out[:, :, 0:2] += kp_info["t"][:, None, 0:2]
        return out

    def stitching(self, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        _record("stitching", kp_source.shape[0])
        assert kp_source.shape[0] == kp_driving.shape[0], "batch size must be equal"
        if self.stitching_retargeting_module is None:
            return kp_driving
        return kp_driving + STITCH_PULL * (kp_source - kp_driving)

    def warp_decode(self, feature_3d: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> dict:
        bs = feature_3d.shape[0]
        _record("warp_decode", bs)
        assert kp_source.shape[0] == bs and kp_driving.shape[0] == bs, "batch size must be equal"
        image = F.pixel_shuffle(feature_3d.reshape(bs, 512, 64, 64)[:, :48], 4)  # [B, 3, 256, 256]
        image = F.interpolate(image, scale_factor=2, mode="nearest")  # [B, 3, 512, 512]
        offset = OFFSET_GAIN * (kp_driving - kp_source).mean(dim=1)  # [B, 3]
        out = (image + offset[:, :, None, None]).clamp(0, 1)
        return {"out": out, "occlusion_map": torch.ones(bs, 1, 64, 64), "deformation": torch.zeros(bs, 16, 64, 64, 3)}

    def parse_output(self, out: torch.Tensor) -> np.ndarray:
        _record("parse_output", out.shape[0])
        out = np.transpose(out.data.cpu().numpy(), [0, 2, 3, 1])
        return np.clip(np.clip(out, 0, 1) * 255, 0, 255).astype(np.uint8)
'''

_FILES = {
    "src/config/__init__.py": "",
    "src/config/inference_config.py": _CONFIG,
    "src/config/models.yaml": "# stand-in (tests/liveportrait_standin.py): not LivePortrait's model config\n",
    "src/utils/__init__.py": "",
    "src/utils/camera.py": _CAMERA,
    "src/live_portrait_wrapper.py": _WRAPPER,
}


def write_standin_checkout(root: str, missing: tuple[str, ...] = ()) -> str:
    """Write the stand-in checkout (NOT LivePortrait) under `root`, leaving out the files named in `missing`
    (paths relative to root, e.g. one of WEIGHT_FILES' values); returns root."""
    assert set(CODE_FILES) <= set(_FILES), "the stand-in must provide every code file the backend checks"
    files = dict(_FILES)
    for name in WEIGHT_FILES.values():
        files[name] = "stand-in placeholder (tests/liveportrait_standin.py), not a LivePortrait weight file\n"
    for name, text in files.items():
        if name in missing:
            continue
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return root
