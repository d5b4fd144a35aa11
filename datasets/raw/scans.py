"""Head-scan datasets (NPHM, FaceVerse), read as they are released and rendered from a fixed rig.

NPHM (Giebenhain et al., CVPR 2023; the layout its DataManager reads, SimonGiebenhain/NPHM
src/NPHM/data/manager.py):

    <root>/{subject:03d}/{expression:03d}/scan.ply     the scan (slightly downsampled), textured
                                       /flame.ply       FLAME fit        (not read)
                                       /registration.ply  FLAME upsampled and refined; its vertices at
                                                        fixed indices are NPHM's facial landmarks (not read)
                                       /s.npy R.npy t.npy  the transform back to the raw metric scan:
                                                        raw = (x - t) R / s  (not read)

    Coordinates: FLAME's, times 4 (y up, the face looking along +z, x to the subject's left); a metre is
    4 units. The rig looks at (0, 0.15, 0) NPHM units, the focal point of NPHM's own example viewer.
    The root may also be the folder above a `dataset/` folder holding the subjects.

FaceVerse (Wang et al., CVPR 2022; LizhenWangT/FaceVerse-Dataset: per scan a textured .obj with its .mtl
and .jpg texture, e.g. data_sample/001_01.mtl -> map_Kd 001_01.jpg, and the FaceVerse fit as a .ply):

    <root>/**/{identity:03d}_{expression:02d}.obj  (+ .mtl + .jpg)   the scan, read
    <root>/**/{identity:03d}_{expression:02d}*.ply                   the FaceVerse fit (not read)

    Units and axes are not documented with the release; the FaceVerse model itself is y up with the face
    towards +z (its renderer's camera sits on +z), which is assumed for the scans. The rig is placed per
    identity from the bounding box of its first scan (`faceverse_frame`: units from the box's size, the
    head centre a fixed distance below its top), recorded in the clip's provenance; every expression of
    an identity shares that placement.

Every scan clip is one identity: subject = the identity's id, sequence `scans`, one frame per expression
(frame id = the expression number), the rig's cameras as views (datasets/scans/rig.py), rendered at the
working resolution (datasets/scans/render.py). The views come with their alpha as the release's
mattes (the render's coverage), so the matting stage copies them (`released`) and mattes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from datasets.errors import ConfigError
from datasets.names import InvalidNameError, validate_name
from datasets.raw.base import (
    ClipSpec,
    RawDataError,
    RawPlan,
    Selection,
    ViewSpec,
    as_tuple,
    filesystem,
    list_dirs,
    to_url,
)
from datasets.raw.nersemble_layouts import describe_top
from datasets.scans.rig import DEFAULT_VIEWS, HeadFrame, make_scan_rig
from datasets.scans.source import ScanRender

FLAVOURS = ("nphm", "faceverse")
SEQUENCE = "scans"
NPHM_FRAME = HeadFrame(centre=(0.0, 0.15, 0.0), units_per_metre=4.0)
LANDMARK_NOTE = "registration.ply vertices (not read: the 2D landmarks come from the landmark stage on the renders)"
_DIGITS = re.compile(r"\d+")
_FACEVERSE = re.compile(r"(\d+)_(\d+)\.obj", re.IGNORECASE)
HEAD_CENTRE_BELOW_TOP_M = 0.13  # FaceVerse: the head centre below the top of the scan (crown with hair), metres


@dataclass(frozen=True)
class ScanOptions:
    resolution: int = 512  # side of the rendered square views: the ingest's working resolution
    views: int = DEFAULT_VIEWS  # cameras of the rig (80 as the paper; fewer for tests and quick looks)

    def __post_init__(self) -> None:
        if self.resolution < 16 or not 1 <= self.views <= 1000:
            raise ConfigError(f"scans: resolution must be at least 16 and views 1..1000, got {self.resolution}, "
                              f"{self.views}")


def _views(scans: list[str], frame_ids: list[int], frame: HeadFrame, opts: ScanOptions) -> tuple[ViewSpec, ...]:
    serials, K, E = make_scan_rig(frame, opts.resolution, opts.views)
    Kt, Et = tuple(as_tuple(k) for k in K), tuple(as_tuple(e) for e in E)
    views = []
    for v, serial in enumerate(serials):
        rgb, alpha = (ScanRender(tuple(scans), tuple(frame_ids), Kt, Et, opts.resolution, v, output)
                      for output in ("rgb", "alpha"))
        views.append(ViewSpec(serial, Kt[v], Et[v], rgb, opts.resolution, opts.resolution, alpha=alpha))
    return tuple(views)


def _frame_note(frame: HeadFrame) -> str:
    return (f"rig looks at {list(frame.centre)} (scan units), {frame.units_per_metre:g} units per metre, "
            f"up {list(frame.up)}, face towards {list(frame.forward)}")


def _add_clip(plan: RawPlan, dataset: str, subject: str, scans: dict[int, str], selection: Selection,
              frame: HeadFrame, opts: ScanOptions, notes: list[str], meta: list[tuple[str, object]]) -> None:
    ids = sorted(scans)[:: max(1, selection.stride)]
    plan.clips.append(ClipSpec(
        dataset, subject, SEQUENCE, _views([scans[i] for i in ids], ids, frame, opts), tuple(ids), 0.0,
        layout=dataset, notes=tuple(notes + [_frame_note(frame)]),
        source_meta=tuple(meta + [("rig_views", opts.views), ("lighting", "unlit: the scan's colours as captured")])))


def _subject_ok(plan: RawPlan, subject: str, selection: Selection) -> bool:
    try:
        validate_name(subject, "subject")
    except InvalidNameError as e:
        plan.add_issue(subject, str(e))
        return False
    if not selection.wants(subject, SEQUENCE):
        plan.unselected += 1
        return False
    return True


# ------------------------------------------------------------------------------------------------- NPHM
def _nphm_base(fs, base: str) -> str | None:
    """The folder holding NPHM's subject folders: the root, or its `dataset/` folder."""
    for folder in (base, f"{base}/dataset"):
        for subject in list_dirs(fs, folder):
            if not _DIGITS.fullmatch(subject):
                continue
            for expr in list_dirs(fs, f"{folder}/{subject}"):
                if _DIGITS.fullmatch(expr) and fs.exists(f"{folder}/{subject}/{expr}/scan.ply"):
                    return folder
    return None


