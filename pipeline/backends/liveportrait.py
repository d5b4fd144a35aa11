"""LivePortrait (github.com/KwaiVGI/LivePortrait) as an expression-transfer backend: the source crop keeps its
identity, head pose, scale and position and takes on only the driving crop's expression ("animation region:
exp"). The user supplies the checkout and its weights; nothing is downloaded. Its code is imported from the
checkout (its package is named `src`, so the checkout goes on sys.path)."""

from __future__ import annotations

import importlib
import os
import sys

import numpy as np

from datasets.weights import MissingWeightsError

LIVEPORTRAIT_VARIABLE = "LIVEPORTRAIT_DIR"
OPTION = "--liveportrait-dir"
PUBLISHED = ("the code at https://github.com/KwaiVGI/LivePortrait (git clone), the weights at "
             "https://huggingface.co/KwaiVGI/LivePortrait (in the checkout: huggingface-cli download "
             "KwaiVGI/LivePortrait --local-dir pretrained_weights)")

# what the backend imports or reads from the checkout, relative to its root
CODE_FILES = ("src/live_portrait_wrapper.py", "src/config/inference_config.py", "src/config/models.yaml")
# InferenceConfig field -> the weight file LivePortraitWrapper loads into it (human model)
WEIGHT_FILES = {
    "checkpoint_F": "pretrained_weights/liveportrait/base_models/appearance_feature_extractor.pth",
    "checkpoint_M": "pretrained_weights/liveportrait/base_models/motion_extractor.pth",
    "checkpoint_W": "pretrained_weights/liveportrait/base_models/warping_module.pth",
    "checkpoint_G": "pretrained_weights/liveportrait/base_models/spade_generator.pth",
    "checkpoint_S": "pretrained_weights/liveportrait/retargeting_models/stitching_retargeting_module.pth",
}
SIZE = 256  # side of the crops in and out
NUM_KP = 21  # implicit keypoints of LivePortrait's human model


def _missing(root: str, names) -> list[str]:
    """The files of `names` (relative to root) that are absent or empty (an interrupted download)."""
    out = []
    for name in names:
        path = os.path.join(root, name)
        if not (os.path.isfile(path) and os.path.getsize(path) > 0):
            out.append(name)
    return out


def _error(problem: str, root: str = "", missing: list[str] | None = None) -> MissingWeightsError:
    lines = [f"LivePortrait backend: {problem}"]
    if missing:
        lines.append(f"missing or empty in {root}:")
        lines += [f"  - {name}" for name in missing]
    lines.append(f"Set the checkout with {OPTION} PATH or ${LIVEPORTRAIT_VARIABLE}; it must hold LivePortrait's code "
                 f"(src/...) and its weights under pretrained_weights/liveportrait/.")
    lines.append(f"LivePortrait publishes {PUBLISHED}. Nothing is downloaded at run time.")
    return MissingWeightsError("\n".join(lines))


def find_checkout(path: str = "") -> str:
    """The LivePortrait checkout at `path` (default $LIVEPORTRAIT_DIR), checked for the wrapper's code and every
    weight file it loads; one MissingWeightsError lists all that is missing."""
    given = path or os.environ.get(LIVEPORTRAIT_VARIABLE, "")
    if not given:
        raise _error(f"no checkout given ({OPTION} is empty and ${LIVEPORTRAIT_VARIABLE} is not set).")
    root = os.path.abspath(os.path.expanduser(given))
    source = OPTION if path else f"${LIVEPORTRAIT_VARIABLE}"
    if not os.path.isdir(root):
        raise _error(f"{root} (from {source}) is not a directory.")
    code = _missing(root, CODE_FILES)
    weights = _missing(root, WEIGHT_FILES.values())
    if code:
        raise _error(f"{root} (from {source}) is not a LivePortrait checkout.", root, code + weights)
    if weights:
        raise _error(f"weights missing in the checkout {root} (from {source}).", root, weights)
    return root


def half_precision_default(device: str) -> bool:
    """fp16 autocast where LivePortrait runs it by default (CUDA); full precision elsewhere (CPU, MPS)."""
    return device.startswith("cuda")


def _module_home(module) -> str:
    """The file or first search-path folder a module was loaded from ('' if none)."""
    location = getattr(module, "__file__", None)
    if not location:
        location = next(iter(getattr(module, "__path__", []) or []), "")
    return os.path.realpath(location) if location else ""


def import_checkout(checkout: str):
    """(wrapper module, inference-config module) of the checkout. Modules named `src`/`src.*` that another
    checkout (or another project) left in sys.modules are dropped first, so this checkout's code is the one used."""
    package_dir = os.path.realpath(os.path.join(checkout, "src"))
    stale = [name for name, module in sys.modules.items() if (name == "src" or name.startswith("src."))
             and not _module_home(module).startswith(package_dir + os.sep) and _module_home(module) != package_dir]
    for name in stale:
        del sys.modules[name]
    if checkout in sys.path:
        sys.path.remove(checkout)
    sys.path.insert(0, checkout)
    importlib.invalidate_caches()
    try:
        wrapper = importlib.import_module("src.live_portrait_wrapper")
        config = importlib.import_module("src.config.inference_config")
    except Exception as err:  # ImportError for a missing requirement, anything for a broken file
        raise ImportError(
            f"LivePortrait backend: could not import LivePortrait's code from {checkout}/src "
            f"({type(err).__name__}: {err}). Install its requirements (requirements_base.txt of the checkout) in "
            f"this environment, or point {OPTION} / ${LIVEPORTRAIT_VARIABLE} at an intact checkout.") from err
    for module in (wrapper, config):
        if not _module_home(module).startswith(package_dir + os.sep):
            raise ImportError(f"LivePortrait backend: {module.__name__} was imported from {_module_home(module)}, "
                              f"not from {package_dir}: another package named 'src' shadows the checkout.")
    return wrapper, config


def _device_flags(device: str) -> dict:
    """InferenceConfig flags that make LivePortraitWrapper pick `device` (it chooses cpu, mps or cuda:<id>)."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"LivePortrait backend: device must be cpu, cuda[:N] or mps, got {device!r}") from err
    if dev.type == "cpu":
        return {"flag_force_cpu": True}
    if dev.type == "cuda":
        return {"flag_force_cpu": False, "device_id": dev.index or 0}
    if dev.type == "mps":
        return {"flag_force_cpu": False}
    raise ValueError(f"LivePortrait backend: device must be cpu, cuda[:N] or mps, got {device!r}")


def expression_mask(device=None):
    """[21, 3] bool: the expression-deformation entries taken from the driving image. LivePortrait's pipeline
    (absolute motion, animation region "exp") takes keypoints 1, 2, 6 and 11-20 whole, y of 3 and 4, z of 5
    and 8, y and z of 9; keypoints 0, 7, 10 and the other coordinates stay the source's."""
    import torch

    mask = torch.zeros(NUM_KP, 3, dtype=torch.bool, device=device)
    mask[[1, 2, 6, *range(11, 21)]] = True
    mask[[3, 4], 1] = True
    mask[[5, 8], 2] = True
    mask[9, 1:] = True
    return mask


