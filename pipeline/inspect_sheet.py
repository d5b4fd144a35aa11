"""Contact sheets of a store, so a person can check a clip at a glance. Multi-view clips: for a few
frames, a row of views with the matte overlaid and the landmarks drawn, under it the face crops and
non-face images, then the synthesized expressions. One-camera clips: a grid of frames, each with its
landmarks (detected, coloured by the backend that found them, and fitted), and beside it its crop, its
non-face image and its synthesized expressions (each under its source). Products a clip does not have
yet are left out."""

from __future__ import annotations

import os

import cv2
import numpy as np

from datasets.image_grid import labelled_grid
from datasets.names import clip_subject
from datasets.non_face import non_face_image
from datasets.store import Store

GREEN, YELLOW, WHITE, RED, CYAN = (60, 220, 60), (250, 210, 40), (255, 255, 255), (235, 50, 50), (90, 200, 255)
ORANGE, MAGENTA = (255, 150, 30), (230, 80, 230)
SOURCE_COLOURS = {1: GREEN, 2: CYAN, 3: ORANGE, 4: MAGENTA}  # lmk_source codes (pipeline/landmarks.py)


def _pick(n: int, k: int) -> list[int]:
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, min(n, k))})


def _label(img: np.ndarray, text: str) -> np.ndarray:
    cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, WHITE, 1, cv2.LINE_AA)
    return img


def overlay(rgb: np.ndarray, alpha: np.ndarray | None, lmk: np.ndarray | None, box: np.ndarray | None,
            cell: int, fitted: np.ndarray | None = None, edges: np.ndarray | None = None,
            colour: tuple = GREEN) -> np.ndarray:
    """One view: background dimmed and tinted by the matte, 68 landmarks (in `colour`) and the face box
    drawn; the fitted 3D landmarks projected (red) and the fitted mesh's edges (cyan) when given ([68, 2]
    and [E, 2, 2] pixels of the stored image)."""
    img = rgb.astype(np.float32)
    if alpha is not None:
        a = alpha.astype(np.float32)[..., None] / 255.0
        img = img * a + (0.35 * img + 0.65 * np.array([40, 60, 140])) * (1 - a)
    img = np.clip(img, 0, 255).astype(np.uint8)
    s = cell / rgb.shape[1]
    img = np.ascontiguousarray(cv2.resize(img, (cell, cell), interpolation=cv2.INTER_AREA))
    if box is not None and box[4] > 0:
        cv2.rectangle(img, (int(box[0] * s), int(box[1] * s)), (int(box[2] * s), int(box[3] * s)), YELLOW, 1)
    if edges is not None:
        for (x0, y0), (x1, y1) in edges * s:
            cv2.line(img, (int(x0), int(y0)), (int(x1), int(y1)), CYAN, 1, cv2.LINE_AA)
    if lmk is not None and lmk[:, 2].mean() > 0:
        for x, y in lmk[:, :2] * s:
            cv2.circle(img, (int(round(x)), int(round(y))), 1, colour, -1, cv2.LINE_AA)
    if fitted is not None:
        for x, y in fitted * s:
            if np.isfinite(x) and np.isfinite(y):
                cv2.circle(img, (int(round(x)), int(round(y))), 2, RED, 1, cv2.LINE_AA)
    return img


def fit_mesh(g):
    """The morphable model a clip was fitted with, when the fit used one and its file is still there
    (the mesh is drawn then); None otherwise."""
    attrs = dict(g["fit"].attrs)
    model = attrs.get("model")
    if not model:
        return None
    try:
        from model.morphable import load_morphable_model

        jaw = 3 if model["kind"] == "flame" else 0  # FLAME's expression vector ends with 3 jaw angles
        return load_morphable_model(model["kind"], model["path"], landmarks_path=model.get("landmarks_path") or "",
                                    n_id=model["n_id"], n_exp=model["n_exp"] - jaw)
    except (OSError, ValueError, KeyError):
        return None


