"""Renderers compute in float32 (or float64) whatever precision the caller's autocast region asks for.

    @float32_region
    def rasterize(verts, faces, K, world_to_cam, ...): ...

The trainer runs the model's forward pass under bf16 autocast (TrainConfig.amp). Inside the renderers that
would be wrong, not just slow: autocast turns matmuls and einsums into bf16 (8 bits of mantissa), so a
projected vertex or Gaussian mean 1 m from the camera lands pixels away at 512 px, a z-buffer compares
rounded depths, and gsplat's kernels exist for float32 only. A function wrapped here runs with autocast off
for the device of its tensors, and its bf16/fp16 tensor arguments (an MLP's output under autocast) are cast
up to float32 first; float32 and float64 arguments are left alone, so the float64 tests stay float64.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)
_REDUCED = (torch.float16, torch.bfloat16)


def at_least_float32(value):
    """A bf16/fp16 tensor as float32; anything else (float32, float64, integers, non-tensors) as it is."""
    if isinstance(value, torch.Tensor) and value.dtype in _REDUCED:
        return value.float()
    return value


_up = at_least_float32


def _device_type(args, kwargs) -> str | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.device.type
    return None


def autocast_off(device_type: str | None):
    """A context with autocast disabled for `device_type` where it is on (a no-op elsewhere)."""
    if device_type is not None and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def float32_region(fn: F) -> F:
    """fn with autocast off and its reduced-precision tensor arguments cast up to float32 (module docstring)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with autocast_off(_device_type(args, kwargs)):
            return fn(*[_up(a) for a in args], **{k: _up(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]
