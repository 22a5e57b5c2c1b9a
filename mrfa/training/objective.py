"""Training objective (paper Sec. 3.4 "Training losses"; official ``MRFA.forward(is_train=True)``).

``TrainingObjective(source, driving, epoch=..., transform=...)`` runs the model and returns a dict of
*weighted* loss terms plus the model output (the detectron2 / timm "loss dict" contract: the trainer sums
the values and logs each key). Terms, each present only when active in the config:

* ``perceptual``: multi-scale VGG perceptual loss of prediction vs driving (weights ``loss.perceptual``);
* ``equivariance_value`` / ``equivariance_jacobian``: keypoint equivariance under a random affine + TPS
  transform of the driving frame (the jacobian term is skipped when its weight is 0 or the detector has no
  jacobians, e.g. the TPS prior);
* ``background``: ``w * mean|I - bg(s, d) @ bg(d, s)|`` when the model has a background predictor and
  ``epoch >= train.bg_start`` (celebvhq);
* ``generator_gan`` / ``feature_matching``: the optional adversarial terms (``loss.adversarial.enabled``).

The discriminator is *not* a submodule of the objective (it has its own optimiser and its own DDP wrapper);
``DiscriminatorObjective`` gives its loss dict ``{'discriminator_gan'}``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from mrfa.config import ExperimentConfig
from mrfa.losses.adversarial import (
    MultiScaleDiscriminator,
    discriminator_gan_loss,
    feature_matching_loss,
    generator_gan_loss,
)
from mrfa.losses.background import background_loss
from mrfa.losses.equivariance import RandomTPSTransform, equivariance_losses
from mrfa.losses.perceptual import PerceptualLoss
from mrfa.nn.mrfa import MRFA
from mrfa.types import Keypoints, MRFAOutput


def tps_dropout_p(cfg: ExperimentConfig, epoch: int) -> float:
    """TPS-prior component dropout of an epoch (official schedule; 0 for the other priors).

    ``p = min(epoch / dropout_inc_epoch * dropout_maxp + dropout_startp, dropout_maxp)`` while
    ``epoch < dropout_epoch``, else 0.
    """
    t = cfg.train
    if cfg.model.prior != "tpsm" or epoch >= t.dropout_epoch:
        return 0.0
    return min(epoch / t.dropout_inc_epoch * t.dropout_maxp + t.dropout_startp, t.dropout_maxp)


def build_perceptual(cfg: ExperimentConfig) -> PerceptualLoss:
    """The perceptual loss of ``loss.backbone``; ``'random'`` = random-weight VGG19 (tests only)."""
    lc = cfg.loss
    if lc.backbone == "random":
        return PerceptualLoss(backbone="vgg19", scales=lc.scales, layer_weights=lc.perceptual, weights_path="random")
    return PerceptualLoss(backbone=lc.backbone, scales=lc.scales, layer_weights=lc.perceptual,
                          weights_path=lc.vgg_weights)


def detector_num_kp(cfg: ExperimentConfig) -> int:
    """Keypoints the detector outputs (TPS prior: 5 per TPS transform)."""
    m = cfg.model
    return m.tps.num_tps * 5 if m.prior == "tpsm" else m.num_kp


def build_discriminator(cfg: ExperimentConfig) -> Optional[MultiScaleDiscriminator]:
    """The multi-scale PatchGAN of ``loss.adversarial`` (conditioned on the driving keypoints), or None."""
    a = cfg.loss.adversarial
    if not a.enabled:
        return None
    return MultiScaleDiscriminator(scales=a.scales, in_channels=cfg.model.num_channels,
                                   block_expansion=a.block_expansion, max_features=a.max_features,
                                   num_blocks=a.num_blocks, sn=a.spectral_norm, num_kp=detector_num_kp(cfg))


def _float_kp(kp: Keypoints) -> Keypoints:
    return Keypoints(kp.value.float(), None if kp.jacobian is None else kp.jacobian.float())


class TrainingObjective(nn.Module):
    """Model + generator-side losses.

    Args:
        model: the MRFA network (trained).
        perceptual: frozen perceptual loss module.
        cfg: the experiment config (loss weights, bg_start).
        discriminator: the adversarial discriminator, or None. It is held outside the module tree.

    Forward: ``source``, ``driving`` [B, 3, H, W] in [0, 1], ``epoch`` (bg_start / TPS dropout), ``transform``
    (the equivariance transform for this batch, None when the equivariance terms are off) ->
    ``(losses: dict[str, () Tensor], output: MRFAOutput)``.
    """

    def __init__(self, model: MRFA, perceptual: PerceptualLoss, cfg: ExperimentConfig, *,
                 discriminator: Optional[MultiScaleDiscriminator] = None) -> None:
        super().__init__()
        self.model = model
        self.perceptual = perceptual
        self.cfg = cfg
        self._discriminator = (discriminator,)  # a tuple: not registered as a submodule

    @property
    def discriminator(self) -> Optional[MultiScaleDiscriminator]:
        return self._discriminator[0]

    def loss_names(self) -> list[str]:
        """The keys ``forward`` returns for this config (constant over a run)."""
        lc, m = self.cfg.loss, self.model
        names = ["perceptual"]
        if self.uses_transform():
            names.append("equivariance_value")
            if self.uses_jacobian():
                names.append("equivariance_jacobian")
        if m.bg_predictor is not None and lc.background != 0:
            names.append("background")
        if self.discriminator is not None:
            names += ["generator_gan", "feature_matching"]
        return names

    def uses_transform(self) -> bool:
        """True when an equivariance transform must be drawn for every batch."""
        return self.cfg.loss.equivariance_value != 0 or self.uses_jacobian()

    def uses_jacobian(self) -> bool:
        """Whether the jacobian equivariance term applies: weighted, and the model's detector has jacobians."""
        return self.cfg.loss.equivariance_jacobian != 0 and self.model.has_jacobian

    def sample_transform(self, batch: int, generator: Optional[torch.Generator],
                         device: torch.device) -> Optional[RandomTPSTransform]:
        """Draw the batch's random transform (official distribution) from ``generator``; None if unused."""
        if not self.uses_transform():
            return None
        t = self.cfg.loss.transform
        return RandomTPSTransform.sample(batch, sigma_affine=t.sigma_affine, sigma_tps=t.sigma_tps,
                                         points_tps=t.points_tps, generator=generator, device=device)

    def forward(self, source: Tensor, driving: Tensor, *, epoch: int = 0,
                transform: Optional[RandomTPSTransform] = None) -> tuple[dict[str, Tensor], MRFAOutput]:
        model, lc = self.model, self.cfg.loss
        use_bg = model.bg_predictor is not None and epoch >= self.cfg.train.bg_start
        out = model(source, driving, dropout_p=tps_dropout_p(self.cfg, epoch), use_background=use_bg)
        kp_driving, bg_param = out.kp_driving, out.bg_param
        losses: dict[str, Tensor] = {"perceptual": self.perceptual(out.prediction, driving).loss}

        if self.uses_transform():
            if transform is None:
                raise ValueError("the equivariance losses are enabled but no transform was given")
            frame = transform.transform_frame(driving)  # [B, 3, H, W]
            kp_transformed = model.kp_detector(frame)
            with torch.autocast(device_type=source.device.type, enabled=False):
                eq = equivariance_losses(_float_kp(kp_driving), _float_kp(kp_transformed), transform,
                                         weight_value=lc.equivariance_value,
                                         weight_jacobian=lc.equivariance_jacobian if self.uses_jacobian() else 0.0)
            losses["equivariance_value"] = eq["equivariance_value"]
            if self.uses_jacobian():
                losses["equivariance_jacobian"] = eq["equivariance_jacobian"]
        if model.bg_predictor is not None and lc.background != 0:
            if use_bg:
                reverse = model.bg_predictor(driving, source)  # [B, 3, 3]
                losses["background"] = background_loss(bg_param.float(), reverse.float(), weight=lc.background)
            else:  # before bg_start: a zero that keeps the key set constant
                losses["background"] = source.new_zeros((), dtype=torch.float32)

        disc = self.discriminator
        if disc is not None:
            a = lc.adversarial
            kp = kp_driving.value.detach()
            fake = disc(out.prediction, kp)
            # The real batch passes the discriminator here (no graph: feature matching only) and again in the
            # discriminator step (with its graph). Reusing one pass would keep the real batch's discriminator graph
            # alive through the generator's backward, and under DDP a discriminator forward must be followed by
            # that discriminator's own backward in the same step; the extra forward is the cheaper price.
            with torch.no_grad():
                real = disc(driving, kp)
            losses["generator_gan"] = generator_gan_loss(fake, a.generator_gan)
            losses["feature_matching"] = feature_matching_loss(real, fake, a.feature_matching)
        return {k: v.float() for k, v in losses.items()}, out


class DiscriminatorObjective(nn.Module):
    """LSGAN discriminator loss on real ``driving`` vs the detached ``prediction`` (FOMM vox-adv recipe).

    Forward: ``driving``, ``prediction`` [B, 3, H, W], ``kp`` [B, K, 2] (driving keypoints) ->
    ``{'discriminator_gan': ()}``.
    """

    def __init__(self, discriminator: MultiScaleDiscriminator, weight: float) -> None:
        super().__init__()
        self.discriminator = discriminator
        self.weight = float(weight)

    def forward(self, driving: Tensor, prediction: Tensor, kp: Tensor) -> dict[str, Tensor]:
        real = self.discriminator(driving, kp.detach())
        fake = self.discriminator(prediction.detach(), kp.detach())
        return {"discriminator_gan": discriminator_gan_loss(real, fake, self.weight).float()}


def parameter_groups(model: MRFA) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters by part: ``kp_detector``, ``decoder`` (refiner + generator; the official
    ``decoder`` = RaftFlow), ``dense_motion`` and ``bg_predictor`` (each only when present).

    Raises:
        ValueError: a trainable parameter belongs to none of the parts (the optimiser would miss it).
    """
    parts = {"kp_detector": [model.kp_detector], "decoder": [model.refiner, model.generator],
             "dense_motion": [model.dense_motion], "bg_predictor": [model.bg_predictor]}
    groups = {name: [p for mod in mods if mod is not None for p in mod.parameters() if p.requires_grad]
              for name, mods in parts.items()}
    groups = {k: v for k, v in groups.items() if v}
    covered = {id(p) for ps in groups.values() for p in ps}
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in covered]
    if missing:
        raise ValueError(f"trainable parameters outside the optimiser groups: {missing[:5]}")
    return groups


CLIPPED_GROUPS = ("kp_detector", "dense_motion", "bg_predictor")  # official: not the decoder / generator
