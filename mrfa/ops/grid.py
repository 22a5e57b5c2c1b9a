"""Coordinate conventions used by MRFA, in one place.

Two conventions coexist in the official model, and both are reproduced:

* normalised grids in [-1, 1] read by ``grid_sample(align_corners=False)``: the dense-motion prior
  (``deformation``), the coarse feature warp and the equivariance transform;
* pixel flows read with ``align_corners=True``: the refinement path. Pixel ``p`` of an ``n``-pixel axis
  maps to ``2 p / (n - 1) - 1``. Flows are [B, 2, h, w] displacements, channel 0 = x (column),
  channel 1 = y (row): driving pixel (x, y) samples the source at (x + u, y + v).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def coords_grid(batch: int, height: int, width: int, *, device=None, dtype=torch.float32) -> Tensor:
    """Integer pixel grid [B, 2, H, W]; channel 0 = x, channel 1 = y."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                            torch.arange(width, device=device, dtype=dtype), indexing="ij")
    return torch.stack([xs, ys], dim=0)[None].expand(batch, 2, height, width)


def bilinear_sample_px(image: Tensor, coords: Tensor) -> Tensor:
    """Sample ``image`` [B, C, H, W] at pixel coordinates ``coords`` [B, h, w, 2] (x, y).

    align_corners=True convention, zero padding. Returns [B, C, h, w].
    """
    height, width = image.shape[-2:]
    x, y = coords.split(1, dim=-1)
    x = 2 * x / (width - 1) - 1
    y = 2 * y / (height - 1) - 1
    return F.grid_sample(image, torch.cat([x, y], dim=-1), align_corners=True)


def warp(feature: Tensor, flow: Tensor) -> Tensor:
    """Backward-warp ``feature`` [B, C, h, w] with a pixel flow [B, 2, h, w] (align_corners=True, zeros)."""
    b, _, h, w = flow.shape
    coords = coords_grid(b, h, w, device=flow.device, dtype=flow.dtype) + flow  # [B, 2, h, w]
    return bilinear_sample_px(feature, coords.permute(0, 2, 3, 1))


