"""Raw capture readers. `read_raw(kind, root, selection)` lists the clips of a capture."""

from __future__ import annotations

from datasets.errors import ConfigError
from datasets.raw.base import ClipSpec, RawPlan, Selection, ViewSpec
from datasets.raw.monocular import DEFAULT_FOCAL, read_images, read_video
from datasets.raw.nersemble import read_nersemble
from datasets.raw.scans import ScanOptions, read_scans
from datasets.raw.vfhq import read_vfhq

KINDS = {
    "nersemble": "NeRSemble, any packaging of v1 or v2 (detected per participant; README's dataset table)",
    "nersemble-v1": "NeRSemble v1 packagings only (full release, VHAP merged, paper subset, processed)",
    "nersemble-v2": "NeRSemble v2 packagings only (nersemble_data download, benchmark)",
    "vfhq": "VFHQ clips: frame folders or videos Clip+<id>+P<n>+..., with meta info when present",
    "video": "a video file, or a folder of video files (one clip each)",
    "images": "an image folder, or a folder of image folders (one clip each)",
    "scans": "head scans rendered from a fixed 80-camera rig: NPHM or FaceVerse, told apart by the layout",
    "nphm": "NPHM scans <subject>/<expression>/scan.ply, rendered from the 80-camera rig (one clip per subject)",
    "faceverse": "FaceVerse scans <id>_<expression>.obj + .mtl + .jpg, rendered from the 80-camera rig",
}

LICENCE_NOTES = {
    "nersemble": "NeRSemble: research use under the NeRSemble Terms of Use (access by request, TUM); "
                 "redistribution of derived data only to users who accepted them.",
    "vfhq": "VFHQ: research use only; frames come from YouTube videos under their owners' terms.",
    "video": "A user-supplied capture; its owner decides the terms.",
    "images": "A user-supplied capture; its owner decides the terms.",
    "nphm": "NPHM: research use only, under the NPHM Terms of Use (access by request and signed agreement, TUM); "
            "renders and other derived data only to users who accepted them.",
    "faceverse": "FaceVerse: non-commercial research only, under the FaceVerse agreement signed by a full-time "
                 "academic (Tsinghua University); no redistribution of the data or derived data to third parties "
                 "without Tsinghua's written permission.",
    "scans": "NPHM or FaceVerse scans: research use only under the dataset's agreement (see the nphm and "
             "faceverse notes).",
}


def read_raw(kind: str, root: str, selection: Selection, *, focal: float = DEFAULT_FOCAL,
             subject: str | None = None, scan: ScanOptions | None = None) -> RawPlan:
    if kind not in KINDS:
        raise ConfigError(f"unknown dataset kind {kind!r}; choose one of: {', '.join(KINDS)}")
    if kind.startswith("nersemble"):
        version = kind.split("-", 1)[1] if "-" in kind else "auto"
        return read_nersemble(root, selection, version)
    if kind == "vfhq":
        return read_vfhq(root, selection, focal)
    if kind in ("scans", "nphm", "faceverse"):
        return read_scans(root, selection, "auto" if kind == "scans" else kind, scan or ScanOptions())
    if kind == "video":
        return read_video(root, selection, focal, subject)
    return read_images(root, selection, focal, subject)


def licence_note(kind: str) -> str:
    return LICENCE_NOTES.get(kind.split("-")[0], "")


__all__ = ["ClipSpec", "RawPlan", "Selection", "ViewSpec", "ScanOptions", "KINDS", "read_raw", "licence_note"]
