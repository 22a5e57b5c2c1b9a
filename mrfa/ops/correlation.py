"""All-pairs 4D structure correlation volume and its pyramids (MRFA section 3.3; the official ``CorrBlock``).

The volume correlates driving-structure queries with source-structure keys on the motion grid
(size/4, 64x64 at 256 px). For each iteration the official code handles it as one source map per
driving pixel: driving-side average pooling brings the driving grid to the iteration's resolution
(coarse levels), then the source side gets a 2-level average-pooling pyramid.

The volume is linear in the query and in the key, so pooling the volume over the driving grid equals
correlating avg-pooled queries, and pooling its source maps equals correlating avg-pooled keys.
:func:`build_pyramids` uses this to build every pyramid a forward needs once, straight from pooled
features (no pooled copies of the full volume, no per-iteration re-pooling); :func:`corr_volume`,
:func:`pool_driving` and :func:`source_pyramid` keep the official construction for tests and benchmarks.
"""
from __future__ import annotations

import math
from typing import Iterable, Literal, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def corr_volume(query: Tensor, key: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
    """C[b, i, j, k, l] = <query[b, :, i, j], key[b, :, k, l]> / sqrt(C).

    Args:
        query: [B, C, h, w] driving structure.
        key: [B, C, H, W] source structure.
        dtype: the matmul's dtype (e.g. bf16: faster; it accumulates in fp32 and rounds the volume to bf16,
            which is then stored as float32); None: float32 (official).

    Returns:
        [B, h, w, H, W] in float32 (float64 stays float64).
    """
    b, c, h, w = query.shape
    hs, ws = key.shape[-2:]
    q = (_acc(query) if dtype is None else query.to(dtype)).reshape(b, c, h * w)
    k = (_acc(key) if dtype is None else key.to(dtype)).reshape(b, c, hs * ws)
    vol = q.transpose(1, 2).matmul(k)  # [B, h*w, H*W]
    if dtype is not None:
        vol = vol.float()
    vol.div_(math.sqrt(c))  # in place: same values as the official division, no second volume-sized buffer
    return vol.view(b, h, w, hs, ws)


def pool_driving(volume: Tensor, factor: int) -> Tensor:
    """Average-pool the driving grid of ``volume`` [B, h, w, H, W] by ``factor`` -> [B, h/f, w/f, H, W]."""
    if factor == 1:
        return volume
    b, h, w, hs, ws = volume.shape
    x = volume.view(b, h, w, hs * ws).permute(0, 3, 1, 2)  # [B, H*W, h, w]
    x = F.avg_pool2d(x, kernel_size=factor, stride=factor)
    return x.permute(0, 2, 3, 1).reshape(b, h // factor, w // factor, hs, ws)


def source_pyramid(volume: Tensor, num_levels: int) -> list[Tensor]:
    """Source-side pyramid: level 0 = ``volume`` [B, h, w, H, W], level l = avg-pool 2^l of the source map."""
    b, h, w, hs, ws = volume.shape
    levels = [volume]
    x = volume.reshape(b * h * w, 1, hs, ws)
    for _ in range(1, num_levels):
        x = F.avg_pool2d(x, kernel_size=2, stride=2)
        levels.append(x.view(b, h, w, *x.shape[-2:]))
    return levels


def key_pyramid(key: Tensor, num_levels: int) -> list[Tensor]:
    """Source features pooled like the volume's source maps: level l = avg-pool 2 applied l times.

    Args:
        key: [B, C, H, W] source structure.

    Returns:
        ``num_levels`` tensors [B, C, H_l, W_l] (float32 or float64; odd sizes floor like the volume).
    """
    levels = [_acc(key)]
    for _ in range(1, num_levels):
        levels.append(F.avg_pool2d(levels[-1], kernel_size=2, stride=2))
    return levels


def pool_query(query: Tensor, factor: int) -> Tensor:
    """Driving features pooled like :func:`pool_driving` pools the volume: [B, C, h, w] -> [B, C, h/f, w/f]."""
    q = _acc(query)
    return q if factor == 1 else F.avg_pool2d(q, kernel_size=factor, stride=factor)


def build_pyramids(query: Tensor, key: Tensor, factors: Iterable[int], num_levels: int,
                   dtype: Optional[torch.dtype] = None) -> dict[int, list[Tensor]]:
    """Every driving-pooled source pyramid a forward needs, built once from pooled features.

    Equals ``source_pyramid(pool_driving(corr_volume(query, key), f), num_levels)`` for each ``f`` up to
    float rounding (linearity), without pooled copies of the full volume and with only GEMM backward.

    Args:
        query: [B, C, h, w] driving structure.
        key: [B, C, H, W] source structure.
        factors: driving pooling factors f (1 = the motion grid itself).
        num_levels: source pyramid levels L.
        dtype: the matmuls' input dtype (see :func:`corr_volume`).

    Returns:
        {f: [level l: [B, h/f, w/f, H/2^l, W/2^l]]}.
    """
    keys = key_pyramid(key, num_levels)
    return {f: [corr_volume(pool_query(query, f), k, dtype) for k in keys] for f in sorted(set(factors))}


def channels_last_keys(key: Tensor, num_levels: int) -> list[Tensor]:
    """:func:`key_pyramid` in the layout the on-the-fly lookup reads: level l [B, H_l, W_l, C], contiguous."""
    return [k.permute(0, 2, 3, 1).contiguous() for k in key_pyramid(key, num_levels)]


class CorrelationState(NamedTuple):
    """What the refinement lookups of one forward need, built once (see :func:`correlation_state`)."""

    mode: str  # "volume" or "onthefly"
    pyramids: dict  # volume mode: {f: [level l [B, h/f, w/f, H_l, W_l]]}
    queries: dict  # on-the-fly mode: {f: pooled query [B, C, h/f, w/f]}
    keys: list  # on-the-fly mode: pooled keys, level l [B, H_l, W_l, C]


def correlation_state(query: Tensor, key: Tensor, factors: Iterable[int], num_levels: int,
                      mode: Literal["volume", "onthefly"] = "volume",
                      dtype: Optional[torch.dtype] = None) -> CorrelationState:
    """Build, once per forward, the pyramids (volume mode) or pooled features (on-the-fly mode).

    Args:
        query: [B, C, h, w] driving structure; key: [B, C, H, W] source structure.
        factors: driving pooling factors the lookups will use.
        num_levels: source pyramid levels L.
        mode: "volume" (materialised pyramids, :func:`build_pyramids`) or "onthefly" (no volume).
        dtype: volume mode: the matmuls' input dtype (None: float32, official).
    """
    factors = sorted(set(factors))
    if mode == "volume":
        return CorrelationState(mode, build_pyramids(query, key, factors, num_levels, dtype), {}, [])
    if mode == "onthefly":
        return CorrelationState(mode, {}, {f: pool_query(query, f) for f in factors},
                                channels_last_keys(key, num_levels))
    raise ValueError(f"unknown correlation mode {mode!r}; expected 'volume' or 'onthefly'")


def _acc(x: Tensor) -> Tensor:
    """float64 stays float64, everything else computes in float32 (the official volume is fp32)."""
    return x if x.dtype.is_floating_point and x.dtype.itemsize == 8 else x.float()
