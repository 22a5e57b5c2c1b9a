"""Occlusion-aware U-Net generator with encode / decode over multi-scale warped features."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .blocks import ChannelBlock2d, DownBlock2d, ResBlock2d, SameBlock2d, UpBlock2d
from .intermediates import record


def level_channels(block_expansion: int, max_features: int, num_down_blocks: int) -> list[int]:
    """Feature channels per level, coarse (size / 2^n) to fine (full size): 512,512,512,256,128,64 officially."""
    n = num_down_blocks
    return [min(max_features, block_expansion * 2 ** (n - i)) for i in range(n + 1)]


class OcclusionAwareGenerator(nn.Module):
    """``encode(source)`` gives the per-level source features; ``decode`` fuses warped features.

    Occlusions are visibility weights in [0, 1] (1 = take the warped source feature).
    """

    def __init__(self, *, num_channels: int = 3, block_expansion: int = 64, max_features: int = 512,
                 num_down_blocks: int = 5) -> None:
        super().__init__()
        self.channels = level_channels(block_expansion, max_features, num_down_blocks)  # coarse -> fine
        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=7)
        self.down_blocks = nn.ModuleList(
            DownBlock2d(min(max_features, block_expansion * 2**i), min(max_features, block_expansion * 2 ** (i + 1)))
            for i in range(num_down_blocks))
        c = self.channels
        self.up_blocks = nn.ModuleList(UpBlock2d(c[j], c[j + 1]) for j in range(num_down_blocks))
        self.resblock = nn.ModuleList(ResBlock2d(c[j]) for j in range(num_down_blocks))
        self.channel_block = nn.ModuleList(ChannelBlock2d(2 * c[j], c[j]) for j in range(num_down_blocks))
        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=7, padding=3)

    @property
    def num_levels(self) -> int:
        return len(self.channels)

    def encode(self, source: Tensor) -> list[Tensor]:
        """source [B, 3, H, W] -> features coarse to fine: [B, C_i, H / 2^(n-i), W / 2^(n-i)]."""
        out = [self.first(source)]
        for block in self.down_blocks:
            out.append(block(out[-1]))
        return out[::-1]

    def decode(self, warped: list[Tensor], occlusion: list[Tensor], coarse: Optional[list[Tensor]],
               warp_img: Tensor) -> Tensor:
        """Fuse warped source features (coarse to fine) into the predicted image [B, 3, H, W].

        Args:
            warped: refined warped features per level; occlusion: [B, 1, r, r] visibility per level.
            coarse: prior-warped features per level (the coarse branch), or None (prior-only mode).
            warp_img: the source image warped to the driving frame, blended where visible.
        """
        out = warped[0] * occlusion[0]
        if coarse is not None:
            out = torch.cat([out, coarse[0]], dim=1)
        ups = []
        last = len(self.up_blocks) - 1
        for j, up in enumerate(self.up_blocks):
            if coarse is not None:
                out = self.channel_block[j](out)
            out = up(self.resblock[j](out))
            ups.append(out)
            occ = occlusion[j + 1]
            out = warped[j + 1] * occ + out * (1 - occ)
            if coarse is not None and j < last:
                out = torch.cat([out, coarse[j + 1]], dim=1)
        logit = self.final(out)
        occ = occlusion[-1]
        prediction = torch.sigmoid(logit) * (1 - occ) + warp_img * occ
        record(decode_up=ups, final_logit=logit)
        return prediction
