"""One entry point for the morphable model files: the kind, the path (or its environment variable), and
the landmark file where the model file holds none.

    model = load_morphable_model("flame", "", landmarks_path="")   # HEADFORGE_FLAME, HEADFORGE_FLAME_LANDMARKS

A path (argument or variable) may name the file or the folder holding it under a usual name. A missing
file raises MissingWeightsError (what, where it looked, which variable, where it is published); a file
that is there but wrong raises ModelFileError. Nothing is downloaded.
"""

from __future__ import annotations

import os

from datasets.weights import (
    MORPHABLE_LANDMARK_FILES,
    MORPHABLE_MODEL_FILES,
    FileSpec,
    MissingWeightsError,
    require_file,
)
from model.morphable.base import MorphableModel

MODEL_KINDS = ("bfm2009", "bfm2017", "flame")


def _resolve(path: str, spec: FileSpec) -> str:
    """The file to read: `path`, else the spec's variable; a folder is searched for the usual names."""
    path = os.path.expanduser(path or os.environ.get(spec.variable, ""))
    if os.path.isdir(path) or not path:
        folder = path or os.getcwd()
        for name in spec.names:
            if os.path.isfile(os.path.join(folder, name)):
                return os.path.join(folder, name)
        path = os.path.join(folder, spec.names[0])
    return path


def _require_landmarks(kind: str, path: str) -> str:
    spec = MORPHABLE_LANDMARK_FILES[kind]
    path = _resolve(path, spec)
    if kind == "bfm2017" and not (os.path.isfile(path) and os.path.getsize(path) > 0):
        raise MissingWeightsError(
            f"{spec.what}: file {os.path.basename(path)!r} not found in {os.path.dirname(os.path.abspath(path))} . "
            f"Pass landmarks_path or set {spec.variable} to the file (or its folder). BFM 2017 ships no iBUG-68 "
            f"landmark list, so this file is the user's: 68 vertex indices of the model mesh (0-based, iBUG-68 "
            f"order), one per line in a .txt or as an integer .npy. Nothing is downloaded at run time.")
    return require_file(path, what=spec.what, variable=spec.variable, published=spec.published)


def load_morphable_model(kind: str, path: str = "", *, landmarks_path: str = "", n_id: int | None = None,
                         n_exp: int | None = None, device="cpu") -> MorphableModel:
    """Load a morphable model file of `kind` (one of MODEL_KINDS) onto `device`.

    n_id / n_exp: coefficients to use (defaults BFM09 80/64, BFM2017 up to 80/64, FLAME 100/50). For FLAME,
    n_exp counts expression blendshapes and the model's exp vector carries 3 jaw angles more."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown morphable model kind {kind!r}; choose one of {', '.join(MODEL_KINDS)}")
    spec = MORPHABLE_MODEL_FILES[kind]
    path = require_file(_resolve(path, spec), what=spec.what, variable=spec.variable, published=spec.published)
    if kind == "bfm2009":
        from model.morphable.bfm import load_bfm2009

        model = load_bfm2009(path, n_id=n_id, n_exp=n_exp)
    elif kind == "bfm2017":
        from model.morphable.bfm import load_bfm2017

        model = load_bfm2017(path, _require_landmarks(kind, landmarks_path), n_id=n_id, n_exp=n_exp)
    else:
        from model.morphable.flame import load_flame

        model = load_flame(path, _require_landmarks(kind, landmarks_path), n_id=n_id, n_exp=n_exp)
    return model.to(device)
