"""Background-motion consistency loss (celebvhq configuration; TPSM-style background predictor).

The background predictor gives a 3x3 (affine, homogeneous) matrix ``bg(s, d)`` for the pair
(source, driving) and ``bg(d, s)`` for the swapped pair; the two must be inverse to each other:
``L_bg = w * mean |I - bg(s, d) @ bg(d, s)|`` (official weight 10).
"""
from __future__ import annotations

import torch
from torch import Tensor


def background_loss(bg_source_driving: Tensor, bg_driving_source: Tensor, weight: float = 10.0) -> Tensor:
    """Weighted inverse-consistency of the two background matrices.

    Args:
        bg_source_driving: [B, 3, 3] ``bg(source, driving)``.
        bg_driving_source: [B, 3, 3] ``bg(driving, source)``.
        weight: loss weight (official 10).

    Returns:
        () scalar ``weight * mean |I - bg_sd @ bg_ds|``.
    """
    if bg_source_driving.shape[-2:] != (3, 3) or bg_source_driving.shape != bg_driving_source.shape:
        raise ValueError(f"background matrices must both be [B, 3, 3], got {tuple(bg_source_driving.shape)} "
                         f"and {tuple(bg_driving_source.shape)}.")
    product = bg_source_driving @ bg_driving_source  # [B, 3, 3]
    eye = torch.eye(3, dtype=product.dtype, device=product.device)
    return weight * (eye - product).abs().mean()