def _check_crops(name: str, images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
            or images.shape[1:] != (SIZE, SIZE, 3):
        shape = getattr(images, "shape", None)
        dtype = getattr(images, "dtype", type(images).__name__)
        raise ValueError(f"LivePortrait backend: {name} must be uint8 RGB crops [B, {SIZE}, {SIZE}, 3], "
                         f"got {dtype} {shape}")


class LivePortraitExpression:
    """LivePortrait's expression transfer on head crops: the source image with the driving image's expression."""

    framing = "head"  # LivePortrait-style head crops (the synthesis stage makes them and re-frames the result)

    def __init__(self, checkout: str, device: str = "cpu", batch_size: int = 8, fp16: bool | None = None):
        if batch_size < 1:
            raise ValueError(f"LivePortrait backend: batch_size must be at least 1, got {batch_size}")
        flags = _device_flags(device)
        checkout = os.path.abspath(checkout)
        self.device = device
        self.batch_size = batch_size
        self.fp16 = half_precision_default(device) if fp16 is None else bool(fp16)
        wrapper_module, config_module = import_checkout(checkout)
        weights = {field: os.path.join(checkout, name) for field, name in WEIGHT_FILES.items()}
        self.config = config_module.InferenceConfig(
            **weights, **flags, flag_use_half_precision=self.fp16, flag_do_torch_compile=False,
            flag_stitching=True, animation_region="exp")
        try:
            self.wrapper = wrapper_module.LivePortraitWrapper(inference_cfg=self.config)
        except Exception as err:  # a truncated or foreign weight file, a device that is not there
            raise RuntimeError(f"LivePortrait backend: LivePortraitWrapper could not load its models from {checkout} "
                               f"on {device} ({type(err).__name__}: {err}). find_checkout checks the files are "
                               f"there; re-download them if they are damaged.") from err

    def _prepare(self, images: np.ndarray):
        """[b, 256, 256, 3] uint8 -> [b, 3, 256, 256] float in [0, 1] on the device. The wrapper's prepare_source
        reads (h, w) from img.shape[:2], so a 4-D batch would be mistaken for one image: one image per call."""
        import torch

        return torch.cat([self.wrapper.prepare_source(image) for image in images], dim=0)

    def _animate(self, driving: np.ndarray, source: np.ndarray) -> np.ndarray:
        """driving, source: [b, 256, 256, 3] uint8 -> [b, 256, 256, 3] uint8 (one batch)."""
        import torch

        lp = self.wrapper
        x_source = self._prepare(source)  # [b, 3, 256, 256]
        x_driving = self._prepare(driving)  # [b, 3, 256, 256]
        feature = lp.extract_feature_3d(x_source)  # [b, 32, 16, 64, 64]
        info_s = lp.get_kp_info(x_source)  # kp, exp [b, 21, 3]; pitch, yaw, roll, scale [b, 1]; t [b, 3]
        info_d = lp.get_kp_info(x_driving)
        if tuple(info_s["exp"].shape[1:]) != (NUM_KP, 3):
            raise ValueError(f"LivePortrait backend: expected {NUM_KP} keypoints, the checkout gives "
                             f"{tuple(info_s['exp'].shape)}")
        kp_source = lp.transform_keypoint(info_s)  # [b, 21, 3]: s_s (x_c_s R_s + exp_s) + t_s
        exp = torch.where(expression_mask(info_s["exp"].device), info_d["exp"], info_s["exp"])  # [b, 21, 3]
        kp_driving = lp.transform_keypoint({**info_s, "exp": exp})  # source pose, driving expression
        kp_driving = lp.stitching(kp_source, kp_driving)  # [b, 21, 3]
        out = lp.warp_decode(feature, kp_source, kp_driving)["out"]  # [b, 3, H, W], H = 512 for the 2x generator
        images = lp.parse_output(out)  # [b, H, W, 3] uint8
        if images.shape[1:3] != (SIZE, SIZE):
            import cv2

            images = np.stack([cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for image in images])
        return images

    def __call__(self, driving: np.ndarray, source: np.ndarray) -> np.ndarray:
        """driving, source: uint8 RGB [B, 256, 256, 3] -> uint8 RGB [B, 256, 256, 3], the i-th source crop with
        the i-th driving crop's expression, run batch_size pairs at a time."""
        import torch

        _check_crops("driving", driving)
        _check_crops("source", source)
        if len(driving) != len(source):
            raise ValueError(f"LivePortrait backend: {len(driving)} driving crops but {len(source)} source crops")
        out = np.empty((len(source), SIZE, SIZE, 3), np.uint8)
        with torch.no_grad():
            for start in range(0, len(source), self.batch_size):
                stop = start + self.batch_size
                out[start:stop] = self._animate(driving[start:stop], source[start:stop])
        return out
