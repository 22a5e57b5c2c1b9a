"""Pure-PyTorch correlation lookup (grid_sample per pyramid level): the reference semantics."""
from __future__ import annotations

import torch
from torch import Tensor

from ..grid import bilinear_sample_px


def window_offsets(radius: int, *, device=None, dtype=torch.float32) -> Tensor:
    """[(2r+1), (2r+1), 2] offsets; entry [a, b] = (dx = a - r, dy = b - r): x outer, y inner."""
    d = torch.linspace(-radius, radius, 2 * radius + 1, device=device, dtype=dtype)
    ox, oy = torch.meshgrid(d, d, indexing="ij")
    return torch.stack([ox, oy], dim=-1)


def corr_lookup_reference(pyramid: list[Tensor], coords: Tensor, radius: int) -> Tensor:
    b, _, h, w = coords.shape
    k = 2 * radius + 1
    delta = window_offsets(radius, device=coords.device, dtype=coords.dtype).view(1, k, k, 2)
    centre = coords.permute(0, 2, 3, 1).reshape(b * h * w, 1, 1, 2)  # [B*h*w, 1, 1, 2]
    out = []
    for level, corr in enumerate(pyramid):
        maps = corr.reshape(b * h * w, 1, *corr.shape[-2:])  # [B*h*w, 1, H_l, W_l]
        sampled = bilinear_sample_px(maps, centre / 2**level + delta)  # [B*h*w, 1, k, k]
        out.append(sampled.view(b, h, w, k * k))
    return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous()  # [B, L*k*k, h, w]
