"""Does driving carry the mouth? The mouth opening of each driving frame (from the driver's stored 2D
landmarks) against the opening re-detected on the rendered avatar, correlated over the clip (the check of
GPHMv2 section 3.5's cross-identity reenactment):

    opening = |inner lower lip - inner upper lip| / mouth width        iBUG-68 points 66, 62 and 54, 48
    report = mouth_agreement(driver_landmarks, renders, detector)     Pearson r over frames with a face

The ratio does not depend on the image scale or the face size, so driver and avatar compare directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

UPPER, LOWER, LEFT, RIGHT = 62, 66, 48, 54  # iBUG-68: inner lips (middle), mouth corners
DETECT_SIZE = 256  # renders are upscaled to this before re-detection (the tiny preset renders 128 px)


def mouth_opening(landmarks: np.ndarray, dims: int = 2) -> np.ndarray:
    """landmarks: [..., 68, dims+] iBUG-68 (2D with a confidence channel after, or 3D with dims=3) -> [...]
    inner-lip gap over mouth width (0 closed, ~0.5 wide open)."""
    lm = np.asarray(landmarks, np.float64)[..., :dims]
    gap = np.linalg.norm(lm[..., LOWER, :] - lm[..., UPPER, :], axis=-1)
    width = np.linalg.norm(lm[..., RIGHT, :] - lm[..., LEFT, :], axis=-1)
    return gap / np.maximum(width, 1e-9)


@dataclass
class MouthReport:
    driver: np.ndarray  # [T] driver openings
    avatar: np.ndarray  # [T] re-detected avatar openings, NaN where no face was found
    correlation: float  # Pearson r over the frames with a face on both sides (NaN when undefined)

    @property
    def detected(self) -> int:
        return int(np.isfinite(self.avatar).sum())

    def describe(self) -> str:
        if self.detected == 0:
            return f"mouth: no face re-detected on any of the {len(self.avatar)} rendered frame(s)"
        ok = np.isfinite(self.avatar) & np.isfinite(self.driver)
        return (f"mouth opening, driver {np.nanmin(self.driver[ok]):.2f}..{np.nanmax(self.driver[ok]):.2f}, "
                f"avatar {np.nanmin(self.avatar[ok]):.2f}..{np.nanmax(self.avatar[ok]):.2f} "
                f"(face re-detected on {self.detected}/{len(self.avatar)} renders): correlation "
                f"{self.correlation:.2f}")


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of a and b [T] over the entries finite in both; NaN with fewer than 3 or no variation."""
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) < 1e-9 or np.std(b[ok]) < 1e-9:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def redetected_openings(images: list[np.ndarray], detector) -> np.ndarray:
    """images: uint8 RGB [S, S, 3] each -> [T] openings of the face found in each, NaN where none is.
    detector: a per-image landmark detector returning `.landmarks68` (the caller's: mediapipe's without
    tracking, so one frame cannot carry over to the next; model/ does not import pipeline/)."""
    out = np.full(len(images), np.nan)
    for i, image in enumerate(images):
        if image.shape[0] < DETECT_SIZE:
            image = cv2.resize(image, (DETECT_SIZE, DETECT_SIZE), interpolation=cv2.INTER_CUBIC)
        found = detector(np.ascontiguousarray(image)).landmarks68
        if found is not None:
            out[i] = mouth_opening(found)
    return out


def mouth_agreement(driver_landmarks: np.ndarray, renders: list[np.ndarray], detector) -> MouthReport:
    """driver_landmarks: [T, 68, 2+] with NaN rows where the driver has none; renders: T avatar images."""
    if len(driver_landmarks) != len(renders):
        raise ValueError(f"{len(driver_landmarks)} driver frames but {len(renders)} renders")
    driver = mouth_opening(driver_landmarks)
    avatar = redetected_openings(renders, detector)
    return MouthReport(driver, avatar, correlation(driver, avatar))
