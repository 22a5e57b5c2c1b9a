"""TPS keypoint detector (TPSMM, Zhao & Zhang CVPR 2022), MRFA's ``prior_model = tpsm`` encoder.

Paper box: "keypoint detector" of the thin-plate-spline motion prior. A ResNet-18 regresses
``num_tps * 5`` keypoints directly from the full image (fc 512 -> num_tps * 10, ``2 * sigmoid - 1``);
consecutive groups of 5 points are the control points of one TPS transformation. No jacobians.
The backbone is ``fg_encoder`` as in the official state_dict (``encoder.fg_encoder.*``).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from mrfa.nn.resnet import ResNet18
from mrfa.types import Keypoints

from .intermediates import record

POINTS_PER_TPS = 5


class TPSKeypointDetector(nn.Module):
    """ResNet-18 regressor of ``K = 5 * num_tps`` keypoints in (-1, 1), grouped 5 per TPS.

    Args:
        num_tps: number of TPS transformations.
        num_channels: image channels.

    ``forward(image [B, C, H, W])`` returns ``Keypoints(value [B, K, 2], jacobian=None)``.
    """

    def __init__(self, *, num_tps: int = 10, num_channels: int = 3) -> None:
        super().__init__()
        self.num_tps = num_tps
        self.num_kp = num_tps * POINTS_PER_TPS
        self.has_jacobian = False  # TPS keypoints carry no jacobians
        self.fg_encoder = ResNet18(in_channels=num_channels, num_outputs=self.num_kp * 2)

    def forward(self, image: Tensor) -> Keypoints:
        """Detect keypoints (records the raw ``fc_out`` [B, 2K] under :func:`mrfa.nn.intermediates.capture`)."""
        out = self.fg_encoder(image)  # [B, 2K]
        record(fc_out=out)
        value = (torch.sigmoid(out) * 2 - 1).view(out.shape[0], self.num_kp, 2)  # [B, K, 2]
        return Keypoints(value=value, jacobian=None)
