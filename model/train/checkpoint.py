"""Checkpoints that resume a run exactly: model, optimiser, loader position, every RNG and the step,
plus what identifies the model (format, version, preset, config, canonical frame, subjects). Loaded
with torch.load(weights_only=True): only tensors and plain Python values are stored."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from datasets.errors import UserError

FORMAT = "headforge-checkpoint"
VERSION = 1


class CheckpointError(UserError, ValueError):
    """A checkpoint that this code cannot use (another format, version, stage or preset)."""


def rng_state() -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
             "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: str, payload: dict) -> None:
    """Atomic write (a crash mid-save leaves the previous checkpoint intact)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save({"format": FORMAT, "version": VERSION, **payload}, tmp)
    os.replace(tmp, path)


STAGES = ("guiding", "gaussian")


def load(path: str, stage: str | None, map_location="cpu") -> dict:
    """The checkpoint at `path` if it is this code's format and version and of `stage` (None: either stage)."""
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise CheckpointError(f"{path} is not a readable checkpoint: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a headforge checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} is checkpoint version {payload.get('version')}; this code reads {VERSION}")
    if payload.get("stage") not in ((stage,) if stage else STAGES):
        raise CheckpointError(f"{path} is a {payload.get('stage')!r} checkpoint, not {stage!r}")
    return payload
