"""``torch.library`` registration of the Triton lookup: ``mrfa::corr_lookup_triton`` and its backward.

Same contract as ``mrfa::corr_lookup`` (:mod:`.op`); the kernels are in :mod:`.triton_kernel`. Importing this
module imports Triton; :func:`mrfa.ops.corr_lookup.corr_lookup` does so only for ``impl="triton"`` (or
``auto`` on a GPU without the CUDA extension). CPU tensors run only under ``TRITON_INTERPRET=1``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import triton_kernel
from .op import register_lookup_op, validate
from .stencil import acc_dtype


@torch.library.custom_op("mrfa::corr_lookup_triton", mutates_args=())
def corr_lookup_triton_op(levels: list[Tensor], coords: Tensor, radius: int) -> Tensor:
    """Fused lookup by the Triton kernel (levels [B, Q, H_l, W_l], coords [B, 2, h, w])."""
    validate(levels, coords, radius)
    return triton_kernel.forward(levels, coords, radius)


@torch.library.custom_op("mrfa::corr_lookup_triton_backward", mutates_args=())
def corr_lookup_triton_backward_op(grad: Tensor, levels: list[Tensor], coords: Tensor,
                                   radius: int) -> list[Tensor]:
    """[grad level 0, ..., grad level L-1, grad coords] by the Triton backward kernel (owner computes)."""
    return triton_kernel.backward(grad, levels, coords, radius)


register_lookup_op(corr_lookup_triton_op, corr_lookup_triton_backward_op)


def corr_lookup_triton(pyramid: list[Tensor], coords: Tensor, radius: int) -> Tensor:
    """Call ``mrfa::corr_lookup_triton`` on a pyramid in the model's layout (see ``op.corr_lookup_fused``)."""
    b, _, h, w = coords.shape
    levels = [lv.reshape(b, h * w, *lv.shape[-2:]) for lv in pyramid]
    return corr_lookup_triton_op(levels, coords.to(acc_dtype(levels[0].dtype)), radius)