def read_nphm(root: str, selection: Selection, opts: ScanOptions = ScanOptions()) -> RawPlan:
    fs, base = filesystem(root)
    if not fs.isdir(base):
        raise RawDataError(f"NPHM root {root} is not a directory")
    folder = _nphm_base(fs, base)
    if folder is None:
        raise RawDataError(f"no NPHM scan found under {root}: looked for <subject>/<expression>/scan.ply (3-digit "
                           f"folders, as NPHM's DataManager reads them) in the root and in root/dataset; the root "
                           f"holds {describe_top(fs, base)}")
    plan = RawPlan()
    for subject in list_dirs(fs, folder):
        if not _DIGITS.fullmatch(subject) or not _subject_ok(plan, subject, selection):
            continue
        scans, extras = {}, {"registration.ply": 0, "flame.ply": 0, "s.npy": 0}
        for expr in list_dirs(fs, f"{folder}/{subject}"):
            if not _DIGITS.fullmatch(expr):
                continue
            path = f"{folder}/{subject}/{expr}"
            if not fs.exists(f"{path}/scan.ply"):
                plan.add_issue(f"{subject}/{SEQUENCE}", f"expression folder {path} has no scan.ply", frame=int(expr))
                continue
            scans[int(expr)] = to_url(fs, f"{path}/scan.ply")
            for name in extras:
                extras[name] += fs.exists(f"{path}/{name}")
        if not scans:
            plan.add_issue(f"{subject}/{SEQUENCE}", f"subject folder {folder}/{subject} has no expression with scan.ply")
            continue
        notes = ["NPHM coordinates: FLAME's times 4 (metres x 4)"]
        notes += [f"{name} beside {n} of {len(scans)} scans (not read)" for name, n in extras.items() if n]
        _add_clip(plan, "nphm", subject, scans, selection, NPHM_FRAME, opts, notes,
                  [("units", "FLAME metres x 4"), ("landmarks", LANDMARK_NOTE)])
    return plan


