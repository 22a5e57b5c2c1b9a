"""Background motion predictor (TPSMM-style), used by MRFA's celebvhq configuration.

Paper box: "background motion" of the prior. A ResNet-18 on ``concat(source, driving)`` regresses a
2x3 affine matrix, returned as the top two rows of a 3x3 homogeneous matrix; the dense-motion network
applies it to the background (component 0) sparse motion. The fc layer starts at zero weight and the
identity bias, so the initial prediction is the identity. Backbone name ``bg_encoder`` as in the
official state_dict (``bg_predictor.bg_encoder.*``).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from mrfa.nn.resnet import ResNet18


class BGMotionPredictor(nn.Module):
    """Affine background motion from a source / driving pair.

    Args:
        num_channels: channels of each image (the backbone sees ``2 * num_channels``).

    ``forward(source [B, C, H, W], driving [B, C, H, W]) -> [B, 3, 3]`` with last row ``[0, 0, 1]``.
    """

    def __init__(self, *, num_channels: int = 3) -> None:
        super().__init__()
        self.bg_encoder = ResNet18(in_channels=2 * num_channels, num_outputs=6)
        with torch.no_grad():
            self.bg_encoder.fc.weight.zero_()
            self.bg_encoder.fc.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def forward(self, source: Tensor, driving: Tensor) -> Tensor:
        if source.shape != driving.shape:
            raise ValueError(f"source {tuple(source.shape)} and driving {tuple(driving.shape)} differ in shape")
        b = source.shape[0]
        affine = self.bg_encoder(torch.cat([source, driving], dim=1)).view(b, 2, 3)  # [B, 2, 3]
        last = torch.tensor([0.0, 0.0, 1.0], device=affine.device, dtype=affine.dtype)
        return torch.cat([affine, last.expand(b, 1, 3)], dim=1)  # [B, 3, 3]
