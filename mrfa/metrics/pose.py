"""Head pose and expression from 68 iBUG landmarks (offline analogues of the paper's ARD and of expression scores).

* **Head pose**: a perspective-n-point fit of a generic rigid 3D face (15 rigid landmarks: the nose, the eye corners
  and the jaw ends near the ears; mean adult proportions in millimetres, our own rounded figures) to the 2D
  landmarks. Pinhole camera with focal length = the larger image side and the principal point at the image centre;
  initialised by a scaled-orthographic fit (closed form, SVD) and refined by Levenberg-Marquardt on the
  reprojection error. Angles in degrees, rotation ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` (camera axes: x right,
  y down, z forward): yaw turns the head left/right, pitch nods, roll tilts in the image plane.
* **Pose error** of a frame: absolute yaw / pitch / roll differences between output and driving, and their mean
  (``pose_error``, the form of the paper's ARD, "average rotation distance", which uses a learned pose estimator).
* **Expression error**: inner-face landmarks (brows, eyes, nose, mouth: 17-67) of the output aligned to the
  driving's by a 2D similarity (rotation, scale, translation: in-plane pose and face size removed), mean residual
  distance divided by the driving's inter-ocular distance. Out-of-plane rotation is not removed (the pose error
  reports it), and across identities the two faces' shapes differ, so it has a floor above 0 there.
* **Openness**: mouth (inner-lip gap 62-66 over mouth width 48-54) and eyes (eye aspect ratio, both eyes); the
  Pearson correlation of the output's and the driving's series over a video says whether the mouth and eyes move
  in step with the driving video (1 = in step, undefined for a constant series).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from mrfa.metrics.temporal import inter_ocular

# generic rigid face, millimetres; camera-aligned for a frontal face: x to the image right, y down, z away from the
# camera; origin at the nose tip (landmark 30)
GENERIC_FACE_3D: dict[int, tuple[float, float, float]] = {
    0: (-72.0, -25.0, 95.0), 16: (72.0, -25.0, 95.0),
    27: (0.0, -29.0, 19.0), 28: (0.0, -19.0, 13.0), 29: (0.0, -9.0, 7.0), 30: (0.0, 0.0, 0.0),
    31: (-14.0, 5.0, 20.0), 32: (-7.0, 8.0, 15.0), 33: (0.0, 9.0, 13.0), 34: (7.0, 8.0, 15.0), 35: (14.0, 5.0, 20.0),
    36: (-45.0, -29.0, 38.0), 39: (-15.0, -28.0, 29.0), 42: (15.0, -28.0, 29.0), 45: (45.0, -29.0, 38.0),
}
RIGID = np.array(sorted(GENERIC_FACE_3D))
MODEL = np.array([GENERIC_FACE_3D[i] for i in RIGID], dtype=np.float64)  # [15, 3]
INNER = slice(17, 68)


class HeadPose(NamedTuple):
    """Result of :func:`head_pose`: angles in degrees, rotation [3, 3], translation [3] (mm), RMS error (px)."""

    yaw: float
    pitch: float
    roll: float
    rotation: np.ndarray
    translation: np.ndarray
    rms_px: float


def rotation_from_euler(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """``Rz(roll) @ Ry(yaw) @ Rx(pitch)`` from degrees."""
    y, p, r = np.radians([yaw, pitch, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def euler_from_rotation(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of ``Rz(roll) @ Ry(yaw) @ Rx(pitch)``."""
    yaw = np.degrees(np.arcsin(np.clip(-rotation[2, 0], -1.0, 1.0)))
    pitch = np.degrees(np.arctan2(rotation[2, 1], rotation[2, 2]))
    roll = np.degrees(np.arctan2(rotation[1, 0], rotation[0, 0]))
    return float(yaw), float(pitch), float(roll)


def _rodrigues(v: np.ndarray) -> np.ndarray:
    theta = float(np.linalg.norm(v))
    if theta < 1e-12:
        return np.eye(3)
    k = v / theta
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * kx @ kx


def _rotation_vector(rotation: np.ndarray) -> np.ndarray:
    cos = np.clip((np.trace(rotation) - 1) / 2, -1.0, 1.0)
    theta = np.arccos(cos)
    if theta < 1e-9:
        return np.zeros(3)
    axis = np.array([rotation[2, 1] - rotation[1, 2], rotation[0, 2] - rotation[2, 0], rotation[1, 0] - rotation[0, 1]])
    if np.sin(theta) < 1e-6:  # near 180 degrees: axis from the symmetric part
        w, v = np.linalg.eigh((rotation + np.eye(3)) / 2)
        return v[:, np.argmax(w)] * theta
    return axis / (2 * np.sin(theta)) * theta


def project(points: np.ndarray, rotation: np.ndarray, translation: np.ndarray, focal: float,
            centre: tuple[float, float]) -> np.ndarray:
    """Pinhole projection of ``[N, 3]`` model points -> ``[N, 2]`` pixels."""
    cam = points @ rotation.T + translation
    return np.stack([focal * cam[:, 0] / cam[:, 2] + centre[0], focal * cam[:, 1] / cam[:, 2] + centre[1]], axis=1)


