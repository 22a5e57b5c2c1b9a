"""Training-pair augmentation of the official loader (paper Sec. 4 "Implementation details"; official
`augmentation.AllAugmentationTransform` with `flip_param` + `jitter_param`).

Same random parameters for every frame of the clip (source and driving):

1. with p 0.5 a time flip (the clip is reversed: source and driving swap); only if that did not happen, with
   p 0.5 a horizontal flip of every frame;
2. colour jitter: brightness, contrast and saturation factors drawn from U[max(0, 1 - v), 1 + v], a hue shift
   from U[-h, h], applied in a random order.

The jitter is a numpy re-implementation of the PIL path the official code takes (torchvision's
``adjust_brightness/contrast/saturation/hue`` on uint8 PIL images): blends are computed in float32 and truncated
towards zero like Pillow's ``ImagingBlend``, grey is Pillow's fixed-point ITU-R 601 luma, contrast blends with
the rounded mean luma, and hue goes through Pillow's 8-bit HSV (hue byte shifted with wrap-around). It is
bit-exact against Pillow 13 (brightness/contrast/saturation on test images; RGB<->HSV over all 2^24 values,
checked in tests/test_data.py on a sample). No PIL or torchvision needed. The only differences from the official
transform are the random generator (numpy instead of Python's ``random``; same distributions and draw order)
and that frames stay uint8 instead of the float -> ubyte -> float round trip (exact for 8-bit input).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from mrfa.config import AugmentationParams

# ----------------------------------------------------------------------------------------------------------
# Pillow-equivalent uint8 colour operations ([..., 3] uint8 in, same shape uint8 out)

def _blend(degenerate: np.ndarray, image: np.ndarray, factor: float) -> np.ndarray:
    """Pillow ImagingBlend: ``trunc(d + f * (i - d))`` in float32, clipped to [0, 255]."""
    d = degenerate.astype(np.float32)
    out = d + np.float32(factor) * (image.astype(np.float32) - d)
    return np.clip(np.trunc(out), 0, 255).astype(np.uint8)


def luma(image: np.ndarray) -> np.ndarray:
    """Pillow's RGB -> L: ``(19595 R + 38470 G + 7471 B + 32768) >> 16``. [..., 3] uint8 -> [...] uint8."""
    rgb = image.astype(np.uint32)
    return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


def adjust_brightness(image: np.ndarray, factor: float) -> np.ndarray:
    """Scale intensities by ``factor`` (blend with black)."""
    return _blend(np.zeros_like(image), image, factor)


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the image's mean luma (rounded to an integer, as Pillow's ImageEnhance.Contrast)."""
    mean = int(float(luma(image).mean()) + 0.5)
    return _blend(np.full_like(image, mean), image, factor)


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the grey (luma) version of the image."""
    grey = np.repeat(luma(image)[..., None], 3, axis=-1)
    return _blend(grey, image, factor)


