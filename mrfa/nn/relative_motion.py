"""Relative motion transfer for reenactment (the official ``normalize_kp``)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..ops.grid import inverse_2x2
from ..types import Keypoints


def convex_hull_area(points: np.ndarray) -> float:
    """Area of the convex hull of [N, 2] points (Andrew's monotone chain; 0 for degenerate sets)."""
    pts = sorted(map(tuple, np.asarray(points, dtype=np.float64)))
    if len(pts) < 3:
        return 0.0

    def cross(o, a, b) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    upper: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = np.array(lower[:-1] + upper[:-1])
    x, y = hull[:, 0], hull[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def movement_scale(kp_source: Keypoints, kp_driving_initial: Keypoints, per_sample: bool = False) -> torch.Tensor:
    """sqrt(hull area of source kp) / sqrt(hull area of initial driving kp).

    Official behaviour (``per_sample=False``): one scale from batch element 0, applied to the whole batch.
    Returns a [B, 1, 1] (or [1, 1, 1]) float64 tensor on the keypoints' device.
    """
    src = kp_source.value.detach().double().cpu().numpy()
    drv = kp_driving_initial.value.detach().double().cpu().numpy()
    idx = range(src.shape[0]) if per_sample else [0]
    scale = [np.sqrt(convex_hull_area(src[i])) / np.sqrt(convex_hull_area(drv[i])) for i in idx]
    return torch.tensor(scale, dtype=torch.float64, device=kp_source.value.device).view(-1, 1, 1)


def normalize_kp(kp_source: Keypoints, kp_driving: Keypoints, kp_driving_initial: Keypoints, *,
                 relative: bool = True, adapt_scale: bool = False, relative_jacobian: bool = True,
                 per_sample_scale: bool = False, scale: Optional[torch.Tensor] = None) -> Keypoints:
    """Transfer the driving motion relative to the initial driving frame onto the source keypoints.

    ``kp = (kp_d - kp_d0) * scale + kp_s`` and ``J = (J_d @ inv(J_d0)) @ J_s`` (when jacobians exist and
    ``relative_jacobian``). With ``relative=False`` the absolute driving keypoints are returned. ``scale`` is a
    precomputed :func:`movement_scale` (a per-video constant); None computes it here when ``adapt_scale``.
    """
    if not relative:
        return kp_driving
    diff = kp_driving.value - kp_driving_initial.value  # [B, K, 2]
    if adapt_scale:
        if scale is None:
            scale = movement_scale(kp_source, kp_driving_initial, per_sample_scale)
        diff = diff * scale.to(diff.dtype)
    value = diff + kp_source.value
    jacobian = kp_driving.jacobian
    if relative_jacobian and kp_driving.jacobian is not None:
        jac_diff = torch.matmul(kp_driving.jacobian, inverse_2x2(kp_driving_initial.jacobian))
        jacobian = torch.matmul(jac_diff, kp_source.jacobian)
    return Keypoints(value=value, jacobian=jacobian)
