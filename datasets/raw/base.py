"""What a raw reader hands the pipeline: clips with their views, cameras and frame sources."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import fsspec
import numpy as np

from datasets.color_correction import ColorCorrection
from datasets.errors import UserError
from datasets.raw.sources import ImageSequence, VideoSource
from datasets.store import LedgerItem


class RawDataError(UserError, FileNotFoundError):
    """The raw capture is not where it was said to be (or not a folder or file of the kind)."""


@dataclass(frozen=True)
class ViewSpec:
    """One camera of a clip, in the pixels of its source frames."""

    serial: str
    K: tuple  # [3][3] intrinsics of the source frames
    world_to_cam: tuple  # [4][4] OpenCV world-to-camera
    source: VideoSource | ImageSequence
    width: int
    height: int
    background: str | None = None  # URL of this camera's background plate, if the capture has one
    alpha: VideoSource | ImageSequence | None = None  # the release's own mattes of this camera, if any
    color: ColorCorrection | None = None  # the release's colour correction of this camera, if any

    @property
    def K_array(self) -> np.ndarray:
        return np.asarray(self.K, dtype=np.float64)

    @property
    def world_to_cam_array(self) -> np.ndarray:
        return np.asarray(self.world_to_cam, dtype=np.float64)


@dataclass(frozen=True)
class ClipSpec:
    """One clip (subject, sequence): its views and the original frame ids kept after the stride."""

    dataset: str
    subject: str
    sequence: str
    views: tuple[ViewSpec, ...]
    frame_ids: tuple[int, ...]
    fps: float = 0.0
    layout: str = ""  # the packaging it was read from (e.g. NeRSemble 'v1-release')
    notes: tuple[str, ...] = ()  # provenance: what the reader changed or assumed (a rescale, a meta file)
    tracking: str | None = None  # URL of the release's FLAME tracking of this clip (.npz)
    source_meta: tuple[tuple[str, object], ...] = ()  # what the release says of the clip (VFHQ: crop box, ...)

    @property
    def key(self) -> str:
        return f"{self.subject}/{self.sequence}"


@dataclass
class RawPlan:
    """The clips a reader found and the problems it met (each a ledger item of the ingest stage)."""

    clips: list[ClipSpec] = field(default_factory=list)
    issues: dict[str, list[LedgerItem]] = field(default_factory=dict)  # by clip key (or raw name)
    layouts: dict[str, str] = field(default_factory=dict)  # participant or folder -> the layout it was read as
    unselected: int = 0  # clips found but left out by the selection

    def add_issue(self, clip: str, reason: str, view: str | None = None, frame: int | None = None) -> None:
        self.issues.setdefault(clip, []).append(LedgerItem("ingest", clip, reason, frame=frame, view=view))


@dataclass(frozen=True)
class Selection:
    """Which clips and frames to take: sequence patterns and the frame stride."""

    include: tuple[str, ...] = ()  # fnmatch patterns on 'subject/sequence' or 'sequence'; empty = all
    exclude: tuple[str, ...] = ()
    stride: int = 1  # keep every stride-th frame (NeRSemble practice: 3)

    def wants(self, subject: str, sequence: str) -> bool:
        names = (f"{subject}/{sequence}", sequence, subject)

        def hit(patterns: tuple[str, ...]) -> bool:
            return any(fnmatch.fnmatchcase(n, p) for p in patterns for n in names)

        return (not self.include or hit(self.include)) and not hit(self.exclude)

    def frame_ids(self, n_frames: int) -> tuple[int, ...]:
        return tuple(range(0, n_frames, max(1, self.stride)))


def filesystem(root: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path) of a local path or fsspec URL."""
    fs, path = fsspec.core.url_to_fs(root)
    return fs, path.rstrip("/")


def to_url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A URL fsspec.open understands, from a path on `fs`."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return path if protocol in ("file", "local") else f"{protocol}://{path}"


def list_dirs(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    """Names of the sub-directories of `path`, sorted (empty when `path` is not a directory)."""
    try:
        entries = fs.ls(path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "directory")


def list_files(fs: fsspec.AbstractFileSystem, path: str, suffixes: tuple[str, ...]) -> list[str]:
    """Names of the files in `path` with one of `suffixes` (case-insensitive), sorted."""
    try:
        entries = fs.ls(path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return []
    names = [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "file"]
    return sorted(n for n in names if n.lower().endswith(suffixes))


def as_tuple(a: np.ndarray) -> tuple:
    """A matrix as nested tuples of floats (hashable, picklable, JSON-able)."""
    return tuple(tuple(float(x) for x in row) for row in np.asarray(a))


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
