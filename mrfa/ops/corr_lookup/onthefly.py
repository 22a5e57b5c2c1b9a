"""Memory-light correlation lookup: correlations computed on the fly from features (our option; the official code materialises the volume).

Same outputs as building the 4D volume and looking it up (:func:`corr_lookup_reference`), without ever
materialising a volume: for every query and level only the (2r+2)^2 integer window positions around its
coordinates are correlated (dot products of the query feature with the pooled source features there),
then the bilinear stencil of :mod:`.stencil` gives the (2r+1)^2 taps. Pooled keys are exact by
linearity (level l of the volume's source maps = correlation with avg-pooled keys), zero padding =
zero window entries. Saved for backward: the features, the window indices and the small windows
[B, Q, (2r+2)^2]; per-chunk gathers are recomputed in backward.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..correlation import channels_last_keys
from .stencil import acc_dtype, footing, stencil_taps

CHUNK_ELEMENTS = {"cpu": 1 << 22, "cuda": 1 << 25}  # gathered key values per chunk (16 / 128 MiB in float32)
__all__ = ["channels_last_keys", "corr_lookup_onthefly"]


class _WindowCorrelation(torch.autograd.Function):
    """win[b, q, p] = <query[b, q], key[b, index[b, q, p]]> where valid, else 0 (chunked over queries)."""

    @staticmethod
    def forward(ctx, query: Tensor, key: Tensor, index: Tensor, valid: Tensor, chunk: int) -> Tensor:
        # query [B, Q, C]; key [B, N, C]; index, valid [B, Q, P]
        b, q, c = query.shape
        flat_key, flat_index = _flatten(key, index)  # [B*N, C], [B, Q, P] offsets into flat_key
        out = query.new_empty((b, q, index.shape[-1]))
        for s in range(0, q, chunk):
            gathered = flat_key.index_select(0, flat_index[:, s:s + chunk].reshape(-1))  # [B*n*P, C]
            rows = gathered.view(b, -1, index.shape[-1], c)  # [B, n, P, C]
            out[:, s:s + chunk] = rows.matmul(query[:, s:s + chunk, :, None]).squeeze(-1)
        out.masked_fill_(~valid, 0.0)
        ctx.save_for_backward(query, key, index, valid)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        query, key, index, valid = ctx.saved_tensors
        need_q, need_k = ctx.needs_input_grad[:2]
        grad = grad.masked_fill(~valid, 0.0)  # [B, Q, P]
        b, q, c = query.shape
        p = index.shape[-1]
        flat_key, flat_index = _flatten(key, index)
        grad_q = torch.empty_like(query) if need_q else None
        grad_k = torch.zeros_like(flat_key) if need_k else None
        for s in range(0, q, ctx.chunk):
            g = grad[:, s:s + ctx.chunk]  # [B, n, P]
            idx = flat_index[:, s:s + ctx.chunk].reshape(-1)
            if need_q:
                rows = flat_key.index_select(0, idx).view(b, -1, p, c)
                grad_q[:, s:s + ctx.chunk] = g[:, :, None, :].matmul(rows).squeeze(-2)
            if need_k:
                contrib = g[..., None] * query[:, s:s + ctx.chunk, None, :]  # [B, n, P, C]
                grad_k.index_add_(0, idx, contrib.reshape(-1, c))
        return grad_q, grad_k.view_as(key) if need_k else None, None, None, None


def _flatten(key: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """key [B, N, C] -> [B*N, C]; index [B, Q, P] -> offsets into it (batch b adds b*N)."""
    b, n, c = key.shape
    offsets = torch.arange(b, device=index.device).view(b, 1, 1) * n
    return key.reshape(b * n, c), index + offsets


def corr_lookup_onthefly(query: Tensor, keys: list[Tensor], coords: Tensor, radius: int, *,
                         chunk_elements: int | None = None) -> Tensor:
    """Correlation lookup without a volume.

    Args:
        query: [B, C, h, w] driving features on the lookup grid (already avg-pooled for coarse grids).
        keys: from :func:`channels_last_keys`, level l [B, H_l, W_l, C].
        coords: [B, 2, h, w] window centres in level-0 source pixels (x, y); level l uses coords / 2^l.
        radius: window radius r.
        chunk_elements: bound on gathered key values held at once (memory / launch-count knob, no effect on
            results; default per device type from ``CHUNK_ELEMENTS``).

    Returns:
        [B, L*(2r+1)^2, h, w], equal to ``corr_lookup_reference`` on the volume
        ``source_pyramid(corr_volume(query, key))`` (float32, or float64 for float64 inputs).
    """
    b, c, h, w = query.shape
    if coords.shape != (b, 2, h, w):
        raise ValueError(f"coords must be [B={b}, 2, {h}, {w}] like the query grid, got {list(coords.shape)}")
    acc = acc_dtype(query.dtype)
    k1, n = 2 * radius + 2, h * w
    q = query.to(acc).flatten(2).transpose(1, 2)  # [B, Q, C]
    if chunk_elements is None:
        chunk_elements = CHUNK_ELEMENTS.get(query.device.type, CHUNK_ELEMENTS["cuda"])
    chunk = max(1, chunk_elements // (k1 * k1 * c * b))
    taps = []
    for level, key in enumerate(keys):
        hl, wl = key.shape[1:3]
        xy = coords.to(acc).reshape(b, 2, n) / 2 ** level  # [B, 2, Q]
        foot = footing(xy[:, 0], xy[:, 1], hl, wl, radius)
        win = _WindowCorrelation.apply(q, key.to(acc).view(b, hl * wl, c), foot.index, foot.valid, chunk)
        win = (win / math.sqrt(c)).view(b, n, k1, k1)
        taps.append(stencil_taps(win, foot.ax, foot.ay))  # [B, Q, (2r+1)^2]
    return torch.cat(taps, dim=-1).permute(0, 2, 1).reshape(b, -1, h, w)
