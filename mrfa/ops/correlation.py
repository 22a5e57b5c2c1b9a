"""All-pairs 4D structure correlation volume and its pyramids (MRFA section 3.3 / spec section 4.1).

The volume correlates driving-structure queries with source-structure keys on the motion grid
(size/4, 64x64 at 256 px). For each iteration the official code handles it as one source map per
driving pixel: driving-side average pooling brings the driving grid to the iteration's resolution
(coarse levels), then the source side gets a 2-level average-pooling pyramid.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def corr_volume(query: Tensor, key: Tensor) -> Tensor:
    """C[b, i, j, k, l] = <query[b, :, i, j], key[b, :, k, l]> / sqrt(C).

    query: [B, C, h, w] driving structure; key: [B, C, H, W] source structure.
    Returns [B, h, w, H, W] (computed in float32 for stability).
    """
    b, c, h, w = query.shape
    hs, ws = key.shape[-2:]
    q = query.float().reshape(b, c, h * w)
    k = key.float().reshape(b, c, hs * ws)
    vol = torch.matmul(q.transpose(1, 2), k)  # [B, h*w, H*W]
    return (vol / math.sqrt(c)).view(b, h, w, hs, ws)


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
