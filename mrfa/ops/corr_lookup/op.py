"""``torch.library`` registration of the fused correlation lookup (works with torch.compile).

``mrfa::corr_lookup(levels, coords, radius)`` and its backward ``mrfa::corr_lookup_backward`` are custom
ops: the CUDA kernels come from the extension (:mod:`.build`, compiled on the first CUDA call), every other
device runs the PyTorch window-stencil implementation (:mod:`.stencil`, the same algorithm), fake kernels
give shapes to FakeTensor / torch.compile, and ``register_autograd`` connects the two. Importing this
module registers the ops; it never compiles anything.

Op contract: levels l [B, Q, H_l, W_l] (one dtype: float32/float64/float16/bfloat16), coords [B, 2, h, w]
with h*w = Q in the accumulation dtype (float64 for float64 levels, else float32), radius 0..4 ->
[B, L*(2r+1)^2, h, w] in the accumulation dtype.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .build import load_extension
from .stencil import acc_dtype, lookup_backward, lookup_forward

MAX_LEVELS = 4
MAX_RADIUS = 4


def validate(levels: list[Tensor], coords: Tensor, radius: int) -> None:
    if not 1 <= len(levels) <= MAX_LEVELS:
        raise ValueError(f"mrfa::corr_lookup takes 1 to {MAX_LEVELS} pyramid levels, got {len(levels)}")
    if not 0 <= radius <= MAX_RADIUS:
        raise ValueError(f"mrfa::corr_lookup radius must be in 0..{MAX_RADIUS}, got {radius}")
    want = acc_dtype(levels[0].dtype)
    if coords.dtype != want:
        raise ValueError(f"mrfa::corr_lookup coords must be {want} for {levels[0].dtype} levels, got {coords.dtype}")
    if any(lv.dtype != levels[0].dtype for lv in levels):
        raise ValueError(f"mrfa::corr_lookup levels must share one dtype, got {[lv.dtype for lv in levels]}")


@torch.library.custom_op("mrfa::corr_lookup", mutates_args=())
def corr_lookup_op(levels: list[Tensor], coords: Tensor, radius: int) -> Tensor:
    """Fused lookup; this body is the non-CUDA kernel (see the module docstring for the contract)."""
    validate(levels, coords, radius)
    return lookup_forward(levels, coords, radius)


@corr_lookup_op.register_kernel("cuda")
def _corr_lookup_cuda(levels: list[Tensor], coords: Tensor, radius: int) -> Tensor:
    validate(levels, coords, radius)
    return load_extension(coords.device).forward(levels, coords, radius)


@torch.library.custom_op("mrfa::corr_lookup_backward", mutates_args=())
def corr_lookup_backward_op(grad: Tensor, levels: list[Tensor], coords: Tensor, radius: int) -> list[Tensor]:
    """[grad level 0, ..., grad level L-1, grad coords] of ``mrfa::corr_lookup`` (non-CUDA kernel)."""
    return lookup_backward(grad, levels, coords, radius)


@corr_lookup_backward_op.register_kernel("cuda")
def _corr_lookup_backward_cuda(grad: Tensor, levels: list[Tensor], coords: Tensor, radius: int) -> list[Tensor]:
    return load_extension(coords.device).backward(grad, levels, coords, radius)


def register_lookup_op(forward_op, backward_op) -> None:
    """Fake kernels (shapes for FakeTensor / torch.compile) and autograd for a (forward, backward) custom-op pair
    with the ``mrfa::corr_lookup`` contract; shared by this op and the Triton one (:mod:`.triton_op`)."""

    def fake_forward(levels: list[Tensor], coords: Tensor, radius: int) -> Tensor:
        validate(levels, coords, radius)
        b, _, h, w = coords.shape
        return coords.new_empty((b, len(levels) * (2 * radius + 1) ** 2, h, w))

    def fake_backward(grad: Tensor, levels: list[Tensor], coords: Tensor, radius: int) -> list[Tensor]:
        return [lv.new_empty(lv.shape) for lv in levels] + [coords.new_empty(coords.shape)]  # contiguous

    def setup_context(ctx, inputs, output) -> None:
        levels, coords, radius = inputs
        ctx.save_for_backward(*levels, coords)
        ctx.radius = radius

    def backward(ctx, grad: Tensor):
        *levels, coords = ctx.saved_tensors
        grads = backward_op(grad, list(levels), coords, ctx.radius)
        return list(grads[:-1]), grads[-1], None

    forward_op.register_fake(fake_forward)
    backward_op.register_fake(fake_backward)
    forward_op.register_autograd(backward, setup_context=setup_context)


register_lookup_op(corr_lookup_op, corr_lookup_backward_op)


def corr_lookup_fused(pyramid: list[Tensor], coords: Tensor, radius: int) -> Tensor:
    """Call ``mrfa::corr_lookup`` on a pyramid in the model's layout.

    Args:
        pyramid: level l [B, h, w, H_l, W_l] (or already [B, Q, H_l, W_l]).
        coords: [B, 2, h, w] level-0 source pixel coordinates (any float dtype; cast to the accumulation dtype).
        radius: window radius r.

    Returns:
        [B, L*(2r+1)^2, h, w] (float32; float64 for float64 levels).
    """
    b, _, h, w = coords.shape
    levels = [lv.reshape(b, h * w, *lv.shape[-2:]) for lv in pyramid]
    return corr_lookup_op(levels, coords.to(acc_dtype(levels[0].dtype)), radius)
