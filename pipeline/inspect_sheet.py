"""Contact sheets of a store: for a few frames, a row of views with the matte overlaid and the
landmarks drawn, and under it the face crops and non-face images, so a person can check a clip at a
glance. Products a clip does not have yet are left out."""

from __future__ import annotations

import os

import cv2
import numpy as np

from datasets.store import Store
from pipeline.crops import non_face_image

GREEN, YELLOW, WHITE = (60, 220, 60), (250, 210, 40), (255, 255, 255)


def _pick(n: int, k: int) -> list[int]:
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, min(n, k))})


def _label(img: np.ndarray, text: str) -> np.ndarray:
    cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, WHITE, 1, cv2.LINE_AA)
    return img


def overlay(rgb: np.ndarray, alpha: np.ndarray | None, lmk: np.ndarray | None, box: np.ndarray | None,
            cell: int) -> np.ndarray:
    """One view: background dimmed and tinted by the matte, 68 landmarks and the face box drawn."""
    img = rgb.astype(np.float32)
    if alpha is not None:
        a = alpha.astype(np.float32)[..., None] / 255.0
        img = img * a + (0.35 * img + 0.65 * np.array([40, 60, 140])) * (1 - a)
    img = np.clip(img, 0, 255).astype(np.uint8)
    s = cell / rgb.shape[1]
    img = np.ascontiguousarray(cv2.resize(img, (cell, cell), interpolation=cv2.INTER_AREA))
    if box is not None and box[4] > 0:
        cv2.rectangle(img, (int(box[0] * s), int(box[1] * s)), (int(box[2] * s), int(box[3] * s)), YELLOW, 1)
    if lmk is not None and lmk[:, 2].mean() > 0:
        for x, y in lmk[:, :2] * s:
            cv2.circle(img, (int(round(x)), int(round(y))), 1, GREEN, -1, cv2.LINE_AA)
    return img


def contact_sheet(store: Store, clip: str, frames: int = 4, views: list[int] | int = 8, cell: int = 192) -> np.ndarray:
    """uint8 [H, W, 3] RGB sheet of one clip."""
    g = store.clip(clip)
    T, V = g["rgb"].shape[:2]
    serials = g.attrs["views"]
    frame_ids = g.attrs.get("frame_ids", list(range(T)))
    vs = _pick(V, views) if isinstance(views, int) else [v for v in views if v < V]
    has = {name: name in g for name in ("alpha", "lmk2d", "face_box", "face_crop", "face_mask", "crop_ok")}
    rows = []
    for t in _pick(T, frames):
        rgb = g["rgb"][t]
        alpha = g["alpha"][t] if has["alpha"] else None
        lmk = g["lmk2d"][t] if has["lmk2d"] else None
        box = g["face_box"][t] if has["face_box"] else None
        top = [_label(overlay(rgb[v], None if alpha is None else alpha[v], None if lmk is None else lmk[v],
                              None if box is None else box[v], cell), f"t{frame_ids[t]} cam {serials[v]}")
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
    sheet = np.concatenate(rows, 0)
    header = np.full((24, sheet.shape[1], 3), 30, np.uint8)
    cv2.putText(header, f"{store.url}  {clip}  ({T} frames x {V} views)", (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                WHITE, 1, cv2.LINE_AA)
    return np.concatenate([header, sheet], 0)


def write_sheets(store: Store, out_dir: str, clip: str | None = None, frames: int = 4,
                 views: list[int] | int = 8, cell: int = 192) -> list[str]:
    """One PNG per clip (or the given clip) in out_dir; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for key in [clip] if clip else store.clips():
        sheet = contact_sheet(store, key, frames, views, cell)
        path = os.path.join(out_dir, key.replace("/", "__") + ".png")
        cv2.imwrite(path, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths
