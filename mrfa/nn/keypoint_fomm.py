"""FOMM keypoint detector (Siarohin et al. 2019), MRFA's ``train_params.prior_model = fomm`` encoder.

Paper box: "keypoint detector" of the motion prior, the first-order-model variant. An hourglass on the
anti-aliased 1/4 image predicts one heatmap per keypoint; a temperature softmax turns each into a
distribution whose mean on the [-1, 1] grid is the keypoint (soft-argmax). Jacobians are pooled from a
4-channel map with the same distributions. Sub-module names (``predictor``, ``kp``, ``jacobian``) equal
the official ones after the ``encoder.`` prefix; the anti-alias kernel ``down.weight`` is computed.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrfa.nn.blocks import AntiAliasInterpolation2d, Hourglass, make_coordinate_grid
from mrfa.types import Keypoints

from .intermediates import record


class FOMMKeypointDetector(nn.Module):
    """Hourglass heatmap detector with soft-argmax keypoints and heatmap-pooled jacobians.

    Args:
        num_kp: number of keypoints K.
        num_channels: image channels.
        block_expansion, max_features, num_blocks: hourglass width / cap / depth.
        temperature: softmax temperature of the heatmaps.
        scale_factor: the image is anti-aliased and resized by this factor first (1 = no resize).
        estimate_jacobian: predict a 2x2 jacobian per keypoint.
        single_jacobian_map: one 4-channel jacobian map shared by all keypoints (the official MRFA
            configuration: ``jacobian`` conv with 4 outputs) instead of 4 channels per keypoint.

    ``forward(image [B, C, H, W])`` returns ``Keypoints(value [B, K, 2], jacobian [B, K, 2, 2] | None)``.
    """

    def __init__(self, *, num_kp: int, num_channels: int = 3, block_expansion: int, max_features: int,
                 num_blocks: int, temperature: float = 0.1, scale_factor: float = 0.25,
                 estimate_jacobian: bool = True, single_jacobian_map: bool = True) -> None:
        super().__init__()
        self.num_kp = num_kp
        self.temperature = float(temperature)
        self.scale_factor = float(scale_factor)
        self.predictor = Hourglass(block_expansion=block_expansion, in_features=num_channels,
                                   num_blocks=num_blocks, max_features=max_features)
        # 7x7 without padding: 64x64 features -> 58x58 heatmaps.
        self.kp = nn.Conv2d(self.predictor.out_filters, num_kp, kernel_size=7, padding=0)
        self.jacobian: Optional[nn.Conv2d] = None
        self.has_jacobian = bool(estimate_jacobian)  # whether forward returns jacobians
        self.num_jacobian_maps = 0
        if estimate_jacobian:
            self.num_jacobian_maps = 1 if single_jacobian_map else num_kp
            self.jacobian = nn.Conv2d(self.predictor.out_filters, 4 * self.num_jacobian_maps,
                                      kernel_size=7, padding=0)
            with torch.no_grad():  # every jacobian starts as the identity
                self.jacobian.weight.zero_()
                self.jacobian.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]).repeat(self.num_jacobian_maps))
        self.down: Optional[AntiAliasInterpolation2d] = None
        if self.scale_factor != 1.0:
            self.down = AntiAliasInterpolation2d(num_channels, self.scale_factor)

    def forward(self, image: Tensor) -> Keypoints:
        """Detect keypoints (records ``hourglass``, ``heatmap_logits``, ``jacobian_map`` under
        :func:`mrfa.nn.intermediates.capture`)."""
        x = image if self.down is None else self.down(image)  # [B, C, h, w]
        feature = self.predictor(x)  # [B, F, h, w]
        logits = self.kp(feature)  # [B, K, h', w']
        b, k, hh, ww = logits.shape
        heatmap = F.softmax(logits.view(b, k, -1) / self.temperature, dim=2).view(b, k, hh, ww)
        grid = make_coordinate_grid(hh, ww, device=logits.device, dtype=logits.dtype)  # [h', w', 2]
        value = (heatmap.unsqueeze(-1) * grid).sum(dim=(2, 3))  # [B, K, 2]
        record(hourglass=feature, heatmap_logits=logits)
        jacobian = None
        if self.jacobian is not None:
            jac_map = self.jacobian(feature)  # [B, 4 * M, h', w']
            record(jacobian_map=jac_map)
            jac_map = jac_map.view(b, self.num_jacobian_maps, 4, hh, ww)
            jacobian = (heatmap.unsqueeze(2) * jac_map).view(b, k, 4, -1).sum(-1)  # [B, K, 4]
            jacobian = jacobian.view(b, k, 2, 2)
        return Keypoints(value=value, jacobian=jacobian)
