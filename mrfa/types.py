"""Typed outputs shared by the MRFA networks (NamedTuples: attribute access, DDP/compile friendly)."""
from __future__ import annotations

from typing import NamedTuple, Optional

from torch import Tensor


class Keypoints(NamedTuple):
    """Keypoints in normalised [-1, 1] image coordinates, (x, y) order.

    value:    [B, K, 2]
    jacobian: [B, K, 2, 2] local affine (row-major), or None for detectors without jacobians (TPS).
    """

    value: Tensor
    jacobian: Optional[Tensor] = None


class DenseMotion(NamedTuple):
    """Output of a prior (dense motion) network at the motion grid (size/4).

    deformation: [B, h, w, 2] normalised sampling grid driving -> source for
                 grid_sample(align_corners=False), (x, y) order.
    occlusion:   [B, 1, h, w] occlusion (visibility) *logits*.
    mask:        [B, M, h, w] softmax weights of the M motion components (channel 0 = background).
    logit_mask:  [B, M, h, w] the same before the softmax.
    heatmap:     gaussian heatmap representation fed to the hourglass.
    sparse_motion: [B, M, h, w, 2] per-component sampling grids.
    sparse_deformed: [B, M, C, h, w] source warped by each component.
    """

    deformation: Tensor
    occlusion: Tensor
    mask: Tensor
    logit_mask: Optional[Tensor] = None
    heatmap: Optional[Tensor] = None
    sparse_motion: Optional[Tensor] = None
    sparse_deformed: Optional[Tensor] = None


class MRFAOutput(NamedTuple):
    """Result of ``MRFA.forward`` / ``MRFA.animate``.

    prediction:   [B, 3, H, W] generated driving frame in [0, 1].
    kp_source, kp_driving: detector outputs (animate: kp_driving holds the transferred keypoints).
    flows:        per-level refined pixel flows [B, 2, r, r], coarse (size/32) to fine (size).
    occlusions:   per-level visibility maps [B, 1, r, r] in [0, 1] (1 = take the warped source).
    warped_image: [B, 3, H, W] source warped with the final flow.
    deformation:  [B, g, g, 2] prior sampling grid; occlusion_prior: [B, 1, g, g] prior logits.
    bg_param:     [B, 3, 3] background affine or None.
    """

    prediction: Tensor
    kp_source: Keypoints
    kp_driving: Keypoints
    flows: list
    occlusions: list
    warped_image: Tensor
    deformation: Optional[Tensor] = None
    occlusion_prior: Optional[Tensor] = None
    bg_param: Optional[Tensor] = None
