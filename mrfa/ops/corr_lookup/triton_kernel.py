"""Triton kernels of the fused correlation lookup: the CUDA kernel's algorithm, no toolkit.

Same contract as ``mrfa::corr_lookup`` (see :mod:`.op`): levels l [B, Q, H_l, W_l] (float64/32/16, bfloat16),
coords [B, 2, h, w] with h*w = Q in the accumulation dtype (float64 for float64 levels, else float32),
radius 0..4, 1..4 levels -> [B, L*(2r+1)^2, h, w]; bilinear, align_corners=True, zero padding, x-outer /
y-inner tap order. One program handles ``BLOCK`` queries; each query reads only its own (2r+2)^2 window, so
the backward is owner-computes: every query writes its own slice of the level gradients with plain stores
(no atomics, deterministic) and returns the coordinate gradient too. Accumulation in float32 (float64 for
float64 levels), in the same order as the CUDA kernel.

Runs on a GPU, or on the CPU under ``TRITON_INTERPRET=1`` (Triton's interpreter; how CI checks this kernel).
This module imports ``triton`` at import time: the dispatcher (:mod:`mrfa.ops.corr_lookup`) imports it only
when the Triton implementation is chosen.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .stencil import acc_dtype

BLOCK = 128  # queries per program
MAX_LEVELS = 4


@triton.jit
def _window_value(ptr, base, x0, y0, i: tl.constexpr, j: tl.constexpr, H, W, live, ACC: tl.constexpr):
    """slice[y0 + j][x0 + i] of every query's own map (0 outside the map or for inactive queries)."""
    xx = x0 + i
    yy = y0 + j
    ok = live & (xx >= 0) & (xx < W) & (yy >= 0) & (yy < H)
    return tl.load(ptr + base + yy * W + xx, mask=ok, other=0.0).to(ACC)


@triton.jit
def _tap_window(ptr, base, x0, y0, u: tl.constexpr, v: tl.constexpr, H, W, live, ACC: tl.constexpr):
    """The 4 window values of tap (u, v): (x0+u, y0+v), (x0+u+1, y0+v), (x0+u, y0+v+1), (x0+u+1, y0+v+1)."""
    left0 = _window_value(ptr, base, x0, y0, u, v, H, W, live, ACC)
    right0 = _window_value(ptr, base, x0, y0, u + 1, v, H, W, live, ACC)
    left1 = _window_value(ptr, base, x0, y0, u, v + 1, H, W, live, ACC)
    right1 = _window_value(ptr, base, x0, y0, u + 1, v + 1, H, W, live, ACC)
    return left0, right0, left1, right1


@triton.jit
def _footing(cx, cy, scale, H, W, b, q, Q, mask, R: tl.constexpr):
    """Window placement of every query at level coordinates (cx, cy) * scale: (x0, y0) of window entry [0][0],
    fractions (ax, ay) and their complements (bx, by), ``live`` (in the batch, finite and touching the map; NaN
    fails) and the query's slice offset ``base`` in the level."""
    x = cx * scale
    y = cy * scale
    active = (x >= -(R + 1)) & (x < W + R) & (y >= -(R + 1)) & (y < H + R)
    xs = tl.where(active, x, 0.0)
    ys = tl.where(active, y, 0.0)
    fx = tl.floor(xs)
    fy = tl.floor(ys)
    ax = xs - fx
    ay = ys - fy
    return (fx.to(tl.int64) - R, fy.to(tl.int64) - R, ax, ay, 1.0 - ax, 1.0 - ay, mask & active,
            (b * Q + q) * H * W)


@triton.jit
def _level_forward(ptr, H, W, cx, cy, scale, b, q, Q, mask, out_ptr, level: tl.constexpr,
                   NUM_LEVELS: tl.constexpr, R: tl.constexpr):
    K: tl.constexpr = 2 * R + 1
    ACC: tl.constexpr = cx.dtype
    x0, y0, ax, ay, bx, by, live, base = _footing(cx, cy, scale, H, W, b, q, Q, mask, R)
    w00 = bx * by
    w01 = ax * by
    w10 = bx * ay
    w11 = ax * ay
    out = out_ptr + (b * (NUM_LEVELS * K * K) + level * K * K) * Q + q
    for u in tl.static_range(K):
        for v in tl.static_range(K):
            left0, right0, left1, right1 = _tap_window(ptr, base, x0, y0, u, v, H, W, live, ACC)
            tap = w00 * left0 + w01 * right0 + w10 * left1 + w11 * right1
            tl.store(out + (u * K + v) * Q, tap, mask=mask)


