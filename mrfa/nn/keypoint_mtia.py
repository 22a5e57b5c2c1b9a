"""MTIA keypoint detector: HRNet stem + TokenPose-B keypoint-token transformer.

The default keypoint detector ("keypoint detector" box of the MRFA paper, Fig. 2). The HRNet
feature map (1/4 resolution) is cut into non-overlapping patches, embedded linearly and given a
fixed 2-D sine position embedding; ``2K`` learned tokens (K keypoint tokens, then K jacobian
tokens) are prepended; a pre-norm transformer mixes them; LayerNorm + Linear heads read the
keypoints (``2*sigmoid - 1``) and the 2x2 jacobians (plain, unconstrained).

Sub-module names equal the official ones below ``encoder.`` (``pre_feature.*``,
``transformer.transformer.layers.L.0.fn.fn.to_qkv.weight``, ``transformer.mlp_head.1.weight`` ...),
so an official state_dict loads after stripping that prefix and dropping the
``encoder.transformer.pos_embedding`` entry: here the sine embedding is a computed,
non-persistent buffer (the official code stored it as a frozen Parameter).

Init follows the official ``INIT True`` path with torch's own functions: Linear weights
trunc-normal(std .02, bounds +-2), biases 0, LayerNorm (1, 0), keypoint tokens trunc-normal .02,
the jacobian Linear zero weight and bias [1, 0, 0, 1] (jacobians start as identities); HRNet keeps
PyTorch's default init. Seed-identical init with the official (timm) code is not a goal.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from mrfa.nn.hrnet import HRNetStem
from mrfa.types import Keypoints

from .intermediates import record


def sine_position_embedding(height: int, width: int, dim: int, temperature: float = 10000.0) -> Tensor:
    """Fixed 2-D sine embedding of a ``height x width`` token grid (TokenPose "sine").

    Per axis ``dim // 2`` features: positions 1..n are normalised to ``p / (n + 1e-6) * 2*pi``,
    divided by ``temperature ** (2*(i//2) / (dim//2))``; even features take the sine, odd ones the
    cosine. The y features come first, then the x features. Tokens are row-major.

    Returns:
        ``[1, height*width, dim]`` float32.
    """
    if dim % 4 != 0:
        raise ValueError(f"sine position embedding needs dim divisible by 4, got {dim}.")
    half = dim // 2
    scale = 2 * math.pi
    eps = 1e-6
    # Same float32 operation sequence as the official code, so the values agree to rounding.
    y = torch.arange(1, height + 1, dtype=torch.float32)
    x = torch.arange(1, width + 1, dtype=torch.float32)
    y = y / (y[-1:] + eps) * scale  # [H]
    x = x / (x[-1:] + eps) * scale  # [W]
    dim_t = torch.arange(half, dtype=torch.float32)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / half)  # [half]

    def encode(pos: Tensor) -> Tensor:  # [n] -> [n, half], sin/cos interleaved
        angles = pos[:, None] / dim_t  # [n, half]
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = encode(y)[:, None, :].expand(height, width, half)  # [H, W, half]
    pos_x = encode(x)[None, :, :].expand(height, width, half)  # [H, W, half]
    return torch.cat((pos_y, pos_x), dim=2).reshape(1, height * width, dim)


class _Residual(nn.Module):
    """``x + fn(x)`` (official ``Residual``; attribute name ``fn`` kept for the state_dict)."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x) + x


class _PreNorm(nn.Module):
    """``fn(LayerNorm(x))`` (official ``PreNorm``: attributes ``norm``, ``fn``)."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(self.norm(x))


class Attention(nn.Module):
    """Multi-head self-attention, qkv without bias, scale ``(dim/heads)**-0.5``, out Linear + bias."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"transformer dim {dim} is not divisible by heads {heads}.")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim))  # index 0 as in the official state_dict

    def forward(self, x: Tensor) -> Tensor:
        """``[B, N, dim] -> [B, N, dim]``."""
        b, n, d = x.shape
        # chunk(3) -> q, k, v; each [B, N, heads*hd] -> [B, heads, N, hd]
        q, k, v = (t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)
                   for t in self.to_qkv(x).chunk(3, dim=-1))
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)  # [B, heads, N, N]
        out = (attn @ v).transpose(1, 2).reshape(b, n, d)  # [B, N, dim]
        return self.to_out(out)


