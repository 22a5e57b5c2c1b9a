"""Convolutional building blocks shared by the FOMM-style networks (hourglass, generator).

Names of sub-modules (``conv``, ``norm``, ``conv1`` ...) follow the official state_dict so that
official checkpoints load by a prefix rename.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.grid import AntiAliasInterpolation2d, kp2gaussian, make_coordinate_grid  # noqa: F401 (nn's users)


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
