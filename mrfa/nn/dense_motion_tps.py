"""TPS dense motion network (TPSMM, Zhao & Zhang CVPR 2022), MRFA's ``prior_model = tpsm`` prior.

Paper box: "prior motion" (dense motion) with thin-plate-spline components. The K = 5 * num_tps
keypoints form num_tps groups of 5 control points; each group defines a TPS mapping driving ->
source (Eq. 2 of TPSMM), plus one background component (identity, or the background affine). An
hourglass on [gaussian heatmap differences, source warped by every component] predicts softmax
contribution maps (Eq. 6) that blend the components into one dense deformation, and one occlusion
logit map. MRFA's variant uses BatchNorm hourglass blocks, a single occlusion head (``occlusion.0``)
on the last hourglass output, and returns occlusion *logits*. Unlike the FOMM dense motion
(align_corners=False), the deformed sources are sampled with ``grid_sample(align_corners=True)``,
as in TPSMM (checked against the parity fixture: align_corners=False is off by ~0.5).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrfa.nn.blocks import AntiAliasInterpolation2d, Hourglass, kp2gaussian, make_coordinate_grid
from mrfa.ops.grid import inverse_small
from mrfa.types import DenseMotion, Keypoints

from .intermediates import record

POINTS_PER_TPS = 5
TPS_REGULARISATION = 0.01  # added to the diagonal of the TPS system matrix
TPS_LOG_EPS = 1e-9


def tps_kernel(r2: Tensor) -> Tensor:
    """TPS radial basis ``U = r^2 log(r^2)`` of squared distances (``+1e-9`` inside the log).

    ``U(0)`` is written out as ``-r2`` (= -0.0, the official value bit for bit): onnxruntime evaluates the plain
    expression at r2 = 0 to NaN."""
    return torch.where(r2 > 0, r2 * torch.log(r2 + TPS_LOG_EPS), -r2)


def fit_tps(kp_driving: Tensor, kp_source: Tensor) -> tuple[Tensor, Tensor]:
    """Solve the regularised TPS systems mapping each driving group onto its source group.

    Args:
        kp_driving: control points [B, G, n, 2] (x, y).
        kp_source: their targets [B, G, n, 2].

    Returns:
        affine [B, G, 2, 3] (rows = output x, y; columns = x, y, 1) and radial weights [B, G, n, 2].
    """
    b, g, n, _ = kp_driving.shape
    diff = kp_driving[:, :, :, None] - kp_driving[:, :, None, :]  # [B, G, n, n, 2]
    k_mat = tps_kernel(torch.linalg.vector_norm(diff, dim=-1) ** 2)  # [B, G, n, n]
    ones = kp_driving.new_ones(b, g, n, 1)
    p_mat = torch.cat([kp_driving, ones], dim=3)  # [B, G, n, 3]
    top = torch.cat([k_mat, p_mat], dim=3)  # [B, G, n, n+3]
    bottom = torch.cat([p_mat.transpose(2, 3), kp_driving.new_zeros(b, g, 3, 3)], dim=3)  # [B, G, 3, n+3]
    system = torch.cat([top, bottom], dim=2)  # [B, G, n+3, n+3]
    system = system + TPS_REGULARISATION * torch.eye(n + 3, device=system.device, dtype=system.dtype)
    rhs = torch.cat([kp_source, kp_source.new_zeros(b, g, 3, 2)], dim=2)  # [B, G, n+3, 2]
    params = torch.matmul(inverse_small(system), rhs)  # [B, G, n+3, 2]
    return params[:, :, n:].transpose(2, 3), params[:, :, :n]


def warp_tps(coords: Tensor, control: Tensor, affine: Tensor, weights: Tensor) -> Tensor:
    """Apply TPS transformations to a set of points.

    Args:
        coords: [N, 2] points (x, y) shared by all transformations.
        control: [B, G, n, 2] control points; affine: [B, G, 2, 3]; weights: [B, G, n, 2].

    Returns:
        [B, G, N, 2] transformed points.
    """
    lin = torch.matmul(affine[..., :2], coords.t()) + affine[..., 2:]  # [B, G, 2, N]
    r2 = ((coords[None, None, None] - control[:, :, :, None]) ** 2).sum(-1)  # [B, G, n, N]
    radial = torch.matmul(tps_kernel(r2).transpose(2, 3), weights)  # [B, G, N, 2]
    return lin.transpose(2, 3) + radial


def dropout_softmax(logits: Tensor, p: float) -> Tensor:
    """TPSMM "dropout softmax" (its Eq. 7-8): each TPS component is dropped with probability ``p``.

    The background component (channel 0) is always kept. As in the reference implementation, the
    softmax is stabilised with the max over *all* components, dropped components are zeroed after
    the exponential and the kept ones renormalised with ``+1e-6`` in the denominator (its
    ``1 / (1 - p)`` rescaling is applied to a tensor that is no longer used, so it has no effect).

    Args:
        logits: [B, M, H, W]; p: drop probability in [0, 1).
    """
    b, m = logits.shape[:2]
    keep = (torch.rand(b, m, device=logits.device) < (1 - p)).to(logits.dtype)  # [B, M]
    keep[:, 0] = 1
    shifted = logits - logits.max(dim=1, keepdim=True).values
    weights = shifted.exp() * keep[:, :, None, None]
    return weights / (weights.sum(dim=1, keepdim=True) + 1e-6)


class TPSDenseMotionNetwork(nn.Module):
    """Dense motion from ``num_tps`` TPS components + background, blended by predicted contribution maps.

    Args:
        num_tps: number of TPS transformations (keypoints K = 5 * num_tps).
        num_channels: image channels.
        block_expansion, max_features, num_blocks: hourglass width / cap / depth.
        scale_factor: the motion is estimated on the source anti-aliased and resized by this factor.
        kp_variance: variance of the keypoint gaussians.

    Sub-modules carry the official names: ``hourglass``, ``maps``, ``occlusion.0`` (and the computed
    anti-alias kernel ``down``).
    """

    def __init__(self, *, num_tps: int = 10, num_channels: int = 3, block_expansion: int = 64,
                 max_features: int = 1024, num_blocks: int = 5, scale_factor: float = 0.25,
                 kp_variance: float = 0.01) -> None:
        super().__init__()
        self.num_tps = num_tps
        self.num_kp = num_tps * POINTS_PER_TPS
        self.scale_factor = float(scale_factor)
        self.kp_variance = float(kp_variance)
        in_features = (self.num_kp + 1) + num_channels * (num_tps + 1)  # heatmaps + deformed sources
        self.hourglass = Hourglass(block_expansion=block_expansion, in_features=in_features,
                                   num_blocks=num_blocks, max_features=max_features)
        out = self.hourglass.out_filters
        self.maps = nn.Conv2d(out, num_tps + 1, kernel_size=7, padding=3)
        self.occlusion = nn.ModuleList([nn.Conv2d(out, 1, kernel_size=7, padding=3)])
        self.down: Optional[AntiAliasInterpolation2d] = None
        if self.scale_factor != 1.0:
            self.down = AntiAliasInterpolation2d(num_channels, self.scale_factor)

    def heatmaps(self, shape: tuple[int, int], kp_driving: Tensor, kp_source: Tensor) -> Tensor:
        """[B, K+1, h, w]: zero background map, then G(kp_driving_k) - G(kp_source_k)."""
        heat = kp2gaussian(kp_driving, shape, self.kp_variance) - kp2gaussian(kp_source, shape, self.kp_variance)
        zeros = heat.new_zeros(heat.shape[0], 1, *shape)
        return torch.cat([zeros, heat], dim=1)

    def transformations(self, shape: tuple[int, int], kp_driving: Tensor, kp_source: Tensor,
                        bg_param: Optional[Tensor]) -> Tensor:
        """[B, num_tps+1, h, w, 2] sampling grids: background (identity or affine), then each TPS."""
        b = kp_driving.shape[0]
        h, w = shape
        grid = make_coordinate_grid(h, w, device=kp_driving.device, dtype=kp_driving.dtype)  # [h, w, 2]
        drv = kp_driving.view(b, self.num_tps, POINTS_PER_TPS, 2)
        src = kp_source.view(b, self.num_tps, POINTS_PER_TPS, 2)
        affine, weights = fit_tps(drv, src)
        tps = warp_tps(grid.view(-1, 2), drv, affine, weights).view(b, self.num_tps, h, w, 2)
        bg = grid.expand(b, 1, h, w, 2)
        if bg_param is not None:
            homog = torch.cat([bg, torch.ones_like(bg[..., :1])], dim=-1)  # [B, 1, h, w, 3]
            bg = torch.matmul(bg_param.view(b, 1, 1, 1, 3, 3), homog.unsqueeze(-1)).squeeze(-1)
            bg = bg[..., :2] / bg[..., 2:3]
        return torch.cat([bg, tps], dim=1)

    def prepare_source(self, source: Tensor) -> Tensor:
        """The (blurred, downsampled) source [B, C, h, w] the prior works on (a per-video constant)."""
        return source if self.down is None else self.down(source)

    def forward(self, source: Tensor, kp_driving: Keypoints, kp_source: Keypoints,
                bg_param: Optional[Tensor] = None, dropout_p: float = 0.0,
                prior_input: Optional[Tensor] = None) -> DenseMotion:
        """Estimate the prior motion.

        Args:
            source: full-resolution source image [B, C, H, W].
            kp_driving, kp_source: keypoints with value [B, K, 2] (jacobians are ignored).
            bg_param: optional background affine [B, 3, 3].
            dropout_p: TPS dropout probability; applied only in training mode and when > 0.
            prior_input: the cached :meth:`prepare_source` of ``source`` (computed here when None).

        Returns:
            DenseMotion with deformation [B, h, w, 2] (driving -> source, normalised grid),
            occlusion logits [B, 1, h, w], mask = contribution maps [B, num_tps+1, h, w], their
            logits, heatmap [B, K+1, h, w], sparse_motion = transformations [B, num_tps+1, h, w, 2]
            and sparse_deformed = deformed sources [B, num_tps+1, C, h, w].
        """
        if kp_driving.value.shape[1] != self.num_kp or kp_source.value.shape[1] != self.num_kp:
            raise ValueError(f"TPSDenseMotionNetwork expects {self.num_kp} keypoints, got "
                             f"{kp_driving.value.shape[1]} (driving) and {kp_source.value.shape[1]} (source)")
        x = self.prepare_source(source) if prior_input is None else prior_input  # [B, C, h, w]
        b, c, h, w = x.shape
        m = self.num_tps + 1
        heatmap = self.heatmaps((h, w), kp_driving.value, kp_source.value)  # [B, K+1, h, w]
        transformations = self.transformations((h, w), kp_driving.value, kp_source.value, bg_param)
        src_rep = x.unsqueeze(1).expand(b, m, c, h, w).reshape(b * m, c, h, w)
        deformed = F.grid_sample(src_rep, transformations.reshape(b * m, h, w, 2), align_corners=True)
        deformed = deformed.view(b, m, c, h, w)  # [B, M, C, h, w]
        feature = self.hourglass(torch.cat([heatmap, deformed.view(b, m * c, h, w)], dim=1))
        logits = self.maps(feature)  # [B, M, h, w]
        if self.training and dropout_p > 0:
            contribution = dropout_softmax(logits, dropout_p)
        else:
            contribution = F.softmax(logits, dim=1)
        deformation = (transformations * contribution.unsqueeze(-1)).sum(dim=1)  # [B, h, w, 2]
        occlusion = self.occlusion[0](feature)  # [B, 1, h, w] logits
        record(heatmap=heatmap, transformations=transformations, deformed_source=deformed,
               contribution_maps=contribution, mask=contribution, deformation=deformation, occlusion=occlusion)
        return DenseMotion(deformation=deformation, occlusion=occlusion, mask=contribution,
                           logit_mask=logits, heatmap=heatmap, sparse_motion=transformations,
                           sparse_deformed=deformed)