class FeedForward(nn.Module):
    """Linear -> GELU (erf) -> Linear; the Identity slots stand for the official dropouts (p=0)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU(), nn.Identity(),
                                 nn.Linear(hidden_dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Transformer(nn.Module):
    """Pre-norm encoder; before every layer but the first the position embedding is re-added to
    the image tokens (official ``sine-full``)."""

    def __init__(self, *, dim: int, depth: int, heads: int, mlp_dim: int, num_special_tokens: int) -> None:
        super().__init__()
        self.num_special_tokens = num_special_tokens
        self.layers = nn.ModuleList(
            nn.ModuleList([_Residual(_PreNorm(dim, Attention(dim, heads))),
                           _Residual(_PreNorm(dim, FeedForward(dim, mlp_dim)))])
            for _ in range(depth))

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        """x ``[B, T + P, dim]`` (T special tokens first), pos ``[1, P, dim]`` -> ``[B, T + P, dim]``."""
        t = self.num_special_tokens
        for idx, (attn, ff) in enumerate(self.layers):
            if idx > 0:
                x = torch.cat((x[:, :t], x[:, t:] + pos), dim=1)
            x = ff(attn(x))
        return x


class KeypointTokenTransformer(nn.Module):
    """TokenPose-B head on an HRNet feature map (official ``TokenPose_TB_base``, sine-full,
    jacobian tokens, direct regression heads).

    Args:
        num_kp: keypoints K.
        feature_size: side of the (square) input feature map.
        channels: channels of the feature map.
        patch_size: side of the square, non-overlapping patches.
        dim, depth, heads, mlp_dim: transformer width, layers, heads, hidden width of the MLP.
        estimate_jacobian: add K jacobian tokens and the jacobian head.
    """

    def __init__(self, *, num_kp: int, feature_size: int, channels: int, patch_size: int, dim: int,
                 depth: int, heads: int, mlp_dim: int, estimate_jacobian: bool) -> None:
        super().__init__()
        if feature_size % patch_size != 0:
            raise ValueError(f"feature map size {feature_size} is not divisible by patch_size {patch_size}.")
        grid = feature_size // patch_size
        self.num_kp = num_kp
        self.patch_size = patch_size
        self.estimate_jacobian = estimate_jacobian
        self.num_tokens = 2 * num_kp if estimate_jacobian else num_kp
        self.keypoint_token = nn.Parameter(torch.zeros(1, self.num_tokens, dim))
        self.register_buffer("pos_embedding", sine_position_embedding(grid, grid, dim), persistent=False)
        self.patch_to_embedding = nn.Linear(channels * patch_size * patch_size, dim)
        self.transformer = Transformer(dim=dim, depth=depth, heads=heads, mlp_dim=mlp_dim,
                                       num_special_tokens=self.num_tokens)
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2))
        self.mlp_head_jacobian = (nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4))
                                  if estimate_jacobian else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init (see the module docstring)."""
        nn.init.trunc_normal_(self.keypoint_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.mlp_head_jacobian is not None:
            head = self.mlp_head_jacobian[1]
            nn.init.zeros_(head.weight)
            with torch.no_grad():
                head.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]))

    def tokenize(self, feature: Tensor) -> Tensor:
        """``[B, C, h, w] -> [B, (h/p)*(w/p), p*p*C]``, each patch flattened (row, col, channel)."""
        b, c, h, w = feature.shape
        p = self.patch_size
        x = feature.reshape(b, c, h // p, p, w // p, p)  # [B, C, gh, p1, gw, p2]
        return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)

    def forward(self, feature: Tensor) -> Keypoints:
        """HRNet feature ``[B, C, h, w]`` -> Keypoints (value ``[B, K, 2]``, jacobian ``[B, K, 2, 2]``)."""
        x = self.patch_to_embedding(self.tokenize(feature)) + self.pos_embedding  # [B, P, dim]
        tokens = self.keypoint_token.expand(x.shape[0], -1, -1)  # [B, T, dim]
        x = self.transformer(torch.cat((tokens, x), dim=1), self.pos_embedding)  # [B, T + P, dim]
        k = self.num_kp
        value = 2 * torch.sigmoid(self.mlp_head(x[:, :k])) - 1  # [B, K, 2]
        jacobian = None
        if self.mlp_head_jacobian is not None:
            jacobian = self.mlp_head_jacobian(x[:, k:2 * k]).reshape(x.shape[0], k, 2, 2)  # [B, K, 2, 2]
        record(tokens=x.detach(), kp_tokens=x[:, :self.num_tokens].detach())
        return Keypoints(value, jacobian)


