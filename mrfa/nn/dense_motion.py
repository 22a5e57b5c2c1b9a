"""FOMM local-affine motion prior (MRFA's "prior motion").

Keypoints and jacobians give K local affine motions plus a background motion; an hourglass predicts
their soft assignment (mask) and an occlusion logit map on the motion grid (image / 4).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.grid import inverse_2x2
from ..types import DenseMotion, Keypoints
from .blocks import AntiAliasInterpolation2d, Hourglass, kp2gaussian, make_coordinate_grid


def apply_background(identity: Tensor, bg_param: Optional[Tensor]) -> Tensor:
    """Apply a [B, 3, 3] affine (homogeneous) to a grid [B, 1, h, w, 2]; identity when None."""
    if bg_param is None:
        return identity
    ones = torch.ones_like(identity[..., :1])
    homog = torch.cat([identity, ones], dim=-1)  # [B, 1, h, w, 3]
    out = torch.matmul(bg_param.view(-1, 1, 1, 1, 3, 3), homog.unsqueeze(-1)).squeeze(-1)
    return out[..., :2] / out[..., 2:3]


def sparse_affine_motions(kp_driving: Keypoints, kp_source: Keypoints, height: int, width: int,
                          bg_param: Optional[Tensor] = None) -> Tensor:
    """Per-keypoint sampling grids ``J_s J_d^-1 (z - kp_d) + kp_s`` plus the background grid.

    Returns [B, K+1, h, w, 2] normalised (x, y) grids; map 0 is the (background) identity.
    """
    kp_d, kp_s = kp_driving.value, kp_source.value  # [B, K, 2]
    b, k, _ = kp_d.shape
    identity = make_coordinate_grid(height, width, device=kp_d.device, dtype=kp_d.dtype).view(1, 1, height, width, 2)
    coords = identity - kp_d.view(b, k, 1, 1, 2)  # [B, K, h, w, 2]
    if kp_driving.jacobian is not None and kp_source.jacobian is not None:
        # fp32 on purpose: near-singular driving jacobians are common early in training
        jac = torch.matmul(kp_source.jacobian.float(), inverse_2x2(kp_driving.jacobian.float())).to(kp_d.dtype)
        jac = jac.view(b, k, 1, 1, 2, 2).expand(b, k, height, width, 2, 2)
        coords = torch.matmul(jac, coords.unsqueeze(-1)).squeeze(-1)
    driving_to_source = coords + kp_s.view(b, k, 1, 1, 2)
    background = apply_background(identity.expand(b, 1, height, width, 2), bg_param)
    return torch.cat([background, driving_to_source], dim=1)


class DenseMotionNetwork(nn.Module):
    """FOMM dense motion: (source, kp_driving, kp_source) -> DenseMotion on the image/scale grid."""

    def __init__(self, *, num_kp: int, num_channels: int = 3, block_expansion: int = 64,
                 max_features: int = 1024, num_blocks: int = 5, scale_factor: float = 0.25,
                 kp_variance: float = 0.01) -> None:
        super().__init__()
        self.num_kp = num_kp
        self.kp_variance = kp_variance
        self.hourglass = Hourglass(block_expansion=block_expansion, in_features=(num_kp + 1) * (num_channels + 1),
                                   max_features=max_features, num_blocks=num_blocks)
        self.mask = nn.Conv2d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.occlusion = nn.Conv2d(self.hourglass.out_filters, 1, kernel_size=7, padding=3)
        self.down = AntiAliasInterpolation2d(num_channels, scale_factor)

    def prepare_source(self, source: Tensor) -> Tensor:
        """The blurred, downsampled source [B, C, h, w] the prior works on (a per-video constant)."""
        return self.down(source)

    def forward(self, source: Tensor, kp_driving: Keypoints, kp_source: Keypoints,
                bg_param: Optional[Tensor] = None, dropout_p: float = 0.0,
                prior_input: Optional[Tensor] = None) -> DenseMotion:
        """source: [B, C, H, W] full resolution (or ``prior_input``, its cached :meth:`prepare_source`);
        returns grids/logits at H*scale."""
        del dropout_p  # only the TPS prior uses component dropout
        src = self.prepare_source(source) if prior_input is None else prior_input  # [B, C, h, w]
        b, c, h, w = src.shape
        k = self.num_kp
        gauss_d = kp2gaussian(kp_driving.value, (h, w), self.kp_variance)
        gauss_s = kp2gaussian(kp_source.value, (h, w), self.kp_variance)
        heatmap = torch.cat([torch.zeros_like(gauss_d[:, :1]), gauss_d - gauss_s], dim=1).unsqueeze(2)  # [B,K+1,1,h,w]

        sparse = sparse_affine_motions(kp_driving, kp_source, h, w, bg_param)  # [B, K+1, h, w, 2]
        src_rep = src.unsqueeze(1).expand(b, k + 1, c, h, w).reshape(b * (k + 1), c, h, w)
        deformed = F.grid_sample(src_rep, sparse.reshape(b * (k + 1), h, w, 2), align_corners=False)
        deformed = deformed.view(b, k + 1, c, h, w)  # [B, K+1, C, h, w]

        feats = self.hourglass(torch.cat([heatmap, deformed], dim=2).view(b, -1, h, w))
        logit_mask = self.mask(feats)  # [B, K+1, h, w]
        mask = F.softmax(logit_mask, dim=1)
        deformation = (sparse.permute(0, 1, 4, 2, 3) * mask.unsqueeze(2)).sum(dim=1).permute(0, 2, 3, 1)
        return DenseMotion(deformation=deformation, occlusion=self.occlusion(feats), mask=mask,
                           logit_mask=logit_mask, heatmap=heatmap, sparse_motion=sparse, sparse_deformed=deformed)
