"""The convolutional part of VGG16, laid out like torchvision's `vgg16().features` so that a torchvision
state dict loads by key, and a perceptual (VGG feature L1) loss on top of it.

Weights are never downloaded: the user gives the path of a saved torchvision VGG16 state dict
(`torch.save(torchvision.models.vgg16(weights=...).state_dict(), PATH)`). Without a path the
perceptual term is off (a zero loss, with one warning per process); a wrong path is an error.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from datasets.errors import UserError

# torchvision's configuration "D": channel counts, "M" = 2x2 max pool.
CONFIG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                 512, 512, 512, "M", 512, 512, 512, "M")
# Index in `features` of the ReLU after each named conv (torchvision layout: conv, relu, ..., pool).
LAYERS: dict[str, int] = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}
DEFAULT_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FULL_DEPTH = 30  # len(torchvision.models.vgg16().features)


class VGGWeightsError(UserError, ValueError):
    """The VGG16 weights file is missing, unreadable or does not match the network."""


def _build_layers(depth: int) -> list[nn.Module]:
    """The first `depth` modules of torchvision's vgg16().features (same order, same indices)."""
    layers: list[nn.Module] = []
    c_in = 3
    for v in CONFIG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c_in, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            c_in = int(v)
    return layers[:depth]


class VGG16Features(nn.Module):
    """VGG16 conv trunk up to and including `features[last]` (default 22 = relu4_3).

    forward(x [B, 3, H, W], taps) -> [features[i](...) for i in taps], each [B, C_i, H_i, W_i];
    x is expected already normalised with the ImageNet mean/std.
    """

    def __init__(self, last: int = LAYERS["relu4_3"]):
        super().__init__()
        if not 0 <= last < FULL_DEPTH:
            raise ValueError(f"last layer index must be in [0, {FULL_DEPTH}), got {last}")
        self.last = last
        self.features = nn.Sequential(*_build_layers(last + 1))

    def forward(self, x: Tensor, taps: Sequence[int] = (LAYERS["relu4_3"],)) -> list[Tensor]:
        wanted = set(taps)
        if any(not 0 <= t <= self.last for t in wanted):
            raise ValueError(f"taps {sorted(wanted)} outside the built layers 0..{self.last}")
        out: dict[int, Tensor] = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                out[i] = x
            if len(out) == len(wanted):
                break
        return [out[t] for t in taps]


def _read_state_dict(path: str) -> dict[str, Tensor]:
    if not path or not os.path.isfile(path):
        raise VGGWeightsError(f"no VGG16 weights at {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors, truncated files, non-weight content
        raise VGGWeightsError(f"could not read VGG16 weights at {path}: {e}") from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise VGGWeightsError(f"VGG16 weights at {path} are a {type(obj).__name__}, not a state dict")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_vgg16(path: str, last: int = LAYERS["relu4_3"]) -> VGG16Features:
    """A frozen, eval-mode VGG16Features(last) from a torchvision-format VGG16 state dict at `path`.

    Accepts a raw state dict or {"state_dict": ...}, with or without a "module." prefix; keys beyond
    `last` and the classifier.* keys are ignored. Raises VGGWeightsError if the file is missing or a
    needed features.N.weight/bias is absent or has the wrong shape.
    """
    state = _read_state_dict(path)
    net = VGG16Features(last)
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    mismatched = [f"{k} (expected {tuple(v.shape)}, got {tuple(state[k].shape)})"
                  for k, v in expected.items()
                  if k in state and (not isinstance(state[k], Tensor) or state[k].shape != v.shape)]
    if missing or mismatched:
        problems = []
        if missing:
            problems.append(f"missing keys {missing}")
        if mismatched:
            problems.append(f"mismatched shapes {mismatched}")
        raise VGGWeightsError(f"VGG16 weights at {path} do not fit torchvision's vgg16 features: "
                              + "; ".join(problems))
    net.load_state_dict({k: state[k] for k in expected}, strict=True)
    net.requires_grad_(False)
    return net.eval()


_warned_no_weights = False  # the "perceptual term off" warning is given once per process


def _warn_disabled() -> None:
    global _warned_no_weights
    if not _warned_no_weights:
        _warned_no_weights = True
        warnings.warn("the VGG perceptual loss term is off because no weights were given; "
                      "set vgg_weights=PATH to a torchvision VGG16 state dict to enable it",
                      UserWarning, stacklevel=3)


class PerceptualLoss(nn.Module):
    """Sum over `layers` of the mean L1 distance between VGG16 features of prediction and target.

    The VGG is kept OUT of the module tree (held in a plain list, `self._net = [net]`): its weights are
    fixed inputs, not model state, so they never show up in `parameters()` (and thus in an enclosing
    model's optimiser groups) nor in `state_dict()` / checkpoints (which would otherwise grow by the VGG
    weights, and fail to load where the loss is off). `_apply` is overridden so `.to(device)`,
    `.cuda()`, `.double()`, ... still move/cast it, and its parameters are frozen anyway. The
    normalisation constants are non-persistent buffers, so `state_dict()` is empty.
    """

    def __init__(self, weights_path: str | None, layers: Sequence[str] = DEFAULT_LAYERS):
        super().__init__()
        unknown = [n for n in layers if n not in LAYERS]
        if unknown or not layers:
            raise ValueError(f"unknown VGG layers {unknown or list(layers)}; choose from {list(LAYERS)}")
        self.layers = tuple(layers)
        self._taps = [LAYERS[n] for n in self.layers]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._net: list[VGG16Features] = []
        if weights_path:
            self._net.append(load_vgg16(weights_path, last=max(self._taps)))
        else:
            _warn_disabled()

    @property
    def enabled(self) -> bool:
        return bool(self._net)

    @property
    def net(self) -> VGG16Features | None:
        return self._net[0] if self._net else None

    def _apply(self, fn: Callable, recurse: bool = True):  # type: ignore[override]
        super()._apply(fn, recurse)
        if self._net:
            self._net[0]._apply(fn)
        return self

    def _features(self, x: Tensor) -> list[Tensor]:
        """x: [B, 3, H, W] in [0, 1] -> per-tap features, in the VGG's dtype."""
        net = self._net[0]
        dtype = net.features[0].weight.dtype
        x = (x.to(dtype) - self.mean.to(dtype)) / self.std.to(dtype)
        return net(x, self._taps)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """pred, target: [B, 3, H, W] in [0, 1] -> scalar loss (0 when disabled)."""
        if not self._net:
            return torch.zeros((), device=pred.device, dtype=pred.dtype)
        with torch.no_grad():
            target_feats = self._features(target)
        pred_feats = self._features(pred)
        loss = sum(F.l1_loss(p, t) for p, t in zip(pred_feats, target_feats, strict=True))
        return loss.to(pred.dtype)
