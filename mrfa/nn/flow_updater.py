"""Shared flow updater: motion encoder + refine head, no GRU, one update per level."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MotionEncoder(nn.Module):
    """(flow, correlation lookup) -> motion feature [B, hidden, r, r] (last 2 channels = the flow).

    Official name ``corr_enc``; its argument called ``delta_flow`` receives the current flow itself.
    """

    def __init__(self, *, corr_channels: int, hidden_dim: int = 128) -> None:
        super().__init__()
        c_corr, c_flow = hidden_dim * 3 // 4, hidden_dim // 2  # 96, 64 officially
        self.convc1 = nn.Conv2d(corr_channels, hidden_dim, 1)
        self.convc2 = nn.Conv2d(hidden_dim, c_corr, 3, padding=1)
        self.convf1 = nn.Conv2d(2, hidden_dim, 7, padding=3)
        self.convf2 = nn.Conv2d(hidden_dim, c_flow, 3, padding=1)
        self.conv = nn.Conv2d(c_corr + c_flow, hidden_dim - 2, 3, padding=1)

    def forward(self, flow: Tensor, corr: Tensor) -> Tensor:
        c = F.relu(self.convc2(F.relu(self.convc1(corr))))
        f = F.relu(self.convf2(F.relu(self.convf1(flow))))
        return torch.cat([F.relu(self.conv(torch.cat([c, f], dim=1))), flow], dim=1)


class RefineHead(nn.Module):
    """(motion feature, context) -> flow residual [B, 2, r, r] and occlusion-logit residual [B, 1, r, r]."""

    def __init__(self, *, context_dim: int = 192, hidden_dim: int = 128) -> None:
        super().__init__()
        self.convc1 = nn.Conv2d(context_dim, hidden_dim, 3, padding=1)
        self.conv1 = nn.Conv2d(2 * hidden_dim, hidden_dim, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden_dim, 2, 3, padding=1)
        self.convo1 = nn.Conv2d(2 * hidden_dim, hidden_dim, 3, padding=1)
        self.convo2 = nn.Conv2d(hidden_dim, 1, 3, padding=1)

    def forward(self, motion: Tensor, context: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """context: ReLU'd projection of the warped generator feature. Returns (delta, delta_occ, hidden)."""
        hidden = torch.cat([motion, F.relu(self.convc1(context))], dim=1)  # [B, 2*hidden, r, r]
        delta = self.conv2(F.relu(self.conv1(hidden)))
        delta_occ = self.convo2(F.relu(self.convo1(hidden)))
        return delta, delta_occ, hidden