def fit_projections(g, t: int, mesh=None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Frame t of a fitted clip: its 3D landmarks projected into every view [V, 68, 2] (None where the
    frame was not fitted) and, with the model, the mesh edges [V, E, 2, 2] (a subsample, for legibility)."""
    from datasets.cameras import project
    from datasets.store import frame_intrinsics

    if not g["fit/ok"][t]:
        return None, None
    K, E = frame_intrinsics(g, np.array([t]))[0], g["cameras/world_to_cam"][:]
    lmk3d = g["fit/lmk3d"][t]
    fitted = np.stack([project(lmk3d, K[v], E[v]) for v in range(len(K))])
    if mesh is None:
        return fitted, None
    import torch

    with torch.no_grad():
        verts = mesh.vertices(torch.as_tensor(g["fit/identity"][:])[None],
                              torch.as_tensor(g["fit/expression"][t])[None])[0].double().numpy()
    pose, scale = g["fit/pose"][t].astype(np.float64), float(g["fit/scale"][t])
    world = scale * verts @ pose[:3, :3].T + pose[:3, 3]
    faces = mesh.faces.numpy()
    faces = faces[:: max(1, len(faces) // 1500)]
    pairs = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    edges = np.stack([project(world, K[v], E[v])[pairs] for v in range(len(K))])
    return fitted, edges


def _face_crop(group, f: int, v: int, cell: int) -> np.ndarray:
    """The face crop of frame f, view v of a clip (made from its landmarks), cell x cell pixels."""
    from pipeline.backends.face_align import face_transform, warp

    image = warp(group["rgb"][f, v], face_transform(group["lmk2d"][f, v], 256), 256)
    return np.ascontiguousarray(cv2.resize(image, (cell, cell), interpolation=cv2.INTER_AREA))


def synth_pairs(store: Store, g, t: int, cell: int, stores: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    """Frame t's synthesized images: per slot (its source's face crop, the result), labelled; blank
    cells where a slot was not made."""
    blank = np.zeros((cell, cell, 3), np.uint8)
    pool = g["synth"].attrs["pool"]
    out = []
    for s in range(g["synth"].shape[1]):
        if not g["synth_ok"][t, s]:
            out.append((blank.copy(), blank.copy()))
            continue
        p, f, sv = (int(x) for x in g["synth_source"][t, s])
        url, key = pool[p]
        source_store = store if not url else stores.setdefault(url, Store(url, store.storage_options, mode="r"))
        result = np.ascontiguousarray(cv2.resize(g["synth"][t, s], (cell, cell), interpolation=cv2.INTER_AREA))
        out.append((_label(_face_crop(source_store.clip(key), f, sv, cell), f"source {clip_subject(key)}"),
                    _label(result, f"synth {s}")))
    return out


def synth_row(store: Store, g, t: int, cell: int, width: int) -> np.ndarray:
    """Frame t's expression synthesis: the driving face crop, then per synthesized image its source's
    face crop and the result, padded to `width`."""
    blank = np.zeros((cell, cell, 3), np.uint8)
    v = int(g["synth_view"][t])
    cells = [_label(_face_crop(g, t, v, cell), "driving") if v >= 0 else _label(blank.copy(), "no frontal view")]
    for source, result in synth_pairs(store, g, t, cell, {}):
        cells += [source, result]
    row = np.concatenate(cells, 1)[:, :width]
    return np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)))


def monocular_tile(store: Store, g, t: int, cell: int, mesh=None, stores: dict | None = None) -> np.ndarray:
    """One frame of a one-camera clip: the frame (matte, landmarks coloured by their backend, fitted
    landmarks in red, face box) and beside it a column of half-size cells: crop over non-face image,
    then per synthesized image its source over the result."""
    half = cell // 2
    blank = np.zeros((half, half, 3), np.uint8)
    frame_id = g.attrs.get("frame_ids", list(range(g["rgb"].shape[0])))[t]
    lmk = g["lmk2d"][t, 0] if "lmk2d" in g else None
    source = int(g["lmk_source"][t, 0]) if "lmk_source" in g else 1
    fitted = None
    if "fit" in g and "ok" in g["fit"]:
        projected, _ = fit_projections(g, t, mesh)
        fitted = None if projected is None else projected[0]
    frame = overlay(g["rgb"][t, 0], g["alpha"][t, 0] if "alpha" in g else None, lmk,
                    g["face_box"][t, 0] if "face_box" in g else None, cell, fitted,
                    colour=SOURCE_COLOURS.get(source, GREEN))
    if lmk is not None:
        names = dict(g["lmk_source"].attrs.get("codes", {})) if "lmk_source" in g else {}
        found = names.get(str(source), "") if lmk[:, 2].mean() > 0 else "no face"
        _label(frame, f"t{frame_id} {found}"[:40])
    else:
        _label(frame, f"t{frame_id}")
    columns = []
    if "face_crop" in g:
        ok = bool(g["crop_ok"][t, 0])
        crop = cv2.resize(g["face_crop"][t, 0], (half, half), interpolation=cv2.INTER_AREA) if ok else blank
        nonface = cv2.resize(non_face_image(g["rgb"][t, 0], g["face_mask"][t, 0]), (half, half),
                             interpolation=cv2.INTER_AREA)
        columns.append(np.concatenate([_label(np.ascontiguousarray(crop), "crop"),
                                       _label(np.ascontiguousarray(nonface), "non-face")], 0))
    if "synth" in g:
        for src, result in synth_pairs(store, g, t, half, stores if stores is not None else {}):
            columns.append(np.concatenate([src, result], 0))
    return np.concatenate([frame] + columns, 1)


def monocular_sheet(store: Store, clip: str, frames: int = 8, cell: int = 256, columns: int = 2) -> np.ndarray:
    """uint8 [H, W, 3] RGB sheet of a one-camera clip: `frames` evenly spaced frames in a grid."""
    g = store.clip(clip)
    T = g["rgb"].shape[0]
    mesh = fit_mesh(g) if "fit" in g and "ok" in g["fit"] else None
    stores: dict = {}
    tiles = [monocular_tile(store, g, t, cell, mesh, stores) for t in _pick(T, frames)]
    grid = labelled_grid([tiles[i:i + columns] for i in range(0, len(tiles), columns)], pad=4)
    header = np.full((40, grid.shape[1], 3), 30, np.uint8)
    cv2.putText(header, f"{store.url}  {clip}  ({T} frames, one camera)", (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                WHITE, 1, cv2.LINE_AA)
    x = 6
    for text, colour in (("mediapipe", GREEN), ("re-detected", CYAN), ("dlib", ORANGE), ("face-alignment", MAGENTA),
                         ("fitted", RED), ("face box", YELLOW)):
        cv2.putText(header, text, (x, 33), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
        x += 9 * len(text) + 16
    return np.concatenate([header, grid], 0)


def contact_sheet(store: Store, clip: str, frames: int | None = None, views: list[int] | int = 8,
                  cell: int | None = None) -> np.ndarray:
    """uint8 [H, W, 3] RGB sheet of one clip (frames and cell default to 4 and 192 for several views, 8
    and 256 for one camera)."""
    g = store.clip(clip)
    T, V = g["rgb"].shape[:2]
    if V == 1:
        return monocular_sheet(store, clip, frames or 8, cell or 256)
    frames, cell = frames or 4, cell or 192
    serials = g.attrs["views"]
    frame_ids = g.attrs.get("frame_ids", list(range(T)))
    vs = _pick(V, views) if isinstance(views, int) else [v for v in views if v < V]
    has = {name: name in g for name in ("alpha", "lmk2d", "face_box", "face_crop", "face_mask", "crop_ok")}
    has_fit = "fit" in g and "ok" in g["fit"]
    has_synth = "synth" in g
    mesh = fit_mesh(g) if has_fit else None
    rows = []
    for t in _pick(T, frames):
        rgb = g["rgb"][t]
        alpha = g["alpha"][t] if has["alpha"] else None
        lmk = g["lmk2d"][t] if has["lmk2d"] else None
        box = g["face_box"][t] if has["face_box"] else None
        fitted, edges = fit_projections(g, t, mesh) if has_fit else (None, None)
        top = [_label(overlay(rgb[v], None if alpha is None else alpha[v], None if lmk is None else lmk[v],
                              None if box is None else box[v], cell, None if fitted is None else fitted[v],
                              None if edges is None else edges[v]), f"t{frame_ids[t]} cam {serials[v]}")
               for v in vs]
        rows.append(np.concatenate(top, 1))
        if has["face_crop"]:
            crops, ok = g["face_crop"][t], g["crop_ok"][t]
            masks = g["face_mask"][t]
            half = cell // 2
            bottom = []
            for v in vs:
                crop = cv2.resize(crops[v], (half, half), interpolation=cv2.INTER_AREA) if ok[v] else \
                    np.zeros((half, half, 3), np.uint8)
                nonface = cv2.resize(non_face_image(rgb[v], masks[v]), (half, half), interpolation=cv2.INTER_AREA)
                bottom.append(np.concatenate([_label(np.ascontiguousarray(crop), "crop"),
                                              _label(np.ascontiguousarray(nonface), "non-face")], 1))
            rows.append(np.concatenate([np.pad(b, ((0, 0), (0, cell - b.shape[1]), (0, 0))) for b in bottom], 1))
        if has_synth:
            rows.append(synth_row(store, g, t, cell, rows[0].shape[1]))
    sheet = np.concatenate(rows, 0)
    header = np.full((24, sheet.shape[1], 3), 30, np.uint8)
    cv2.putText(header, f"{store.url}  {clip}  ({T} frames x {V} views)", (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                WHITE, 1, cv2.LINE_AA)
    return np.concatenate([header, sheet], 0)


def write_sheets(store: Store, out_dir: str, clip: str | None = None, frames: int | None = None,
                 views: list[int] | int = 8, cell: int | None = None) -> list[str]:
    """One PNG per clip (or the given clip) in out_dir; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for key in [clip] if clip else store.clips():
        sheet = contact_sheet(store, key, frames, views, cell)
        path = os.path.join(out_dir, key.replace("/", "__") + ".png")
        cv2.imwrite(path, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths
