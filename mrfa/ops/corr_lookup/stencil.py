"""Window-stencil correlation lookup in PyTorch: the fused kernel's algorithm, op for op.

For a query with level coordinates (x, y) the lookup only ever reads the (2r+2)^2 integer positions
``floor(x) - r .. floor(x) + r + 1`` (same in y) of its own source map. Gathering that window once and
applying the 4-weight bilinear stencil gives all (2r+1)^2 taps; zero padding = zero window entries.
This module is the CPU (and device-agnostic) kernel of the ``mrfa::corr_lookup`` op, the oracle for the
CUDA kernel's math (explicit backward, incl. the coordinate gradient), and the shared back end of the
on-the-fly mode. Semantics equal :func:`corr_lookup_reference` (grid_sample, align_corners=True, zeros).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Footing(NamedTuple):
    """Where one level's window sits for every query ([B, Q] tensors unless noted)."""

    index: Tensor  # [B, Q, (2r+2)^2] flat offsets y*W + x into the level's map (clamped where invalid)
    valid: Tensor  # [B, Q, (2r+2)^2] True where the window position lies inside the map
    ax: Tensor  # [B, Q] fractional x (differentiable in the coordinates; 0 where inactive)
    ay: Tensor  # [B, Q]
    active: Tensor  # [B, Q] False: coordinate not finite or the whole window outside the map


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation / output dtype for a level dtype: float64 stays, fp32/fp16/bf16 -> float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def footing(x: Tensor, y: Tensor, height: int, width: int, radius: int) -> Footing:
    """Window placement at level coordinates ``x``, ``y`` [B, Q] on a ``height`` x ``width`` map."""
    k1 = 2 * radius + 2
    # the window (floor(x)-r .. floor(x)+r+1) touches the map iff -(r+1) <= x < W + r; NaN fails too
    active = (x >= -(radius + 1)) & (x < width + radius) & (y >= -(radius + 1)) & (y < height + radius)
    xs, ys = torch.where(active, x, 0.0), torch.where(active, y, 0.0)
    fx, fy = torch.floor(xs).detach(), torch.floor(ys).detach()
    ax, ay = xs - fx, ys - fy
    steps = torch.arange(k1, device=x.device)
    cols = fx.long()[..., None] - radius + steps  # [B, Q, k1]
    rows = fy.long()[..., None] - radius + steps
    ok_c, ok_r = (cols >= 0) & (cols < width), (rows >= 0) & (rows < height)
    valid = (ok_r[..., :, None] & ok_c[..., None, :] & active[..., None, None]).flatten(-2)
    index = (rows.clamp(0, height - 1)[..., :, None] * width + cols.clamp(0, width - 1)[..., None, :]).flatten(-2)
    return Footing(index, valid, ax, ay, active)


def stencil_taps(window: Tensor, ax: Tensor, ay: Tensor) -> Tensor:
    """Bilinear taps from integer windows (differentiable).

    Args:
        window: [B, Q, k1, k1] values at integer positions, [row j][column i], k1 = 2r+2.
        ax, ay: [B, Q] fractional parts of the level coordinates.

    Returns:
        [B, Q, (2r+1)^2] taps in the official x-outer / y-inner order (index u*(2r+1) + v).
    """
    ax, ay = ax[..., None, None], ay[..., None, None]
    taps = ((1 - ax) * (1 - ay) * window[..., :-1, :-1] + ax * (1 - ay) * window[..., :-1, 1:]
            + (1 - ax) * ay * window[..., 1:, :-1] + ax * ay * window[..., 1:, 1:])  # [B, Q, v, u]
    return taps.transpose(-1, -2).flatten(-2)


def stencil_backward(grad: Tensor, window: Tensor, ax: Tensor, ay: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Adjoint of :func:`stencil_taps` written out (the formulas of the CUDA backward).

    Args:
        grad: [B, Q, (2r+1)^2] gradient of the taps (x-outer order).
        window, ax, ay: as in :func:`stencil_taps`.

    Returns:
        (grad_window [B, Q, k1, k1], grad_ax [B, Q], grad_ay [B, Q]).
    """
    k = window.shape[-1] - 1
    g = grad.unflatten(-1, (k, k)).transpose(-1, -2)  # [B, Q, v, u]
    ax, ay = ax[..., None, None], ay[..., None, None]
    gw = window.new_zeros(window.shape)
    gw[..., :-1, :-1] += g * (1 - ax) * (1 - ay)
    gw[..., :-1, 1:] += g * ax * (1 - ay)
    gw[..., 1:, :-1] += g * (1 - ax) * ay
    gw[..., 1:, 1:] += g * ax * ay
    w00, w01, w10, w11 = window[..., :-1, :-1], window[..., :-1, 1:], window[..., 1:, :-1], window[..., 1:, 1:]
    gax = (g * ((1 - ay) * (w01 - w00) + ay * (w11 - w10))).sum((-1, -2))
    gay = (g * ((1 - ax) * (w10 - w00) + ax * (w11 - w01))).sum((-1, -2))
    return gw, gax, gay


def _check(levels: list[Tensor], coords: Tensor) -> tuple[int, int, int, int]:
    if not levels:
        raise ValueError("corr_lookup needs at least one pyramid level, got an empty list")
    b, q = levels[0].shape[:2]
    if coords.dim() != 4 or coords.shape[:2] != (b, 2) or coords.shape[2] * coords.shape[3] != q:
        raise ValueError(f"coords must be [B={b}, 2, h, w] with h*w = {q} queries, got {list(coords.shape)}")
    for i, lv in enumerate(levels):
        if lv.dim() != 4 or lv.shape[:2] != (b, q):
            raise ValueError(f"pyramid level {i} must be [B={b}, Q={q}, H, W], got {list(lv.shape)}")
    return b, q, coords.shape[2], coords.shape[3]


def _level_coords(coords: Tensor, level: int, b: int, q: int) -> tuple[Tensor, Tensor]:
    c = coords.reshape(b, 2, q) / 2 ** level  # [B, 2, Q] (power of two: exact)
    return c[:, 0], c[:, 1]


def _windows(levels: list[Tensor], coords: Tensor, radius: int):
    b, q, _, _ = _check(levels, coords)
    acc = acc_dtype(levels[0].dtype)
    k1 = 2 * radius + 2
    for level, lv in enumerate(levels):
        hl, wl = lv.shape[-2:]
        foot = footing(*_level_coords(coords.to(acc), level, b, q), hl, wl, radius)
        vals = lv.reshape(b, q, hl * wl).gather(2, foot.index).to(acc)  # [B, Q, k1*k1]
        window = torch.where(foot.valid, vals, 0.0).view(b, q, k1, k1)
        yield level, lv, foot, window


def lookup_forward(levels: list[Tensor], coords: Tensor, radius: int) -> Tensor:
    """Lookup (no autograd): ``levels`` [B, Q, H_l, W_l], ``coords`` [B, 2, h, w] -> [B, L*(2r+1)^2, h, w]."""
    b, q, h, w = _check(levels, coords)
    taps = [stencil_taps(window, foot.ax, foot.ay) for _, _, foot, window in _windows(levels, coords, radius)]
    return torch.cat(taps, dim=-1).permute(0, 2, 1).reshape(b, -1, h, w).contiguous()


def lookup_backward(grad: Tensor, levels: list[Tensor], coords: Tensor, radius: int) -> list[Tensor]:
    """Gradients of :func:`lookup_forward`: ``[grad level 0, ..., grad level L-1, grad coords]``.

    Owner-computes: each query writes only its own slice of each level gradient (no accumulation
    across queries), exactly like the CUDA backward.
    """
    b, q, h, w = _check(levels, coords)
    t = (2 * radius + 1) ** 2
    acc = acc_dtype(levels[0].dtype)
    g_all = grad.to(acc).reshape(b, len(levels) * t, q).transpose(1, 2)  # [B, Q, L*T]
    g_xy = coords.new_zeros((b, 2, q), dtype=acc)
    grads = []
    for level, lv, foot, window in _windows(levels, coords, radius):
        gw, gax, gay = stencil_backward(g_all[..., level * t:(level + 1) * t], window, foot.ax, foot.ay)
        gw = torch.where(foot.valid, gw.flatten(-2), 0.0)
        g_lv = gw.new_zeros((b, q, lv.shape[-2] * lv.shape[-1])).scatter_add_(2, foot.index, gw)
        grads.append(g_lv.view(lv.shape).to(lv.dtype))
        scale = 2.0 ** -level
        g_xy[:, 0] += torch.where(foot.active, gax, 0.0) * scale
        g_xy[:, 1] += torch.where(foot.active, gay, 0.0) * scale
    grads.append(g_xy.view(b, 2, h, w).to(coords.dtype))
    return grads
