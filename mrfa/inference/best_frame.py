"""Best-frame search (FOMM's ``--find_best_frame``, broken in the official MRFA demo): the driving frame whose 68
face landmarks, centred and divided by the square root of their convex-hull area, are closest to the source's.

FOMM then animates backwards and forwards from that frame; since every output frame depends only on its own
driving frame and the reference frame, that equals one pass in temporal order with the reference frame as
``driving_initial``, which is what :class:`mrfa.inference.animate.Animator` does.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Optional

import numpy as np

from mrfa.media.face import FaceDetector, NoFaceError
from mrfa.nn.relative_motion import convex_hull_area


def normalized_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """Centre ``[N, 2]`` landmarks and divide them by sqrt(convex-hull area) (FOMM's best-frame normalisation)."""
    pts = np.asarray(landmarks, dtype=np.float64)[:, :2]
    pts = pts - pts.mean(axis=0, keepdims=True)
    area = convex_hull_area(pts)
    return pts / np.sqrt(area) if area > 0 else pts


def find_best_frame(source: np.ndarray, frames: Iterable[np.ndarray], detector: FaceDetector) -> int:
    """Index of the driving frame whose normalised landmarks are closest (sum of squared differences) to the
    source's. Frames without a detected face are skipped.

    Args:
        source: ``uint8 [H, W, 3]`` source image, prepared like the driving frames (same crop convention).
        frames: ``uint8 [H, W, 3]`` driving frames (streamed).
        detector: a face backend of :mod:`mrfa.media.face` (its detections must carry landmarks).

    Raises:
        NoFaceError: no face (or no landmarks) in the source, or in every driving frame.
    """
    def landmarks(img: np.ndarray) -> Optional[np.ndarray]:
        dets = detector.detect(img)
        return normalized_landmarks(dets[0].landmarks) if dets and dets[0].landmarks is not None else None

    ref = landmarks(source)
    if ref is None:
        raise NoFaceError("no face landmarks were found in the source image for the best-frame search; "
                          "pass a driving frame index with --best-frame N instead")
    best, best_dist = -1, np.inf
    for i, frame in enumerate(frames):
        lm = landmarks(frame)
        if lm is not None and lm.shape == ref.shape:
            dist = float(((lm - ref) ** 2).sum())
            if dist < best_dist:
                best, best_dist = i, dist
    if best < 0:
        raise NoFaceError("no face landmarks were found in any driving frame for the best-frame search; "
                          "pass a driving frame index with --best-frame N instead")
    return best