def rgb_to_hsv_u8(image: np.ndarray) -> np.ndarray:
    """Pillow's 8-bit RGB -> HSV (hue and saturation truncated to bytes). [..., 3] uint8 -> [..., 3] uint8."""
    rgb = image.astype(np.int32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    maxc = rgb.max(axis=-1)
    minc = rgb.min(axis=-1)
    grey = maxc == minc
    cr = np.where(grey, 1, maxc - minc).astype(np.float32)
    s = cr / np.where(maxc == 0, 1, maxc).astype(np.float32)
    rc = (maxc - r).astype(np.float32) / cr
    gc = (maxc - g).astype(np.float32) / cr
    bc = (maxc - b).astype(np.float32) / cr
    rc64, gc64, bc64 = rc.astype(np.float64), gc.astype(np.float64), bc.astype(np.float64)  # C double promotion
    h = np.where(r == maxc, bc - gc, np.where(g == maxc, 2.0 + rc64 - bc64, 4.0 + gc64 - rc64).astype(np.float32))
    h = np.fmod(h.astype(np.float64) / 6.0 + 1.0, 1.0).astype(np.float32)
    uh = np.clip((h.astype(np.float64) * 255.0).astype(np.int32), 0, 255)
    us = np.clip((s.astype(np.float64) * 255.0).astype(np.int32), 0, 255)
    hsv = np.stack([np.where(grey, 0, uh), np.where(grey, 0, us), maxc], axis=-1)
    return hsv.astype(np.uint8)


def hsv_u8_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Pillow's 8-bit HSV -> RGB (sector from floor(6 h / 255), p/q/t rounded). [..., 3] uint8 -> uint8."""
    h = hsv[..., 0].astype(np.float32)
    s = hsv[..., 1]
    v = hsv[..., 2].astype(np.int32)
    hf = h.astype(np.float64) * 6.0 / 255.0
    i = np.floor(hf).astype(np.int32)
    f = (hf - i).astype(np.float32).astype(np.float64)
    fs = (s.astype(np.float32) / np.float32(255.0)).astype(np.float64)
    vf = v.astype(np.float64)
    p = np.clip(np.round(vf * (1.0 - fs)), 0, 255).astype(np.int32)
    q = np.clip(np.round(vf * (1.0 - fs * f)), 0, 255).astype(np.int32)
    t = np.clip(np.round(vf * (1.0 - fs * (1.0 - f))), 0, 255).astype(np.int32)
    sector = i % 6
    choices_r = [v, q, p, p, t, v]
    choices_g = [t, v, v, q, p, p]
    choices_b = [p, p, t, v, v, q]
    rgb = np.stack([np.choose(sector, choices_r), np.choose(sector, choices_g), np.choose(sector, choices_b)],
                   axis=-1)
    rgb = np.where((s == 0)[..., None], v[..., None], rgb)
    return rgb.astype(np.uint8)


def adjust_hue(image: np.ndarray, hue_factor: float) -> np.ndarray:
    """Shift the 8-bit hue by ``int(hue_factor * 255)`` with wrap-around (torchvision's PIL path)."""
    if not -0.5 <= hue_factor <= 0.5:
        raise ValueError(f"hue_factor must be in [-0.5, 0.5], got {hue_factor}")
    hsv = rgb_to_hsv_u8(image)
    shift = int(hue_factor * 255)  # truncation towards zero, then uint8 wrap
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + shift) % 256).astype(np.uint8)
    return hsv_u8_to_rgb(hsv)


# ----------------------------------------------------------------------------------------------------------
# the transform

@dataclass(frozen=True)
class JitterDraw:
    """Colour-jitter parameters drawn for one clip (None = that adjustment is off); ``order`` names the
    adjustments in the order they are applied."""

    brightness: Optional[float]
    contrast: Optional[float]
    saturation: Optional[float]
    hue: Optional[float]
    order: tuple[str, ...]


def draw_jitter(params: AugmentationParams, rng: np.random.Generator) -> JitterDraw:
    """Draw factors (brightness, contrast, saturation, hue, in that order) and a random application order."""
    def factor(v: float) -> Optional[float]:
        return float(rng.uniform(max(0.0, 1.0 - v), 1.0 + v)) if v > 0 else None

    b, c, s = factor(params.brightness), factor(params.contrast), factor(params.saturation)
    h = float(rng.uniform(-params.hue, params.hue)) if params.hue > 0 else None
    names = [n for n, v in (("brightness", b), ("saturation", s), ("hue", h), ("contrast", c)) if v is not None]
    order = tuple(names[i] for i in rng.permutation(len(names)))
    return JitterDraw(b, c, s, h, order)


def apply_jitter(image: np.ndarray, draw: JitterDraw) -> np.ndarray:
    """Apply a drawn jitter to one ``uint8 [H, W, 3]`` frame."""
    ops: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "brightness": lambda im: adjust_brightness(im, draw.brightness),
        "contrast": lambda im: adjust_contrast(im, draw.contrast),
        "saturation": lambda im: adjust_saturation(im, draw.saturation),
        "hue": lambda im: adjust_hue(im, draw.hue),
    }
    for name in draw.order:
        image = ops[name](image)
    return image


def augment_clip(frames: Sequence[np.ndarray], params: AugmentationParams,
                 rng: np.random.Generator) -> list[np.ndarray]:
    """Augment a clip (list of ``uint8 [H, W, 3]`` frames, e.g. [source, driving]) with shared parameters.

    Random draws, in order: time-flip coin; horizontal-flip coin only if no time flip; jitter factors; jitter
    order. A disabled flip still consumes its coin so that the stream does not depend on the switches.

    Returns:
        New list of ``uint8 [H, W, 3]`` frames (contiguous arrays).
    """
    for frame in frames:
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(f"augment_clip expects uint8 [H, W, 3] frames, got {frame.dtype} {frame.shape}")
    out = list(frames)
    time_flipped = rng.random() < 0.5 and params.time_flip
    if time_flipped:
        out = out[::-1]
    elif rng.random() < 0.5 and params.horizontal_flip:
        out = [f[:, ::-1] for f in out]
    draw = draw_jitter(params, rng)
    if draw.order:
        out = [apply_jitter(f, draw) for f in out]
    return [np.ascontiguousarray(f) for f in out]
