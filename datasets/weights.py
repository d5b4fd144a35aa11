"""Finding the weight and model files users supply to full-quality backends, with one clear error when one
is absent; the table of the morphable model files (their environment variables: the one home of those)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from datasets.errors import UserError


class MissingWeightsError(UserError, FileNotFoundError):
    """A backend's weight file is not where it was looked for. The message says what, where, how to set
    the location, and where the file is published; nothing is downloaded."""


def require_file(path: str, *, what: str, variable: str, published: str) -> str:
    if os.path.isfile(path) and os.path.getsize(path) > 0:
        return path
    folder, name = os.path.split(os.path.abspath(path))
    raise MissingWeightsError(
        f"{what}: file {name!r} not found in {folder} . Set {variable} to the folder (or file) that holds it; "
        f"the file is published at {published} . Nothing is downloaded at run time."
    )


@dataclass(frozen=True)
class FileSpec:
    what: str  # what the file is, for messages
    variable: str  # environment variable holding its path
    names: tuple[str, ...]  # usual file names, looked for when the path is a folder
    published: str  # where it is obtained


MORPHABLE_MODEL_FILES = {
    "bfm2009": FileSpec(
        "BFM 2009 converted .mat (BFM_model_front.mat / BFM09_model_info.mat)", "HEADFORGE_BFM2009",
        ("BFM_model_front.mat", "BFM09_model_info.mat"),
        "https://faces.dmi.unibas.ch/bfm/ (01_MorphableModel.mat; converted with "
        "https://github.com/sicxu/Deep3DFaceRecon_pytorch util/load_mats.py or "
        "https://github.com/ascust/3DMM-Fitting-Pytorch convert_bfm09_data.py)"),
    "bfm2017": FileSpec(
        "BFM 2017 model .h5", "HEADFORGE_BFM2017",
        ("model2017-1_bfm_nomouth.h5", "model2017-1_face12_nomouth.h5"),
        "https://faces.dmi.unibas.ch/bfm/bfm2017.html"),
    "flame": FileSpec(
        "FLAME 2020/2023 model .pkl", "HEADFORGE_FLAME",
        ("generic_model.pkl", "flame2023.pkl", "flame2020.pkl", "FLAME2020.pkl", "FLAME2023.pkl"),
        "https://flame.is.tue.mpg.de"),
}

MORPHABLE_LANDMARK_FILES = {
    "bfm2017": FileSpec(
        "BFM 2017 68-landmark vertex index file", "HEADFORGE_BFM2017_LANDMARKS",
        ("bfm2017_ibug68.txt", "bfm2017_ibug68.npy"), ""),
    "flame": FileSpec(
        "FLAME 68-landmark embedding", "HEADFORGE_FLAME_LANDMARKS", ("landmark_embedding.npy",),
        "https://github.com/yfeng95/DECA (data/landmark_embedding.npy, with the FLAME model files)"),
}

MORPHABLE_MODEL_VARIABLES = {kind: spec.variable for kind, spec in MORPHABLE_MODEL_FILES.items()}
MORPHABLE_LANDMARK_VARIABLES = {kind: spec.variable for kind, spec in MORPHABLE_LANDMARK_FILES.items()}
