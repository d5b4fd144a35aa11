"""What `avatar fit INPUT` preprocesses: a video, an image folder or one image, into a store under the
avatar directory, with the stages the training data went through (ingest with its framing, matting,
landmarks, fitting, crops) and the settings it was preprocessed with (from the shard set's provenance;
the defaults where it cannot be read)."""

from __future__ import annotations

import os
import shutil

from datasets.errors import ConfigError
from datasets.raw.base import IMAGE_SUFFIXES, VIDEO_SUFFIXES

AVATAR_STAGES = ["ingest", "matting", "landmarks", "fitting", "crops"]


def input_kind(path: str, folder: str) -> tuple[str, str]:
    """(dataset kind, root) for INPUT; one image is copied into a folder of its own under `folder`."""
    if os.path.isdir(path):
        names = os.listdir(path)
        if any(n.lower().endswith(VIDEO_SUFFIXES) for n in names):
            return "video", path
        if any(n.lower().endswith(IMAGE_SUFFIXES) for n in names):
            return "images", path
        raise ConfigError(f"{path} holds no video ({', '.join(VIDEO_SUFFIXES)}) and no image "
                          f"({', '.join(IMAGE_SUFFIXES)})")
    if not os.path.exists(path):
        raise ConfigError(f"avatar input {path} does not exist")
    if path.lower().endswith(VIDEO_SUFFIXES):
        return "video", path
    if path.lower().endswith(IMAGE_SUFFIXES):
        stem = os.path.splitext(os.path.basename(path))[0]
        one = os.path.join(folder, "input", stem)
        os.makedirs(one, exist_ok=True)
        shutil.copy(path, os.path.join(one, os.path.basename(path)))
        return "images", one
    raise ConfigError(f"{path} is neither a video ({', '.join(VIDEO_SUFFIXES)}) nor an image "
                      f"({', '.join(IMAGE_SUFFIXES)})")


def training_settings(model: str) -> tuple[dict[str, dict], str]:
    """(stage -> the config the model's training data was preprocessed with, where it came from): read from
    the shard set's provenance (its first source store's stage records); ({}, why not) when the shard set
    cannot be read (moved, on storage without credentials here)."""
    from datasets.shards.storage import ShardStorage
    from model.load import checkpoint_path
    from model.train import checkpoint

    payload = checkpoint.load(checkpoint_path(model), None)
    shards = payload["train_config"]["shards"]
    try:
        sources = ShardStorage(shards).manifest().doc.get("sources") or []
    except Exception as e:  # noqa: BLE001 - the defaults serve; the caller says so
        return {}, f"the model's shard set {shards} cannot be read ({e}): the stages' defaults are used"
    stages = (sources[0].get("stages") or {}) if sources else {}
    wanted = ("framing", *AVATAR_STAGES)
    found = {name: dict(stages[name]["config"]) for name in wanted if name in stages and "config" in stages[name]}
    return found, f"the settings the training data of {shards} was preprocessed with"
