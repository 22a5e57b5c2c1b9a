"""Structure encoders: keypoint heatmaps (+ positional embedding, + image for the source)
-> hourglass -> 1x1 head, giving the driving queries and source keys of the correlation volume."""
from __future__ import annotations

from torch import Tensor, nn

from .blocks import Hourglass


class StructureEncoder(nn.Module):
    """Hourglass + 1x1 projection to ``dim`` channels. The driving branch never sees the driving image."""

    def __init__(self, *, in_features: int, dim: int = 256, block_expansion: int = 32, max_features: int = 512,
                 num_blocks: int = 5) -> None:
        super().__init__()
        self.hourglass = Hourglass(block_expansion=block_expansion, in_features=in_features,
                                   max_features=max_features, num_blocks=num_blocks)
        self.head = nn.Conv2d(self.hourglass.out_filters, dim, kernel_size=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: [B, in, h, w] -> (hourglass features [B, be + in, h, w], embedding [B, dim, h, w])."""
        feats = self.hourglass(x)
        return feats, self.head(feats)