def _orthographic_init(uv: np.ndarray, focal: float, centre: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    x = MODEL - MODEL.mean(axis=0)
    u = uv - uv.mean(axis=0)
    affine, *_ = np.linalg.lstsq(x, u, rcond=None)  # [3, 2]: u ~ x @ affine
    a = affine.T  # [2, 3] = s * (first two rows of R)
    left, sing, right = np.linalg.svd(a, full_matrices=False)
    rows = left @ right  # nearest matrix with orthonormal rows
    scale = float(sing.mean())
    rotation = np.vstack([rows, np.cross(rows[0], rows[1])])
    depth = focal / max(scale, 1e-9)
    mean_uv = uv.mean(axis=0)
    centre_cam = np.array([(mean_uv[0] - centre[0]) * depth / focal, (mean_uv[1] - centre[1]) * depth / focal, depth])
    return rotation, centre_cam - rotation @ MODEL.mean(axis=0)


def head_pose(landmarks: np.ndarray, image_size: tuple[int, int], *, iterations: int = 30) -> HeadPose:
    """Fit the generic 3D face to ``[68, 2]`` landmarks of an image of ``(height, width)`` pixels."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"head_pose needs [68, 2] landmarks, got {lm.shape}")
    h, w = image_size
    focal, centre = float(max(h, w)), (w / 2.0, h / 2.0)
    uv = lm[RIGID]
    rotation, translation = _orthographic_init(uv, focal, centre)
    params = np.concatenate([_rotation_vector(rotation), translation])

    def residual(p: np.ndarray) -> np.ndarray:
        return (project(MODEL, _rodrigues(p[:3]), p[3:], focal, centre) - uv).ravel()

    damping, err = 1e-3, residual(params)
    for _ in range(iterations):
        jac = np.empty((err.size, 6))
        for k in range(6):
            step = 1e-6 if k < 3 else 1e-4 * max(1.0, abs(params[k]))
            d = np.zeros(6)
            d[k] = step
            jac[:, k] = (residual(params + d) - residual(params - d)) / (2 * step)
        jtj, jte = jac.T @ jac, jac.T @ err
        improved = False
        for _ in range(10):
            delta = np.linalg.solve(jtj + damping * np.diag(np.diag(jtj) + 1e-12), -jte)
            trial = residual(params + delta)
            if trial @ trial < err @ err:
                params, err, damping, improved = params + delta, trial, damping * 0.3, True
                break
            damping *= 10
        if not improved or np.abs(delta).max() < 1e-10:
            break
    rotation = _rodrigues(params[:3])
    yaw, pitch, roll = euler_from_rotation(rotation)
    rms = float(np.sqrt(np.mean(err.reshape(-1, 2) ** 2) * 2))
    return HeadPose(yaw, pitch, roll, rotation, params[3:].copy(), rms)


def pose_errors(a: HeadPose, b: HeadPose) -> dict[str, float]:
    """Absolute yaw / pitch / roll differences (degrees, wrapped to [0, 180]) and their mean ``pose_error``."""
    out = {}
    for name in ("yaw", "pitch", "roll"):
        d = abs(getattr(a, name) - getattr(b, name)) % 360.0
        out[f"{name}_error"] = float(min(d, 360.0 - d))
    out["pose_error"] = float(np.mean([out["yaw_error"], out["pitch_error"], out["roll_error"]]))
    return out


def similarity_align(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``points`` [N, 2] mapped by the 2D similarity (rotation, uniform scale, translation) that best fits ``target``
    in least squares (Umeyama; no reflection)."""
    p, q = np.asarray(points, np.float64), np.asarray(target, np.float64)
    mp, mq = p.mean(axis=0), q.mean(axis=0)
    pc, qc = p - mp, q - mq
    cov = qc.T @ pc / len(p)
    u, s, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ sign @ vt
    var = (pc ** 2).sum() / len(p)
    scale = float(np.trace(np.diag(s) @ sign) / var) if var > 0 else 1.0
    return (pc @ rot.T) * scale + mq


def expression_error(landmarks: np.ndarray, reference: np.ndarray) -> float:
    """Mean distance of the inner-face landmarks after similarity alignment, in inter-ocular distances of
    ``reference`` (both ``[68, 2]``)."""
    a, b = np.asarray(landmarks, np.float64)[INNER], np.asarray(reference, np.float64)[INNER]
    iod = inter_ocular(np.asarray(reference, np.float64))
    if iod <= 0:
        return float("nan")
    return float(np.linalg.norm(similarity_align(a, b) - b, axis=1).mean() / iod)


def mouth_openness(landmarks: np.ndarray) -> float:
    """Inner-lip gap (62-66) over mouth width (48-54)."""
    lm = np.asarray(landmarks, np.float64)
    width = np.linalg.norm(lm[54] - lm[48])
    return float(np.linalg.norm(lm[66] - lm[62]) / width) if width > 0 else float("nan")


def eye_openness(landmarks: np.ndarray) -> float:
    """Mean eye aspect ratio of both eyes: (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|)."""
    lm = np.asarray(landmarks, np.float64)
    ratios = []
    for p1, p2, p3, p4, p5, p6 in ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47)):
        width = np.linalg.norm(lm[p4] - lm[p1])
        if width > 0:
            ratios.append((np.linalg.norm(lm[p2] - lm[p6]) + np.linalg.norm(lm[p3] - lm[p5])) / (2 * width))
    return float(np.mean(ratios)) if ratios else float("nan")


def correlation(a: Sequence[float | None], b: Sequence[float | None]) -> float | None:
    """Pearson correlation over the frames where both values exist; None with fewer than 3 such frames or a
    constant series (undefined)."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None and np.isfinite(x) and np.isfinite(y)]
    if len(pairs) < 3:
        return None
    x, y = np.array(pairs, np.float64).T
    if x.std() < 1e-12 or y.std() < 1e-12:
        return None
    return float(np.corrcoef(x, y)[0, 1])