# -------------------------------------------------------------------------------------------- FaceVerse
def _faceverse_scans(fs, base: str) -> dict[str, dict[int, str]]:
    """identity -> expression -> URL of its .obj, from every folder under the root."""
    out: dict[str, dict[int, str]] = {}
    try:
        paths = fs.find(base)
    except (FileNotFoundError, NotADirectoryError):
        return out
    for path in sorted(paths):
        m = _FACEVERSE.fullmatch(path.rsplit("/", 1)[-1])
        if m:
            out.setdefault(m.group(1), {}).setdefault(int(m.group(2)), to_url(fs, path))
    return out


def faceverse_frame(url: str) -> HeadFrame:
    """The rig placement of one FaceVerse identity, from the bounding box of its first scan: the units are
    the power of ten that makes the box's largest side 0.1 to 1 m (a head with some neck, in metres,
    centimetres or millimetres); the cameras look at the box's horizontal centre, HEAD_CENTRE_BELOW_TOP_M
    below its top (the crown), so a long neck or shoulders do not shift or shrink the head."""
    from datasets.scans.mesh import scan_bounds

    lo, hi = scan_bounds(url)
    side = float((hi - lo).max())
    if not np.isfinite(side) or side <= 0:
        raise ValueError(f"scan {url} has an empty bounding box")
    units = 10.0 ** np.floor(np.log10(side / 0.1))
    centre = (lo + hi) / 2
    centre[1] = hi[1] - HEAD_CENTRE_BELOW_TOP_M * units
    return HeadFrame(centre=tuple(float(x) for x in centre), units_per_metre=float(units))


def read_faceverse(root: str, selection: Selection, opts: ScanOptions = ScanOptions()) -> RawPlan:
    fs, base = filesystem(root)
    if not fs.isdir(base):
        raise RawDataError(f"FaceVerse root {root} is not a directory")
    found = _faceverse_scans(fs, base)
    if not found:
        raise RawDataError(f"no FaceVerse scan found under {root}: looked for <identity>_<expression>.obj files "
                           f"(e.g. 001_01.obj with its .mtl and .jpg) at any depth; the root holds "
                           f"{describe_top(fs, base)}")
    plan = RawPlan()
    for subject, scans in sorted(found.items()):
        if not _subject_ok(plan, subject, selection):
            continue
        first = scans[min(scans)]
        try:
            frame = faceverse_frame(first)
        except ValueError as e:  # (ScanReadError is a ValueError)
            plan.add_issue(f"{subject}/{SEQUENCE}", f"rig not placed: {e}")
            continue
        placed = (f"rig placed on the bounding box of {first.rsplit('/', 1)[-1]}: {frame.units_per_metre:g} units "
                  f"per metre, head centre {HEAD_CENTRE_BELOW_TOP_M} m below its top")
        _add_clip(plan, "faceverse", subject, scans, selection, frame, opts, [placed],
                  [("units", "as in the files (units per metre from the scan's size)")])
    return plan


def read_scans(root: str, selection: Selection, flavour: str = "auto", opts: ScanOptions = ScanOptions()) -> RawPlan:
    """A scan dataset of the given flavour; `auto` tells NPHM's folders from FaceVerse's files."""
    if flavour not in ("auto", *FLAVOURS):
        raise ConfigError(f"scan flavour must be auto, nphm or faceverse, got {flavour!r}")
    if flavour == "auto":
        fs, base = filesystem(root)
        if not fs.isdir(base):
            raise RawDataError(f"scan root {root} is not a directory")
        if _nphm_base(fs, base) is not None:
            flavour = "nphm"
        elif _faceverse_scans(fs, base):
            flavour = "faceverse"
        else:
            raise RawDataError(f"no head scans found under {root}: looked for NPHM's <subject>/<expression>/scan.ply "
                               f"and FaceVerse's <identity>_<expression>.obj; the root holds {describe_top(fs, base)}")
    plan = read_nphm(root, selection, opts) if flavour == "nphm" else read_faceverse(root, selection, opts)
    plan.layouts.update({c.subject: flavour for c in plan.clips})
    return plan
