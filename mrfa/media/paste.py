"""Paste an animated face crop back into the original frame with a feathered mask.

Not a paper box: inference post-processing (MRFA animates 256x256 VoxCeleb-style crops; users want
the result in their full-size portrait or video, as LivePortrait's ``--flag_pasteback`` does).
The crop is resized back to its :class:`~mrfa.media.crop.CropBox` and blended with a mask that
is 1 in the centre and falls smoothly to 0 at the crop border, so the seam is invisible when the
animated border differs slightly from the original. Pixels outside the box are never touched.
"""
from __future__ import annotations

import numpy as np

from .convert import to_rgb_uint8
from .crop import CropBox


def feather_mask(size: int, feather: float = 0.1) -> np.ndarray:
    """Soft-edged square mask.

    Along each axis the weight rises from 0 at the outermost pixel to 1 at ``feather * size`` pixels
    from the edge with a smoothstep; the 2D mask is the product of the two axes (round corners).

    Args:
        size: side in pixels.
        feather: ramp width as a fraction of the side, in [0, 0.5]; 0 gives a hard (all-ones) mask.

    Returns:
        ``[size, size]`` float32 in [0, 1].
    """
    if size < 1:
        raise ValueError(f"mask size must be positive, got {size}.")
    if not 0.0 <= feather <= 0.5:
        raise ValueError(f"feather must be in [0, 0.5], got {feather}.")
    ramp_px = feather * size
    if ramp_px <= 0.0:
        return np.ones((size, size), dtype=np.float32)
    idx = np.arange(size, dtype=np.float64)
    dist = np.minimum(idx, size - 1 - idx)  # [size], 0 at both borders
    t = np.clip(dist / ramp_px, 0.0, 1.0)
    ramp = t * t * (3.0 - 2.0 * t)  # smoothstep
    return np.outer(ramp, ramp).astype(np.float32)  # [size, size]


def paste_back(original_frame: np.ndarray, animated_crop: np.ndarray, box: CropBox, *,
               feather: float = 0.1) -> np.ndarray:
    """Resize an (animated) crop back to its box and blend it into the original frame.

    Works the same for an image and for each frame of a video (with one box for the clip). The part
    of the box outside the frame (padding added by ``apply_crop``) is discarded.

    Args:
        original_frame: ``[H, W, 3]`` RGB (uint8 or float in [0, 1]).
        animated_crop: ``[S, S, 3]`` RGB (uint8 or float in [0, 1]), e.g. the model output at 256x256.
        box: the crop box the crop was cut from.
        feather: ramp width of the blending mask as a fraction of the box side (see
            :func:`feather_mask`); 0 pastes the whole box with a hard edge.

    Returns:
        ``[H, W, 3]`` uint8; identical to the original outside the box.
    """
    from skimage.transform import resize

    orig = to_rgb_uint8(original_frame)  # [H, W, 3]
    crop = to_rgb_uint8(animated_crop)  # [S, S, 3]
    if crop.shape[0] != crop.shape[1]:
        raise ValueError(f"animated crop must be square, got shape {crop.shape}.")
    h, w = orig.shape[:2]
    ix0, iy0 = max(box.x0, 0), max(box.y0, 0)
    ix1, iy1 = min(box.x1, w), min(box.y1, h)
    out = orig.copy()
    if ix0 >= ix1 or iy0 >= iy1:
        raise ValueError(f"crop box {box} does not overlap the {w}x{h} frame.")
    if crop.shape[0] == box.side:
        big = crop.astype(np.float32)
    else:
        big = resize(crop, (box.side, box.side), order=1, anti_aliasing=crop.shape[0] > box.side,
                     preserve_range=True).astype(np.float32)  # [side, side, 3]
    mask = feather_mask(box.side, feather)[:, :, None]  # [side, side, 1]
    sy, sx = slice(iy0 - box.y0, iy1 - box.y0), slice(ix0 - box.x0, ix1 - box.x0)
    region = orig[iy0:iy1, ix0:ix1].astype(np.float32)
    blended = mask[sy, sx] * big[sy, sx] + (1.0 - mask[sy, sx]) * region
    out[iy0:iy1, ix0:ix1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out