@triton.jit
def _queries(coords_ptr, total, Q, BLOCK_Q: tl.constexpr):
    """This program's queries: (in-range mask, batch index, query index, x, y) of the [B, 2, Q] coordinates."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    mask = offs < total
    b = offs // Q
    q = offs - b * Q
    cx = tl.load(coords_ptr + (b * 2) * Q + q, mask=mask, other=0.0)
    cy = tl.load(coords_ptr + (b * 2 + 1) * Q + q, mask=mask, other=0.0)
    return mask, b, q, cx, cy


@triton.jit
def _forward_kernel(coords_ptr, out_ptr, L0, L1, L2, L3, H0, W0, H1, W1, H2, W2, H3, W3, total, Q,
                    NUM_LEVELS: tl.constexpr, R: tl.constexpr, BLOCK_Q: tl.constexpr):
    mask, b, q, cx, cy = _queries(coords_ptr, total, Q, BLOCK_Q)
    _level_forward(L0, H0, W0, cx, cy, 1.0, b, q, Q, mask, out_ptr, 0, NUM_LEVELS, R)
    if NUM_LEVELS > 1:
        _level_forward(L1, H1, W1, cx, cy, 0.5, b, q, Q, mask, out_ptr, 1, NUM_LEVELS, R)
    if NUM_LEVELS > 2:
        _level_forward(L2, H2, W2, cx, cy, 0.25, b, q, Q, mask, out_ptr, 2, NUM_LEVELS, R)
    if NUM_LEVELS > 3:
        _level_forward(L3, H3, W3, cx, cy, 0.125, b, q, Q, mask, out_ptr, 3, NUM_LEVELS, R)


@triton.jit
def _level_backward(ptr, gptr, H, W, cx, cy, scale, b, q, Q, mask, gout_ptr, level: tl.constexpr,
                    NUM_LEVELS: tl.constexpr, R: tl.constexpr):
    """This level's slice of the level gradient (stored) and its coordinate gradient (returned, scaled)."""
    K: tl.constexpr = 2 * R + 1
    ACC: tl.constexpr = cx.dtype
    x0, y0, ax, ay, bx, by, live, base = _footing(cx, cy, scale, H, W, b, q, Q, mask, R)
    g = gout_ptr + (b * (NUM_LEVELS * K * K) + level * K * K) * Q + q
    gax = tl.zeros_like(ax)
    gay = tl.zeros_like(ay)
    for u in tl.static_range(K):  # coordinate gradient, tap by tap
        for v in tl.static_range(K):
            gv = tl.load(g + (u * K + v) * Q, mask=live, other=0.0).to(ACC)
            left0, right0, left1, right1 = _tap_window(ptr, base, x0, y0, u, v, H, W, live, ACC)
            gax += gv * (by * (right0 - left0) + ay * (right1 - left1))
            gay += gv * (bx * (left1 - left0) + ax * (right1 - right0))
    for i in tl.static_range(K + 1):  # window position (column i, row j) collects its (up to) 4 taps
        for j in tl.static_range(K + 1):
            acc = tl.zeros_like(ax)
            if i > 0:
                if j > 0:
                    acc += tl.load(g + ((i - 1) * K + j - 1) * Q, mask=live, other=0.0).to(ACC) * ax * ay
                if j < K:
                    acc += tl.load(g + ((i - 1) * K + j) * Q, mask=live, other=0.0).to(ACC) * ax * by
            if i < K:
                if j > 0:
                    acc += tl.load(g + (i * K + j - 1) * Q, mask=live, other=0.0).to(ACC) * bx * ay
                if j < K:
                    acc += tl.load(g + (i * K + j) * Q, mask=live, other=0.0).to(ACC) * bx * by
            xx = x0 + i
            yy = y0 + j
            ok = live & (xx >= 0) & (xx < W) & (yy >= 0) & (yy < H)
            tl.store(gptr + base + yy * W + xx, acc.to(gptr.dtype.element_ty), mask=ok)
    return gax * scale, gay * scale


