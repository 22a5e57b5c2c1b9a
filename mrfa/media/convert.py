"""Pixel conversions: the one place where decoded images become ``uint8 [H, W, 3]`` RGB and where model images
(float in [0, 1]) become uint8 again.

The rounding rule, used everywhere in mrfa:

* float -> uint8: ``rint(clip(x, 0, 1) * 255)`` computed in the input's precision (float32 for model outputs),
  rint = round half to even (numpy ``rint`` and ``torch.round`` agree). ``rounding="truncate"`` gives the
  official ``(255 * x).astype(uint8)`` instead, for reproducing the official PNG files.
* wider integers (16-bit PNG / TIFF) -> uint8: ``round(v / 257)`` in exact integer arithmetic, i.e.
  ``(v * 255 + 32767) // 65535`` (values above 65535 saturate).
* bool -> 0 / 255.
* grey is replicated to three channels; an alpha channel is dropped (not composited, as the official loader).
"""
from __future__ import annotations

from typing import Literal

import numpy as np

Rounding = Literal["round", "truncate"]


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Convert a decoded image to contiguous ``uint8 [H, W, 3]`` (rules in the module docstring).

    Args:
        array: ``[H, W]``, ``[H, W, 1]`` (grey), ``[H, W, 2]`` (grey + alpha), ``[H, W, 3]`` or ``[H, W, 4]``;
            dtype bool, uint8, a wider integer, or float in [0, 1].

    Raises:
        ValueError: another shape.
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"expected an image of shape [H, W] or [H, W, 1-4], got {list(array.shape)}")
    if array.shape[-1] in (2, 4):
        array = array[..., :-1]  # drop alpha
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        array = float_to_uint8(array)
    elif array.dtype != np.uint8:
        wide = np.clip(array.astype(np.int64), 0, 65535)
        array = ((wide * 255 + 32767) // 65535).astype(np.uint8)  # round(v / 257)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array)


def float_to_uint8(x: np.ndarray, rounding: Rounding = "round") -> np.ndarray:
    """float array in [0, 1] (any shape) -> uint8 of the same shape (module rule; NaN becomes 0)."""
    x = np.asarray(x)
    scaled = np.clip(np.nan_to_num(x, nan=0.0), 0.0, 1.0) * 255.0
    if rounding == "round":
        return np.rint(scaled).astype(np.uint8)
    if rounding == "truncate":
        return np.floor(scaled).astype(np.uint8)
    raise ValueError(f"rounding must be 'round' or 'truncate', got {rounding!r}")


def tensor_to_uint8(images) -> np.ndarray:
    """float tensor ``[B, 3, H, W]`` or ``[3, H, W]`` in [0, 1] -> ``uint8 [B, H, W, 3]`` / ``[H, W, 3]`` on the CPU
    (module rule, computed in float32 on the tensor's device)."""
    x = images.detach().float().nan_to_num(0.0).clamp(0, 1).mul(255).round().byte()
    x = x.permute(0, 2, 3, 1) if x.dim() == 4 else x.permute(1, 2, 0)
    return x.cpu().numpy()
