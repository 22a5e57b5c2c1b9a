"""Image pyramid of the multi-scale perceptual loss (paper Sec. 3.4; FOMM's ``ImagePyramide``).

Each level is FOMM's anti-aliased downsampling (Gaussian blur, then nearest subsampling) of the full
image; scale 1 is the image itself. The Gaussian kernels are computed, not loaded; they equal the
official ``pyramid.downs.{1,0-5,0-25,0-125}.weight`` buffers (the scale-1 one is a 1x1 NaN there,
never used, and ours is the same).
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from mrfa.ops.grid import AntiAliasInterpolation2d

DEFAULT_SCALES = (1.0, 0.5, 0.25, 0.125)


def scale_key(scale: float) -> str:
    """Official module key of a scale: ``1 -> '1'``, ``0.5 -> '0-5'`` (``str(scale)`` with '.' -> '-')."""
    value = float(scale)
    text = str(int(value)) if value.is_integer() else repr(value)
    return text.replace(".", "-")


class ImagePyramid(nn.Module):
    """Anti-aliased image pyramid.

    Args:
        scales: downsampling factors in (0, 1], e.g. ``(1, 0.5, 0.25, 0.125)``; each 1/scale must
            be an integer.
        channels: image channels.

    Forward: ``x`` [B, C, H, W] -> list with one [B, C, H*s, W*s] tensor per scale, in ``scales`` order.
    """

    def __init__(self, scales: Sequence[float] = DEFAULT_SCALES, channels: int = 3) -> None:
        super().__init__()
        for s in scales:
            if not 0.0 < float(s) <= 1.0 or abs(1.0 / float(s) - round(1.0 / float(s))) > 1e-9:
                raise ValueError(f"pyramid scale {s} must be 1/n for a positive integer n.")
        self.scales = tuple(float(s) for s in scales)
        self.downs = nn.ModuleDict({scale_key(s): AntiAliasInterpolation2d(channels, s) for s in self.scales})

    def forward(self, x: Tensor) -> list[Tensor]:
        return [self.downs[scale_key(s)](x) for s in self.scales]