@triton.jit
def _backward_kernel(coords_ptr, gout_ptr, gcoords_ptr, L0, L1, L2, L3, G0, G1, G2, G3,
                     H0, W0, H1, W1, H2, W2, H3, W3, total, Q,
                     NUM_LEVELS: tl.constexpr, R: tl.constexpr, BLOCK_Q: tl.constexpr):
    mask, b, q, cx, cy = _queries(coords_ptr, total, Q, BLOCK_Q)
    gx, gy = _level_backward(L0, G0, H0, W0, cx, cy, 1.0, b, q, Q, mask, gout_ptr, 0, NUM_LEVELS, R)
    if NUM_LEVELS > 1:
        dx, dy = _level_backward(L1, G1, H1, W1, cx, cy, 0.5, b, q, Q, mask, gout_ptr, 1, NUM_LEVELS, R)
        gx += dx
        gy += dy
    if NUM_LEVELS > 2:
        dx, dy = _level_backward(L2, G2, H2, W2, cx, cy, 0.25, b, q, Q, mask, gout_ptr, 2, NUM_LEVELS, R)
        gx += dx
        gy += dy
    if NUM_LEVELS > 3:
        dx, dy = _level_backward(L3, G3, H3, W3, cx, cy, 0.125, b, q, Q, mask, gout_ptr, 3, NUM_LEVELS, R)
        gx += dx
        gy += dy
    tl.store(gcoords_ptr + (b * 2) * Q + q, gx, mask=mask)
    tl.store(gcoords_ptr + (b * 2 + 1) * Q + q, gy, mask=mask)


def _padded(tensors: list[Tensor]) -> list[Tensor]:
    return tensors + [tensors[0]] * (MAX_LEVELS - len(tensors))  # unused slots: never read


def _sizes(levels: list[Tensor]) -> list[int]:
    sizes: list[int] = []
    for lv in _padded(levels):
        sizes += [lv.shape[-2], lv.shape[-1]]
    return sizes


def forward(levels: list[Tensor], coords: Tensor, radius: int, block: int = BLOCK) -> Tensor:
    """Lookup: levels [B, Q, H_l, W_l] (validated by the caller), coords [B, 2, h, w] (accumulation dtype).

    ``block`` (queries per program, a power of two) only changes the launch shape, not the result.
    """
    levels = [lv.contiguous() for lv in levels]
    coords = coords.contiguous()
    b, q = levels[0].shape[:2]
    out = coords.new_empty((b, len(levels) * (2 * radius + 1) ** 2, *coords.shape[2:]))
    total = b * q
    if total:
        _forward_kernel[(triton.cdiv(total, block),)](
            coords, out, *_padded(levels), *_sizes(levels), total, q,
            NUM_LEVELS=len(levels), R=radius, BLOCK_Q=block)
    return out


def backward(grad: Tensor, levels: list[Tensor], coords: Tensor, radius: int, block: int = BLOCK) -> list[Tensor]:
    """[grad level 0, ..., grad level L-1, grad coords] of :func:`forward`."""
    levels = [lv.contiguous() for lv in levels]
    coords = coords.contiguous()
    grad = grad.to(acc_dtype(levels[0].dtype)).contiguous()
    b, q = levels[0].shape[:2]
    grads = [torch.zeros_like(lv) for lv in levels]  # owner-computes: in-map window positions are stored
    grad_coords = torch.empty_like(coords)
    total = b * q
    if total:
        _backward_kernel[(triton.cdiv(total, block),)](
            coords, grad, grad_coords, *_padded(levels), *_padded(grads), *_sizes(levels), total, q,
            NUM_LEVELS=len(levels), R=radius, BLOCK_Q=block)
    return grads + [grad_coords]
