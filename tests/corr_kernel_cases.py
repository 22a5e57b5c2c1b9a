"""Shared cases for the lookup kernels (CUDA under emulation, Triton, the real CUDA build) vs the stencil.

Every kernel is compared with the exact window-stencil reference (``stencil.lookup_forward`` /
``lookup_backward``) evaluated in float64 on the same (already rounded) level values, not with grid_sample.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from mrfa.ops.corr_lookup.stencil import lookup_backward, lookup_forward

DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
# level-gradient tolerance (rtol, atol relative to the largest gradient): the kernels accumulate in the
# accumulation dtype and round once to the level dtype on store, so half / bfloat16 differ by ~1 ulp
LEVEL_GRAD_TOLS = {torch.float64: (1e-12, 1e-12), torch.float32: (1e-5, 1e-5), torch.float16: (2e-3, 2e-3),
                   torch.bfloat16: (1e-2, 1e-2)}


def acc_of(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def make_case(dtype: torch.dtype, radius: int, num_levels: int, *, b: int = 2, h: int = 12, w: int = 17,
              height: int = 13, width: int = 11, strided: bool = False, device: str = "cpu", seed: int = 0):
    """(levels [B, Q, H_l, W_l] in ``dtype``, coords [B, 2, h, w] float64) with the hard spots filled in.

    Levels halve (floor, at least 1) per level. Coordinates cover [-(r+3), size + r + 3) with fractional parts,
    plus: exact window edges, the last pixel, far out of range, NaN and +-inf. ``strided``: level 0 and the
    coordinates are non-contiguous views with the same values.
    """
    g = torch.Generator().manual_seed(seed)
    levels, hh, ww = [], height, width
    for _ in range(num_levels):
        levels.append(torch.randn(b, h * w, hh, ww, generator=g, dtype=torch.float64).to(device=device, dtype=dtype))
        hh, ww = max(hh // 2, 1), max(ww // 2, 1)
    margin = radius + 3.0
    span = torch.tensor([width, height], dtype=torch.float64).view(1, 2, 1, 1) + 2 * margin
    coords = torch.rand(b, 2, h, w, generator=g, dtype=torch.float64) * span - margin
    special = [(-radius - 1.0, 0.0), (-radius - 1.0 - 1e-6, 3.5), (width - 1.0, height - 1.0),
               (width + radius - 1e-6, 2.25), (1e7, -1e7), (float("nan"), 2.5), (float("inf"), 1.0),
               (3.5, float("-inf")), (0.0, 0.0)]
    flat = coords.view(b, 2, h * w)
    for k, (x, y) in enumerate(special[: h * w]):
        flat[0, :, k] = torch.tensor([x, y])
    coords = coords.to(device)
    if strided:
        levels[0] = levels[0].transpose(-1, -2).contiguous().transpose(-1, -2)
        coords = coords.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)
        assert not levels[0].is_contiguous() and not coords.is_contiguous()
    return levels, coords


Forward = Callable[[list, torch.Tensor, int], torch.Tensor]
Backward = Callable[[torch.Tensor, list, torch.Tensor, int], list]


def check_kernel(forward: Forward, backward: Backward, dtype: torch.dtype, radius: int, num_levels: int,
                 **case) -> None:
    """Run ``forward`` / ``backward`` (op contract of ``mrfa::corr_lookup``) on one case and compare with the
    float64 stencil: output, every level gradient and the coordinate gradient; everything finite and written."""
    levels, coords = make_case(dtype, radius, num_levels, **case)
    acc = acc_of(dtype)
    ref_levels = [lv.double() for lv in levels]
    out = forward(levels, coords.to(acc), radius)
    ref = lookup_forward(ref_levels, coords, radius)
    assert out.dtype == acc and out.shape == ref.shape, (out.dtype, out.shape, ref.shape)
    assert torch.isfinite(out).all(), "an output element was not written (or NaN coordinates leaked)"
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-12 if acc == torch.float64 else 1e-5)
    grad = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7)).to(out.device)
    got = backward(grad.to(acc), levels, coords.to(acc), radius)
    expected = lookup_backward(grad, ref_levels, coords, radius)
    assert len(got) == num_levels + 1
    rtol, atol = LEVEL_GRAD_TOLS[dtype]
    for k, (e, g, like) in enumerate(zip(expected, got, levels + [coords.to(acc)])):
        assert g.dtype == like.dtype and g.shape == like.shape and torch.isfinite(g).all(), k
        tol = (rtol, atol) if k < num_levels else ((0, 1e-11) if acc == torch.float64 else (1e-5, 1e-5))
        scale = max(1.0, float(e.abs().max()))
        torch.testing.assert_close(g.double(), e, rtol=tol[0], atol=tol[1] * scale, msg=lambda m, k=k: f"grad {k}: {m}")
    assert got[-1].abs().max() > 0 and got[0].abs().max() > 0
