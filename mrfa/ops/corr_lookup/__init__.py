"""Correlation-pyramid lookup: ``corr_lookup`` dispatches to an implementation.

* ``torch``: the pure-PyTorch reference (``reference.py``, grid_sample per level): the specification,
  the CPU path and the oracle.
* ``cuda``: the fused CUDA kernel behind the ``mrfa::corr_lookup`` custom op (``op.py``; compiled on first
  use by ``build.py``). Fails loudly (with the build error) when it cannot run.
* ``triton``: the same algorithm as a Triton kernel (``triton_kernel.py`` behind ``mrfa::corr_lookup_triton``):
  needs no CUDA toolkit, ships with every CUDA PyTorch wheel. CUDA tensors, or CPU tensors under
  ``TRITON_INTERPRET=1`` (Triton's interpreter, how CI checks it).
* ``auto``: on a GPU, ``cuda`` when the extension is built or builds, else ``triton`` when Triton imports, else
  the reference; one notice per process says which and why. CPU tensors always take the reference: nothing
  is compiled and Triton is never imported.

The memory-light on-the-fly variant (no volume) is :func:`corr_lookup_onthefly`.
"""
from __future__ import annotations

import functools
import logging
import os
import warnings
from typing import Literal

import torch
from torch import Tensor

from .build import ExtensionUnavailable, load_extension, unavailable_reason
from .onthefly import channels_last_keys, corr_lookup_onthefly
from .reference import corr_lookup_reference

Impl = Literal["auto", "cuda", "triton", "torch"]
IMPLS = ("auto", "cuda", "triton", "torch")
_log = logging.getLogger(__name__)


def corr_lookup(pyramid: list[Tensor], coords: Tensor, radius: int, impl: Impl = "auto") -> Tensor:
    """Bilinear (2r+1)^2 window lookup in every pyramid level.

    Args:
        pyramid: levels ``l`` = 0..L-1, each [B, h, w, H_l, W_l]: one source map per query pixel.
        coords: [B, 2, h, w] window centres in level-0 source pixel coordinates (x, y); level l uses
            ``coords / 2**l``.
        radius: window radius r (official: 3).
        impl: "auto", "cuda", "triton" or "torch" (see the module docstring).

    Returns:
        [B, L * (2r+1)^2, h, w]; channel ``l*(2r+1)^2 + a*(2r+1) + b`` samples offset
        (x + a - r, y + b - r): x is the outer offset, y the inner one (the RAFT meshgrid order,
        which the official weights depend on). Zero padding outside the map, align_corners=True.

    Raises:
        ValueError: unknown ``impl``; ``impl="cuda"`` with tensors that are not on a GPU; ``impl="triton"``
            with CPU tensors outside the Triton interpreter.
        ExtensionUnavailable: ``impl="cuda"`` and the extension cannot be built or loaded; ``impl="triton"``
            and Triton cannot be imported.
    """
    if impl == "torch":
        return corr_lookup_reference(pyramid, coords, radius)
    if impl == "cuda":
        if coords.device.type != "cuda":
            raise ValueError(f"corr_lookup impl 'cuda' needs CUDA tensors, got coords on {coords.device}")
        load_extension(coords.device)  # raises with the build error
        return _fused(pyramid, coords, radius)
    if impl == "triton":
        if coords.device.type != "cuda" and not _interpreting():
            raise ValueError(f"corr_lookup impl 'triton' needs CUDA tensors, got coords on {coords.device} "
                             "(set TRITON_INTERPRET=1 to run the kernel in Triton's CPU interpreter)")
        reason = triton_unavailable_reason()
        if reason is not None:
            raise ExtensionUnavailable(f"mrfa corr_lookup Triton kernel unavailable: {reason}")
        return _triton(pyramid, coords, radius)
    if impl == "auto":
        if coords.device.type != "cuda":  # never compile, never import Triton for CPU tensors
            _notice_choice("torch", f"tensors are on {coords.device.type}", on_gpu=False)
            return corr_lookup_reference(pyramid, coords, radius)
        choice, reason = auto_choice(coords.device.index)
        _notice_choice(choice, reason, on_gpu=True)
        if choice == "cuda":
            return _fused(pyramid, coords, radius)
        if choice == "triton":
            return _triton(pyramid, coords, radius)
        return corr_lookup_reference(pyramid, coords, radius)
    raise ValueError(f"unknown corr_lookup impl {impl!r}; expected one of {IMPLS}")


def auto_choice(index: int | None = None) -> tuple[str, str]:
    """(implementation, why) that ``auto`` uses for CUDA tensors on GPU ``index``: cuda, triton or torch."""
    cuda_reason = kernel_unavailable_reason("cuda", index)
    if cuda_reason is None:
        return "cuda", "the CUDA extension is built"
    triton_reason = triton_unavailable_reason()
    if triton_reason is None:
        return "triton", f"CUDA extension unavailable: {cuda_reason.splitlines()[0]}"
    return "torch", f"CUDA extension unavailable: {cuda_reason.splitlines()[0]}; Triton: {triton_reason}"


@functools.lru_cache(maxsize=None)
def triton_unavailable_reason() -> str | None:
    """Why the Triton kernel cannot be used (None: it can). Imports Triton, once."""
    try:
        from . import triton_op  # noqa: F401  (registers mrfa::corr_lookup_triton)
    except ImportError as exc:
        return f"triton is not importable ({exc}); it comes with CUDA builds of PyTorch"
    return None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


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
def _notice_choice(choice: str, reason: str, on_gpu: bool) -> None:
    """One notice per process: a warning when a GPU run falls back to the reference, else a log line."""
    names = {"cuda": "the CUDA extension", "triton": "the Triton kernel", "torch": "the PyTorch reference"}
    message = f"corr_lookup impl 'auto': using {names[choice]} ({reason})"
    if on_gpu and choice == "torch":
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    else:
        _log.info(message)


def _fused(pyramid: list[Tensor], coords: Tensor, radius: int) -> Tensor:
    from .op import corr_lookup_fused  # registers the custom ops on first use

    return corr_lookup_fused(pyramid, coords, radius)


def _triton(pyramid: list[Tensor], coords: Tensor, radius: int) -> Tensor:
    from .triton_op import corr_lookup_triton  # imports Triton

    return corr_lookup_triton(pyramid, coords, radius)


__all__ = ["corr_lookup", "corr_lookup_reference", "corr_lookup_onthefly", "channels_last_keys",
           "kernel_unavailable_reason", "triton_unavailable_reason", "auto_choice", "ExtensionUnavailable", "Impl",
           "IMPLS"]