class MTIADetector(nn.Module):
    """MTIA keypoint detector (TokenPose-B on HRNet), the default detector of MRFA.

    Args:
        num_kp: keypoints K (official NUM_JOINTS 10).
        in_channels: image channels.
        image_size: side of the square input image; the feature map is ``image_size / 4``.
        stem_channels, layer1_blocks, stage{2,3}_{modules,blocks,channels}: HRNet stem, see
            :class:`mrfa.nn.hrnet.HRNetStem` (the tokeniser reads ``stage3_channels[0]`` channels).
        patch_size: patch side on the feature map; tokens = ``(image_size / 4 / patch_size)**2``.
        dim, depth, heads: transformer width (official 192), layers (12) and heads (8).
        mlp_ratio: MLP hidden width = ``dim * mlp_ratio`` (3).
        estimate_jacobian: predict 2x2 jacobians from K extra tokens.
    """

    def __init__(self, *, num_kp: int = 10, in_channels: int = 3, image_size: int = 256,
                 stem_channels: int = 64, layer1_blocks: int = 4, stage2_modules: int = 1,
                 stage2_blocks: Sequence[int] = (4, 4), stage2_channels: Sequence[int] = (32, 64),
                 stage3_modules: int = 4, stage3_blocks: Sequence[int] = (4, 4, 4),
                 stage3_channels: Sequence[int] = (32, 64, 128), patch_size: int = 4, dim: int = 192,
                 depth: int = 12, heads: int = 8, mlp_ratio: int = 3,
                 estimate_jacobian: bool = True) -> None:
        super().__init__()
        self.image_size = image_size
        self.num_kp = num_kp
        self.has_jacobian = bool(estimate_jacobian)  # whether forward returns jacobians
        self.pre_feature = HRNetStem(
            in_channels=in_channels, stem_channels=stem_channels, layer1_blocks=layer1_blocks,
            stage2_modules=stage2_modules, stage2_blocks=tuple(stage2_blocks),
            stage2_channels=tuple(stage2_channels), stage3_modules=stage3_modules,
            stage3_blocks=tuple(stage3_blocks), stage3_channels=tuple(stage3_channels))
        if image_size % self.pre_feature.min_divisor != 0:
            raise ValueError(f"image_size {image_size} must be a multiple of {self.pre_feature.min_divisor} "
                             f"for an HRNet with {len(stage3_channels)} branches.")
        self.transformer = KeypointTokenTransformer(
            num_kp=num_kp, feature_size=image_size // 4, channels=self.pre_feature.out_channels,
            patch_size=patch_size, dim=dim, depth=depth, heads=heads, mlp_dim=dim * mlp_ratio,
            estimate_jacobian=estimate_jacobian)

    def forward(self, image: Tensor) -> Keypoints:
        """Detect keypoints.

        Args:
            image: ``[B, 3, image_size, image_size]`` RGB in [0, 1] (no normalisation).

        Under :func:`mrfa.nn.intermediates.capture` it records detached internals: ``hrnet_feature``
        ``[B, C0, S/4, S/4]``, ``tokens`` ``[B, T + P, dim]`` (transformer output, special tokens first) and
        ``kp_tokens`` ``[B, T, dim]`` (T = 2K with jacobians, else K).

        Returns:
            Keypoints: value ``[B, K, 2]`` in (-1, 1), (x, y); jacobian ``[B, K, 2, 2]`` or None.
        """
        if image.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"MTIADetector was built for {self.image_size}x{self.image_size} images, "
                             f"got {tuple(image.shape[-2:])}.")
        feature = self.pre_feature(image)  # [B, C0, S/4, S/4]
        record(hrnet_feature=feature.detach())
        return self.transformer(feature)
