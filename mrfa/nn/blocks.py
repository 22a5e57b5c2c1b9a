"""Convolutional building blocks shared by the FOMM-style networks (hourglass, generator).

Names of sub-modules (``conv``, ``norm``, ``conv1`` ...) follow the official state_dict so that
official checkpoints load by a prefix rename.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DownBlock2d(nn.Module):
    """conv3x3 -> BatchNorm -> ReLU -> avg-pool 2x2 (halves the resolution)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=kernel_size // 2)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), kernel_size=2)


class UpBlock2d(nn.Module):
    """nearest x2 -> conv3x3 -> BatchNorm -> ReLU (doubles the resolution)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=kernel_size // 2)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0)  # nearest
        return F.relu(self.norm(self.conv(x)))


class SameBlock2d(nn.Module):
    """conv (same padding) -> BatchNorm -> ReLU."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=kernel_size // 2)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.conv(x)))


class ResBlock2d(nn.Module):
    """Pre-activation residual block: x + conv(relu(bn(conv(relu(bn(x))))))."""

    def __init__(self, features: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size, padding=kernel_size // 2)
        self.conv2 = nn.Conv2d(features, features, kernel_size, padding=kernel_size // 2)
        self.norm1 = nn.BatchNorm2d(features, affine=True)
        self.norm2 = nn.BatchNorm2d(features, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class ChannelBlock2d(nn.Module):
    """BatchNorm(2C) -> ReLU -> conv3x3 2C -> C: fuses refined and coarse warped features."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_features, affine=True)
        self.conv1 = nn.Conv2d(in_features, out_features, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv1(F.relu(self.norm1(x)))


class HourglassEncoder(nn.Module):
    """Hourglass contracting path; returns [input, f_1, ..., f_n] (fine to coarse)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        blocks = []
        for i in range(num_blocks):
            cin = in_features if i == 0 else min(max_features, block_expansion * (2**i))
            cout = min(max_features, block_expansion * (2 ** (i + 1)))
            blocks.append(DownBlock2d(cin, cout))
        self.down_blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    """Hourglass expanding path: each step is ``cat([upsampled, skip], 1)``."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            cin = (1 if i == num_blocks - 1 else 2) * min(max_features, block_expansion * (2 ** (i + 1)))
            cout = min(max_features, block_expansion * (2**i))
            blocks.append(UpBlock2d(cin, cout))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features

    def forward(self, feats: list[Tensor]) -> Tensor:
        feats = list(feats)
        out = feats.pop()
        for block in self.up_blocks:
            out = torch.cat([block(out), feats.pop()], dim=1)
        return out


class Hourglass(nn.Module):
    """FOMM hourglass (U-Net without a bottleneck conv). Output channels: block_expansion + in_features."""

    def __init__(self, *, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256) -> None:
        super().__init__()
        self.encoder = HourglassEncoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = HourglassDecoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


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
