"""Optional adversarial term (not in the paper nor the official MRFA code; off by default).

Design, following FOMM's adversarial VoxCeleb configuration (first-order-model
``config/vox-adv-256.yaml`` with ``modules/discriminator.py`` and ``modules/model.py``):

* Discriminator: Pix2Pix-style PatchGAN per pyramid scale (``MultiScaleDiscriminator``); each block
  is conv 4x4 (no padding) -> InstanceNorm (affine; not on the first block) -> LeakyReLU(0.2) ->
  2x2 average pool (not after the last block); a 1x1 conv gives patch logits. Channels
  ``min(max_features, block_expansion * 2**(i+1))``. The input can be conditioned on the driving
  keypoints as Gaussian heatmaps (variance 0.01) concatenated to the image (FOMM ``use_kp``).
* Published hyper-parameters (vox-adv-256): ``scales [1]``, ``block_expansion 32``,
  ``max_features 512``, ``num_blocks 4``, ``use_kp True`` (10 keypoints); spectral norm is **not**
  set there (FOMM's default ``sn=False``), so ``sn`` defaults to False here too.
  Loss weights: ``generator_gan 1``, ``discriminator_gan 1``, ``feature_matching [10, 10, 10, 10]``
  (one per discriminator block); FOMM trains D with its own Adam (lr 2e-4) after each G step.
* Losses (least-squares GAN, summed over discriminator scales):
  ``L_G = w_g * mean (1 - D(fake))^2``;
  ``L_D = w_d * mean [(1 - D(real))^2 + D(fake)^2]`` (fake detached by the caller);
  ``L_FM = sum_i w_i * mean |F_i(real) - F_i(fake)|`` with the real features detached.
* Inputs: images in [0, 1] (the pyramid is applied inside), keypoints detached.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from mrfa.losses.pyramid import ImagePyramid
from mrfa.ops.grid import kp2gaussian

FM_WEIGHTS = (10.0, 10.0, 10.0, 10.0)


class DiscriminatorOutput(NamedTuple):
    """features: per-block activations [B, C_i, H_i, W_i]; logits: [B, 1, h, w] patch scores."""

    features: list[Tensor]
    logits: Tensor


class _DiscBlock(nn.Module):
    def __init__(self, in_features: int, out_features: int, *, norm: bool, pool: bool, sn: bool) -> None:
        super().__init__()
        conv = nn.Conv2d(in_features, out_features, kernel_size=4)
        self.conv = spectral_norm(conv) if sn else conv
        self.norm = nn.InstanceNorm2d(out_features, affine=True) if norm else None
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        if self.norm is not None:
            out = self.norm(out)
        out = F.leaky_relu(out, 0.2)
        return F.avg_pool2d(out, 2) if self.pool else out


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (see module docstring).

    Args:
        in_channels: image channels.
        block_expansion, max_features, num_blocks: channel schedule (FOMM vox-adv: 32, 512, 4).
        sn: spectral normalisation on every conv.
        num_kp: keypoints to condition on as heatmaps (0 = unconditional).
        kp_variance: heatmap variance in normalised coordinates.

    Forward: ``x`` [B, C, H, W], ``kp`` [B, K, 2] (needed when num_kp > 0) -> ``DiscriminatorOutput``.
    """

    def __init__(self, *, in_channels: int = 3, block_expansion: int = 32, max_features: int = 512,
                 num_blocks: int = 4, sn: bool = False, num_kp: int = 10, kp_variance: float = 0.01) -> None:
        super().__init__()
        blocks = []
        for i in range(num_blocks):
            cin = in_channels + num_kp if i == 0 else min(max_features, block_expansion * 2**i)
            cout = min(max_features, block_expansion * 2 ** (i + 1))
            blocks.append(_DiscBlock(cin, cout, norm=i != 0, pool=i != num_blocks - 1, sn=sn))
        self.blocks = nn.ModuleList(blocks)
        conv = nn.Conv2d(min(max_features, block_expansion * 2**num_blocks), 1, kernel_size=1)
        self.conv = spectral_norm(conv) if sn else conv
        self.num_kp = num_kp
        self.kp_variance = kp_variance

    def forward(self, x: Tensor, kp: Optional[Tensor] = None) -> DiscriminatorOutput:
        if self.num_kp > 0:
            if kp is None or kp.shape[-2] != self.num_kp:
                raise ValueError(f"this discriminator is conditioned on {self.num_kp} keypoints; got "
                                 f"{None if kp is None else tuple(kp.shape)}.")
            heatmap = kp2gaussian(kp.detach(), tuple(x.shape[2:]), self.kp_variance)  # [B, K, H, W]
            x = torch.cat([x, heatmap.to(x.dtype)], dim=1)
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return DiscriminatorOutput(features=features, logits=self.conv(x))


class MultiScaleDiscriminator(nn.Module):
    """One ``PatchDiscriminator`` per pyramid scale (FOMM vox-adv: scales ``(1,)``).

    Args:
        scales: pyramid scales the discriminators see.
        other arguments: passed to every ``PatchDiscriminator``.

    Forward: ``image`` [B, C, H, W] in [0, 1], ``kp`` [B, K, 2] or None -> one
    ``DiscriminatorOutput`` per scale.
    """

    def __init__(self, *, scales: Sequence[float] = (1.0,), in_channels: int = 3, block_expansion: int = 32,
                 max_features: int = 512, num_blocks: int = 4, sn: bool = False, num_kp: int = 10,
                 kp_variance: float = 0.01) -> None:
        super().__init__()
        self.pyramid = ImagePyramid(scales, channels=in_channels)
        self.discs = nn.ModuleList(
            PatchDiscriminator(in_channels=in_channels, block_expansion=block_expansion,
                               max_features=max_features, num_blocks=num_blocks, sn=sn, num_kp=num_kp,
                               kp_variance=kp_variance)
            for _ in self.pyramid.scales)

    def forward(self, image: Tensor, kp: Optional[Tensor] = None) -> list[DiscriminatorOutput]:
        return [disc(level, kp) for disc, level in zip(self.discs, self.pyramid(image))]


def generator_gan_loss(fake: list[DiscriminatorOutput], weight: float = 1.0) -> Tensor:
    """LSGAN generator loss ``w * sum_scales mean (1 - D(fake))^2`` -> ()."""
    return weight * sum(((1.0 - out.logits) ** 2).mean() for out in fake)


def discriminator_gan_loss(real: list[DiscriminatorOutput], fake: list[DiscriminatorOutput],
                           weight: float = 1.0) -> Tensor:
    """LSGAN discriminator loss ``w * sum_scales mean [(1 - D(real))^2 + D(fake)^2]`` -> ().

    The caller runs the discriminator on a detached prediction for ``fake``.
    """
    return weight * sum(((1.0 - r.logits) ** 2 + f.logits**2).mean() for r, f in zip(real, fake))


def feature_matching_loss(real: list[DiscriminatorOutput], fake: list[DiscriminatorOutput],
                          weights: Sequence[float] = FM_WEIGHTS) -> Tensor:
    """``sum_scales sum_i w_i * mean |F_i(real) - F_i(fake)|`` with real features detached -> ()."""
    total = fake[0].logits.new_zeros(())
    for r, f in zip(real, fake):
        if len(weights) != len(f.features):
            raise ValueError(f"{len(weights)} feature-matching weights for {len(f.features)} discriminator blocks.")
        for w, fr, ff in zip(weights, r.features, f.features):
            if w != 0:
                total = total + w * (fr.detach() - ff).abs().mean()
    return total
