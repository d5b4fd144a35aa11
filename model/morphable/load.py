"""One entry point for the morphable model files: the kind, the path (or its environment variable), and
the landmark file where the model file holds none.

    model = load_morphable_model("flame", "", landmarks_path="")   # HEADFORGE_FLAME, HEADFORGE_FLAME_LANDMARKS

A path (argument or variable) may name the file or the folder holding it under a usual name. A missing
file raises MissingWeightsError (what, where it looked, which variable, where it is published); a file
that is there but wrong raises ModelFileError. Nothing is downloaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from model.morphable.base import MorphableModel
from datasets.weights import MissingWeightsError, require_file

MODEL_KINDS = ("bfm2009", "bfm2017", "flame")


@dataclass(frozen=True)
class _FileSpec:
    what: str  # what the file is, for messages
    variable: str  # environment variable holding its path
    names: tuple[str, ...]  # usual file names, looked for when the path is a folder
    published: str  # where it is obtained


_MODEL_FILES = {
    "bfm2009": _FileSpec(
        "BFM 2009 converted .mat (BFM_model_front.mat / BFM09_model_info.mat)", "HEADFORGE_BFM2009",
        ("BFM_model_front.mat", "BFM09_model_info.mat"),
        "https://faces.dmi.unibas.ch/bfm/ (01_MorphableModel.mat; converted with "
        "https://github.com/sicxu/Deep3DFaceRecon_pytorch util/load_mats.py or "
        "https://github.com/ascust/3DMM-Fitting-Pytorch convert_bfm09_data.py)"),
    "bfm2017": _FileSpec(
        "BFM 2017 model .h5", "HEADFORGE_BFM2017",
        ("model2017-1_bfm_nomouth.h5", "model2017-1_face12_nomouth.h5"),
        "https://faces.dmi.unibas.ch/bfm/bfm2017.html"),
    "flame": _FileSpec(
        "FLAME 2020/2023 model .pkl", "HEADFORGE_FLAME",
        ("generic_model.pkl", "flame2023.pkl", "flame2020.pkl", "FLAME2020.pkl", "FLAME2023.pkl"),
        "https://flame.is.tue.mpg.de"),
}

_LANDMARK_FILES = {
    "bfm2017": _FileSpec(
        "BFM 2017 68-landmark vertex index file", "HEADFORGE_BFM2017_LANDMARKS",
        ("bfm2017_ibug68.txt", "bfm2017_ibug68.npy"), ""),
    "flame": _FileSpec(
        "FLAME 68-landmark embedding", "HEADFORGE_FLAME_LANDMARKS", ("landmark_embedding.npy",),
        "https://github.com/yfeng95/DECA (data/landmark_embedding.npy, with the FLAME model files)"),
}


def _resolve(path: str, spec: _FileSpec) -> str:
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
    spec = _LANDMARK_FILES[kind]
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
    spec = _MODEL_FILES[kind]
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
