"""Correlation-pyramid lookup (spec 4.1): ``corr_lookup`` dispatches to an implementation.

* ``torch``: the pure-PyTorch reference (``reference.py``, grid_sample per level): the specification,
  the CPU path and the oracle.
* ``cuda``: the fused CUDA kernel behind the ``mrfa::corr_lookup`` custom op (``op.py``; compiled on first
  use by ``build.py``). Fails loudly (with the build error) when it cannot run.
* ``auto``: ``cuda`` when the tensors are on a GPU and the extension builds, otherwise the reference (a
  one-time notice says why). CPU tensors never trigger a compile.

The memory-light on-the-fly variant (no volume) is :func:`corr_lookup_onthefly`.
"""
from __future__ import annotations

import functools
import logging
import warnings
from typing import Literal

import torch
from torch import Tensor

from .build import ExtensionUnavailable, load_extension, unavailable_reason
from .onthefly import channels_last_keys, corr_lookup_onthefly
from .reference import corr_lookup_reference

Impl = Literal["auto", "cuda", "torch"]
IMPLS = ("auto", "cuda", "torch")
_log = logging.getLogger(__name__)


def corr_lookup(pyramid: list[Tensor], coords: Tensor, radius: int, impl: Impl = "auto") -> Tensor:
    """Bilinear (2r+1)^2 window lookup in every pyramid level.

    Args:
        pyramid: levels ``l`` = 0..L-1, each [B, h, w, H_l, W_l]: one source map per query pixel.
        coords: [B, 2, h, w] window centres in level-0 source pixel coordinates (x, y); level l uses
            ``coords / 2**l``.
        radius: window radius r (official: 3).
        impl: "auto", "cuda" or "torch" (see the module docstring).

    Returns:
        [B, L * (2r+1)^2, h, w]; channel ``l*(2r+1)^2 + a*(2r+1) + b`` samples offset
        (x + a - r, y + b - r): x is the outer offset, y the inner one (the RAFT meshgrid order,
        which the official weights depend on). Zero padding outside the map, align_corners=True.

    Raises:
        ValueError: unknown ``impl``, or ``impl="cuda"`` with tensors that are not on a GPU.
        ExtensionUnavailable: ``impl="cuda"`` and the extension cannot be built or loaded.
    """
    if impl == "torch":
        return corr_lookup_reference(pyramid, coords, radius)
    if impl == "cuda":
        if coords.device.type != "cuda":
            raise ValueError(f"corr_lookup impl 'cuda' needs CUDA tensors, got coords on {coords.device}")
        load_extension(coords.device)  # raises with the build error
        return _fused(pyramid, coords, radius)
    if impl == "auto":
        reason = kernel_unavailable_reason(coords.device.type, coords.device.index)
        if reason is None:
            return _fused(pyramid, coords, radius)
        _notice_fallback(reason, coords.device.type == "cuda")
        return corr_lookup_reference(pyramid, coords, radius)
    raise ValueError(f"unknown corr_lookup impl {impl!r}; expected one of {IMPLS}")


@functools.lru_cache(maxsize=None)
def kernel_unavailable_reason(device_type: str, index: int | None = None) -> str | None:
    """Why ``auto`` cannot use the CUDA kernel on this device (None: it can). Builds at most once."""
    device = torch.device(device_type, index)
    reason = unavailable_reason(device)
    if reason is not None:
        return reason
    try:
        load_extension(device)
    except ExtensionUnavailable as exc:
        return str(exc)
    return None


@functools.lru_cache(maxsize=None)
def _notice_fallback(reason: str, on_gpu: bool) -> None:
    """One notice per process and reason: a warning when a GPU run falls back, a log line otherwise."""
    message = f"corr_lookup impl 'auto': using the PyTorch reference ({reason})"
    if on_gpu:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    else:
        _log.info(message)


def _fused(pyramid: list[Tensor], coords: Tensor, radius: int) -> Tensor:
    from .op import corr_lookup_fused  # registers the custom ops on first use

    return corr_lookup_fused(pyramid, coords, radius)


__all__ = ["corr_lookup", "corr_lookup_reference", "corr_lookup_onthefly", "channels_last_keys",
           "kernel_unavailable_reason", "ExtensionUnavailable", "Impl", "IMPLS"]
