"""Correlation-pyramid lookup: ``corr_lookup`` dispatches to an implementation.

The pure-PyTorch reference (``reference.py``) is the specification and the CPU path.
"""
from __future__ import annotations

from typing import Literal

from torch import Tensor

from .reference import corr_lookup_reference

Impl = Literal["auto", "torch"]


def corr_lookup(pyramid: list[Tensor], coords: Tensor, radius: int, impl: Impl = "auto") -> Tensor:
    """Bilinear (2r+1)^2 window lookup in every pyramid level.

    Args:
        pyramid: levels ``l`` = 0..L-1, each [B, h, w, H_l, W_l]: one source map per query pixel.
        coords: [B, 2, h, w] window centres in level-0 source pixel coordinates (x, y); level l uses
            ``coords / 2**l``.
        radius: window radius r (official: 3).
        impl: "auto" or "torch" (the reference). A CUDA kernel plugs in here.

    Returns:
        [B, L * (2r+1)^2, h, w]; channel ``l*(2r+1)^2 + a*(2r+1) + b`` samples offset
        (x + a - r, y + b - r): x is the outer offset, y the inner one (the RAFT meshgrid order,
        which the official weights depend on). Zero padding outside the map, align_corners=True.
    """
    if impl not in ("auto", "torch"):
        raise ValueError(f"unknown corr_lookup impl {impl!r}; expected 'auto' or 'torch'")
    return corr_lookup_reference(pyramid, coords, radius)


__all__ = ["corr_lookup", "corr_lookup_reference"]