def resize(x: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Bilinear resize with align_corners=True (the official ``rs``); identity when the size matches."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def up2(x: Tensor) -> Tensor:
    """Bilinear x2 upsampling with align_corners=True."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)


def resize_grid(grid: Tensor, size: int) -> Tensor:
    """Resize a normalised sampling grid [B, h, w, 2] channels-first (bilinear, align_corners=True)."""
    if grid.shape[1] == size and grid.shape[2] == size:
        return grid
    return resize(grid.permute(0, 3, 1, 2), size).permute(0, 2, 3, 1)


def grid_to_pixel_flow(grid: Tensor) -> Tensor:
    """Normalised grid [B, h, w, 2] -> pixel flow [B, 2, h, w] with ``(n - 1) (g + 1) / 2 - id``.

    This is the official conversion (an align_corners=True reading of an align_corners=False grid, which the
    official ``convert_flow_to_deformation`` does; reproduced as is).
    """
    b, h, w, _ = grid.shape
    scale = torch.tensor([w - 1, h - 1], device=grid.device, dtype=grid.dtype)
    pixels = scale * (grid + 1) / 2  # [B, h, w, 2]
    return pixels.permute(0, 3, 1, 2) - coords_grid(b, h, w, device=grid.device, dtype=grid.dtype)


def pixel_flow_to_grid(flow: Tensor) -> Tensor:
    """Inverse of :func:`grid_to_pixel_flow`: pixel flow [B, 2, h, w] -> normalised grid [B, h, w, 2]."""
    b, _, h, w = flow.shape
    pixels = coords_grid(b, h, w, device=flow.device, dtype=flow.dtype) + flow
    scale = torch.tensor([w - 1, h - 1], device=flow.device, dtype=flow.dtype).view(1, 2, 1, 1)
    return (2 * pixels / scale - 1).permute(0, 2, 3, 1)


def anti_alias_kernel(channels: int, scale: float) -> Tensor:
    """Depthwise Gaussian kernel [C, 1, k, k] of FOMM's anti-alias downsampling.

    sigma = (1/scale - 1) / 2, k = 2 * round(4 * sigma) + 1, centred at (k - 1) / 2 on integer taps,
    normalised to sum 1. For scale 1 this is 0/0 = NaN, as in the official code (never used).
    """
    sigma = (1.0 / scale - 1.0) / 2.0
    size = 2 * round(sigma * 4) + 1
    grid = torch.arange(size, dtype=torch.float32)
    mean = (size - 1) / 2
    g = torch.exp(-((grid - mean) ** 2) / (2 * sigma**2)) if sigma > 0 else torch.full((size,), float("nan"))
    kernel = g[:, None] * g[None, :]
    kernel = kernel / kernel.sum()
    return kernel.view(1, 1, size, size).repeat(channels, 1, 1, 1)


class AntiAliasInterpolation2d(nn.Module):
    """Gaussian blur then nearest subsampling by ``1/scale`` (FOMM ``AntiAliasInterpolation2d``).

    The kernel is a non-persistent buffer: it is computed, never learned or loaded.
    """

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.scale = float(scale)
        self.register_buffer("weight", anti_alias_kernel(channels, scale), persistent=False)
        self.groups = channels
        self.pad = self.weight.shape[-1] // 2
        self.step = int(round(1.0 / scale))

    def forward(self, x: Tensor) -> Tensor:  # [B, C, H, W] -> [B, C, H*scale, W*scale]
        if self.scale == 1.0:
            return x
        out = F.conv2d(F.pad(x, (self.pad,) * 4), self.weight.to(x.dtype), groups=self.groups)
        return out[:, :, :: self.step, :: self.step]


def make_coordinate_grid(height: int, width: int, *, device=None, dtype=torch.float32) -> Tensor:
    """[H, W, 2] grid of (x, y) in [-1, 1] with pixel i at ``2 * i / (n - 1) - 1``."""
    x = torch.arange(width, device=device, dtype=dtype)
    y = torch.arange(height, device=device, dtype=dtype)
    x = 2 * (x / (width - 1)) - 1
    y = 2 * (y / (height - 1)) - 1
    xx = x.view(1, -1).expand(height, width)
    yy = y.view(-1, 1).expand(height, width)
    return torch.stack([xx, yy], dim=2)


def kp2gaussian(kp: Tensor, spatial_size: tuple[int, int], kp_variance: float) -> Tensor:
    """Gaussian heatmaps ``exp(-0.5 |z - kp|^2 / var)`` on the [-1, 1] grid.

    kp: [..., K, 2] -> [..., K, H, W]
    """
    grid = make_coordinate_grid(*spatial_size, device=kp.device, dtype=kp.dtype)  # [H, W, 2]
    diff = grid - kp[..., None, None, :]  # [..., K, H, W, 2]
    return torch.exp(-0.5 * (diff**2).sum(-1) / kp_variance)


def inverse_2x2(m: Tensor) -> Tensor:
    """Inverse of ``[..., 2, 2]`` matrices (keypoint jacobians).

    Eager and compiled runs use ``torch.inverse`` (the official arithmetic, bit for bit); while a graph is being
    exported (ONNX has no matrix-inverse operator) the closed form ``[[d, -b], [-c, a]] / (ad - bc)``, equal to it up
    to float rounding.
    """
    if not torch.compiler.is_exporting():
        return torch.inverse(m)
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    det = a * d - b * c
    return torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / det[..., None, None]


def inverse_small(m: Tensor) -> Tensor:
    """Inverse of ``[..., n, n]`` matrices for small n (the TPS systems, n = 8).

    Eager and compiled runs use ``torch.linalg.inv`` (the official arithmetic); while a graph is being exported (ONNX
    has no matrix inverse) Gauss-Jordan elimination with partial pivoting, unrolled over the n columns (plain
    gather / arithmetic ops), equal to it up to float rounding.
    """
    if not torch.compiler.is_exporting():
        return torch.linalg.inv(m)
    n = m.shape[-1]
    eye = torch.eye(n, dtype=m.dtype, device=m.device).expand(m.shape)
    a = torch.cat([m, eye], dim=-1)  # [..., n, 2n]
    rows = torch.arange(n, device=m.device)
    for col in range(n):
        # partial pivoting: the row at or below `col` with the largest |entry| in this column
        cand = a[..., :, col].abs().masked_fill(rows < col, -1.0)  # [..., n]
        pivot = cand.argmax(dim=-1)  # [...]
        sel = torch.nn.functional.one_hot(pivot, n).to(m.dtype)  # [..., n]
        cur = torch.nn.functional.one_hot(torch.full_like(pivot, col), n).to(m.dtype)
        swap = sel - cur  # exchange rows `pivot` and `col` (a permutation applied by matmul)
        perm = torch.eye(n, dtype=m.dtype, device=m.device) + swap[..., :, None] * swap[..., None, :] * -1.0
        perm = perm + (sel[..., :, None] * cur[..., None, :] + cur[..., :, None] * sel[..., None, :]) \
            * (1.0 - (sel * cur).sum(-1))[..., None, None]
        a = perm @ a
        row = a[..., col:col + 1, :] / a[..., col:col + 1, col:col + 1]  # normalised pivot row [..., 1, 2n]
        factor = a[..., :, col:col + 1]  # [..., n, 1]
        a = a - factor * row
        a = a + cur[..., :, None] * row  # the pivot row itself becomes `row`
    return a[..., n:]
