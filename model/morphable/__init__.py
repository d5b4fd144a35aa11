"""Loaders for 3D morphable face model files (BFM 2009 converted .mat, BFM 2017 .h5, FLAME 2020/2023 .pkl)
as torch modules with one interface: vertices(id, exp), landmarks(id, exp) (iBUG-68), describe()."""

from model.morphable.base import ModelFileError, MorphableModel
from model.morphable.load import MODEL_KINDS, load_morphable_model

__all__ = ["MODEL_KINDS", "ModelFileError", "MorphableModel", "load_morphable_model"]
