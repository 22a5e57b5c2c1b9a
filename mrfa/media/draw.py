"""Drawing for visualisations: keypoints, flow colour and occlusion tiles, with one pixel convention.

Pixel convention: normalised coordinates in [-1, 1] map to pixel centres with the model's own grid
(``make_coordinate_grid``: ``linspace(-1, 1, W)``), so ``x = -1`` is the centre of column 0 and ``x = 1`` the centre
of column ``W - 1``: ``px = (x + 1) * (W - 1) / 2``. Every drawing function takes and returns ``uint8 [H, W, 3]``.
"""
from __future__ import annotations

import colorsys
from typing import Optional

import numpy as np
from skimage.color import hsv2rgb
from skimage.draw import disk
from skimage.transform import resize

from .convert import float_to_uint8


def keypoint_colors(num: int) -> np.ndarray:
    """``[num, 3]`` uint8 colours spread around the hue circle (the official ``gist_rainbow`` idea)."""
    return np.array([[int(255 * c) for c in colorsys.hsv_to_rgb(0.85 * i / max(num - 1, 1), 1.0, 1.0)]
                     for i in range(num)], dtype=np.uint8).reshape(num, 3)


def to_pixels(kp: np.ndarray, height: int, width: int) -> np.ndarray:
    """Normalised ``[K, 2]`` (x, y) in [-1, 1] -> pixel ``[K, 2]`` (x, y) (module convention)."""
    kp = np.asarray(kp, dtype=np.float64)
    return np.stack([(kp[:, 0] + 1) * (width - 1) / 2, (kp[:, 1] + 1) * (height - 1) / 2], axis=-1)


def draw_keypoints(image: np.ndarray, kp: Optional[np.ndarray], radius: Optional[float] = None) -> np.ndarray:
    """Draw keypoints ``kp`` ``[K, 2]`` (normalised (x, y)) as filled discs on a copy of ``uint8 [H, W, 3]``.

    ``radius`` defaults to ``max(1.5, W / 64)`` pixels; ``kp=None`` returns an unchanged copy.
    """
    out = image.copy()
    if kp is None:
        return out
    h, w = out.shape[:2]
    radius = radius if radius is not None else max(1.5, w / 64)
    for (px, py), colour in zip(to_pixels(kp, h, w), keypoint_colors(len(kp))):
        rr, cc = disk((py, px), radius, shape=(h, w))
        out[rr, cc] = colour
    return out


def flow_to_color(flow: np.ndarray, max_magnitude: Optional[float] = None) -> np.ndarray:
    """Pixel flow ``[2, h, w]`` (x, y) -> ``uint8 [h, w, 3]`` colour wheel (white = zero, full colour = max)."""
    u, v = flow[0].astype(np.float64), flow[1].astype(np.float64)
    mag = np.hypot(u, v)
    scale = max_magnitude if max_magnitude else max(float(mag.max()), 1e-6)
    hue = (np.arctan2(-v, -u) / np.pi + 1.0) / 2.0  # [0, 1]
    sat = np.clip(mag / scale, 0.0, 1.0)
    hsv = np.stack([hue, sat, np.ones_like(hue)], axis=-1)
    return float_to_uint8(hsv2rgb(hsv))


def gray_tile(values: np.ndarray, size: int) -> np.ndarray:
    """``[h, w]`` values in [0, 1] (an occlusion map) -> ``uint8 [size, size, 3]`` (nearest upsampling keeps
    the map's cells visible)."""
    tile = resize(np.clip(values, 0.0, 1.0), (size, size), order=0, anti_aliasing=False)
    return np.repeat(float_to_uint8(tile)[..., None], 3, axis=-1)


def color_tile(image: np.ndarray, size: int) -> np.ndarray:
    """``uint8 [h, w, 3]`` -> ``uint8 [size, size, 3]`` (nearest)."""
    if image.shape[0] == size:
        return image
    return resize(image, (size, size), order=0, anti_aliasing=False, preserve_range=True).astype(np.uint8)
