"""Temporal stability metrics: landmark jitter and flicker (evaluation of animation over time).

* **landmark jitter**: for every three consecutive frames with a face, the second temporal difference of the 68
  landmarks ``a_t = l_{t+1} - 2 l_t + l_{t-1}`` (pixels), normalised by the inter-ocular distance of frame t
  (centres of landmarks 36-41 and 42-47). ``jitter`` is the mean Euclidean magnitude of ``a_t`` over landmarks and
  frames; ``jitter_sigma`` is the per-coordinate standard deviation of white landmark noise that would produce the
  same mean square, ``sqrt(mean |a_t|^2 / 12)`` (white noise of std s per coordinate gives E|a|^2 = 12 s^2), so a
  noise of known amplitude is read back directly. Real motion also has a second difference, so report the same
  figure for the driving video beside the output's.
* **flicker**: mean absolute frame-to-frame change of the pixels (in [0, 1]) inside a region (the face box), for
  frames t and t-1 both present.

Frames without a face are counted (``frames_without_face``) and break the runs of consecutive frames; they are
never silently dropped from the count.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

LEFT_EYE, RIGHT_EYE = slice(36, 42), slice(42, 48)


def inter_ocular(landmarks: np.ndarray) -> float:
    """Distance between the eye centres of ``[68, 2]`` landmarks (pixels)."""
    return float(np.linalg.norm(landmarks[LEFT_EYE].mean(axis=0) - landmarks[RIGHT_EYE].mean(axis=0)))


def landmark_jitter(tracks: Sequence[Optional[np.ndarray]]) -> dict[str, float]:
    """Jitter of a landmark track.

    Args:
        tracks: per frame ``[68, 2]`` landmarks (x, y pixels), or None where no face was found.

    Returns:
        ``{"jitter", "jitter_sigma", "triples", "frames", "frames_without_face"}``; the two figures are NaN when no
        three consecutive frames have a face.
    """
    missing = sum(1 for lm in tracks if lm is None)
    mags, squares = [], []
    for t in range(1, len(tracks) - 1):
        prev, cur, nxt = tracks[t - 1], tracks[t], tracks[t + 1]
        if prev is None or cur is None or nxt is None:
            continue
        iod = inter_ocular(np.asarray(cur, np.float64))
        if iod <= 0:
            continue
        a = (np.asarray(nxt, np.float64) - 2 * np.asarray(cur, np.float64) + np.asarray(prev, np.float64)) / iod
        mags.append(np.linalg.norm(a, axis=-1).mean())
        squares.append((a ** 2).sum(axis=-1).mean())
    nan = float("nan")
    return {"jitter": float(np.mean(mags)) if mags else nan,
            "jitter_sigma": float(np.sqrt(np.mean(squares) / 12.0)) if squares else nan,
            "triples": float(len(mags)), "frames": float(len(tracks)), "frames_without_face": float(missing)}


def flicker(frames: np.ndarray, boxes: Optional[Sequence[Optional[Sequence[float]]]] = None) -> dict[str, float]:
    """Mean absolute frame-to-frame change in [0, 1] of ``uint8 [T, H, W, 3]`` frames.

    Args:
        frames: the video.
        boxes: optional per-frame region ``(x0, y0, x1, y1)`` (the face box); the union of the boxes of t-1 and t is
            compared. None compares whole frames; a None entry skips that pair (no face) and is counted.

    Returns:
        ``{"flicker", "pairs", "pairs_without_face"}``.
    """
    x = np.asarray(frames, np.float32) / 255.0
    values, skipped = [], 0
    h, w = x.shape[1:3]
    for t in range(1, len(x)):
        if boxes is None:
            region = (slice(None), slice(None))
        else:
            a, b = boxes[t - 1], boxes[t]
            if a is None or b is None:
                skipped += 1
                continue
            x0, y0 = int(max(0, min(a[0], b[0]))), int(max(0, min(a[1], b[1])))
            x1, y1 = int(min(w, max(a[2], b[2]))), int(min(h, max(a[3], b[3])))
            if x1 <= x0 or y1 <= y0:
                skipped += 1
                continue
            region = (slice(y0, y1), slice(x0, x1))
        values.append(float(np.abs(x[t][region] - x[t - 1][region]).mean()))
    return {"flicker": float(np.mean(values)) if values else float("nan"), "pairs": float(len(values)),
            "pairs_without_face": float(skipped)}
