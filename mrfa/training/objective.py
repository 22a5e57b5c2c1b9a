"""Training objective (paper Sec. 3.4 "Training losses"; official ``MRFA.forward(is_train=True)``).

``TrainingObjective(source, driving, epoch=..., transform=...)`` runs the model and returns a dict of
*weighted* loss terms plus the model output (the detectron2 / timm "loss dict" contract: the trainer sums
the values and logs each key). Terms, each present only when active in the config:

* ``perceptual``: multi-scale VGG perceptual loss of prediction vs driving (its per-layer weights live in the
  perceptual module);
* ``equivariance_value`` / ``equivariance_jacobian``: keypoint equivariance under a random affine + TPS
  transform of the driving frame (the jacobian term is skipped when its weight is 0 or the detector has no
  jacobians, e.g. the TPS prior);
* ``background``: ``w * mean|I - bg(s, d) @ bg(d, s)|`` when the model has a background predictor and
  ``epoch >= train.bg_start`` (celebvhq);
* ``generator_gan`` / ``feature_matching``: the optional adversarial terms (``loss.adversarial.enabled``).

The objective sees the config only as typed values: :class:`LossWeights` (the weight of every term),
:class:`Schedule` (background start, TPS dropout) and the equivariance ``TransformConfig``. The networks, the
perceptual loss and the discriminator come from :mod:`mrfa.builders`. The discriminator is *not* a submodule of
the objective (it has its own optimiser and its own DDP wrapper); ``DiscriminatorObjective`` gives its loss dict
``{'discriminator_gan'}``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from mrfa.config import ExperimentConfig, TransformConfig
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


@dataclass(frozen=True)
class LossWeights:
    """The weight of each generator-side term (0 switches a term off; the defaults live in ``LossConfig``). The
    perceptual per-layer weights belong to the perceptual module; ``generator_gan`` and ``feature_matching``
    (one weight per discriminator block) apply only with a discriminator."""

    equivariance_value: float
    equivariance_jacobian: float
    background: float
    generator_gan: float
    feature_matching: tuple[float, ...]

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> LossWeights:
        lc = cfg.loss
        return cls(equivariance_value=lc.equivariance_value, equivariance_jacobian=lc.equivariance_jacobian,
                   background=lc.background, generator_gan=lc.adversarial.generator_gan,
                   feature_matching=tuple(lc.adversarial.feature_matching))


@dataclass(frozen=True)
class Schedule:
    """What changes with the epoch: the background predictor is used from ``bg_start``; the TPS prior drops
    components with a probability that grows from ``dropout_startp`` by ``dropout_maxp`` per
    ``dropout_inc_epoch`` epochs, capped at ``dropout_maxp``, until ``dropout_epoch`` (``tps_dropout`` False:
    never, the other priors)."""

    bg_start: int
    tps_dropout: bool
    dropout_epoch: int
    dropout_maxp: float
    dropout_startp: float
    dropout_inc_epoch: int

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> Schedule:
        t = cfg.train
        return cls(bg_start=t.bg_start, tps_dropout=cfg.model.prior == "tpsm", dropout_epoch=t.dropout_epoch,
                   dropout_maxp=t.dropout_maxp, dropout_startp=t.dropout_startp,
                   dropout_inc_epoch=t.dropout_inc_epoch)

    def tps_dropout_p(self, epoch: int) -> float:
        """TPS-prior component dropout of an epoch (official schedule; 0 for the other priors).

        ``p = min(epoch / dropout_inc_epoch * dropout_maxp + dropout_startp, dropout_maxp)`` while
        ``epoch < dropout_epoch``, else 0.
        """
        if not self.tps_dropout or epoch >= self.dropout_epoch:
            return 0.0
        return min(epoch / self.dropout_inc_epoch * self.dropout_maxp + self.dropout_startp, self.dropout_maxp)


def _float_kp(kp: Keypoints) -> Keypoints:
    return Keypoints(kp.value.float(), None if kp.jacobian is None else kp.jacobian.float())


class TrainingObjective(nn.Module):
    """Model + generator-side losses.

    Args:
        model: the MRFA network (trained).
        perceptual: frozen perceptual loss module (``mrfa.builders.build_perceptual``).
        weights: the weight of every other term.
        schedule: background start and TPS dropout by epoch.
        transform: the distribution of the equivariance transform (official: affine + TPS).
        discriminator: the adversarial discriminator, or None. It is held outside the module tree.

    Forward: ``source``, ``driving`` [B, 3, H, W] in [0, 1], ``epoch`` (bg_start / TPS dropout), ``transform``
    (the equivariance transform for this batch, None when the equivariance terms are off) ->
    ``(losses: dict[str, () Tensor], output: MRFAOutput)``.
    """

    def __init__(self, model: MRFA, perceptual: PerceptualLoss, weights: LossWeights, schedule: Schedule,
                 transform: TransformConfig, *, discriminator: Optional[MultiScaleDiscriminator] = None) -> None:
        super().__init__()
        self.model = model
        self.perceptual = perceptual
        self.weights, self.schedule, self.transform = weights, schedule, transform
        self._discriminator = (discriminator,)  # a tuple: not registered as a submodule

    @property
    def discriminator(self) -> Optional[MultiScaleDiscriminator]:
        return self._discriminator[0]

    def loss_names(self) -> list[str]:
        """The keys ``forward`` returns for this config (constant over a run)."""
        w, m = self.weights, self.model
        names = ["perceptual"]
        if self.uses_transform():
            names.append("equivariance_value")
            if self.uses_jacobian():
                names.append("equivariance_jacobian")
        if m.bg_predictor is not None and w.background != 0:
            names.append("background")
        if self.discriminator is not None:
            names += ["generator_gan", "feature_matching"]
        return names

    def uses_transform(self) -> bool:
        """True when an equivariance transform must be drawn for every batch."""
        return self.weights.equivariance_value != 0 or self.uses_jacobian()

    def uses_jacobian(self) -> bool:
        """Whether the jacobian equivariance term applies: weighted, and the model's detector has jacobians."""
        return self.weights.equivariance_jacobian != 0 and self.model.has_jacobian

    def sample_transform(self, batch: int, generator: Optional[torch.Generator],
                         device: torch.device) -> Optional[RandomTPSTransform]:
        """Draw the batch's random transform (official distribution) from ``generator``; None if unused."""
        if not self.uses_transform():
            return None
        t = self.transform
        return RandomTPSTransform.sample(batch, sigma_affine=t.sigma_affine, sigma_tps=t.sigma_tps,
                                         points_tps=t.points_tps, generator=generator, device=device)

    def forward(self, source: Tensor, driving: Tensor, *, epoch: int = 0,
                transform: Optional[RandomTPSTransform] = None) -> tuple[dict[str, Tensor], MRFAOutput]:
        model, w = self.model, self.weights
        use_bg = model.bg_predictor is not None and epoch >= self.schedule.bg_start
        out = model(source, driving, dropout_p=self.schedule.tps_dropout_p(epoch), use_background=use_bg)
        kp_driving, bg_param = out.kp_driving, out.bg_param
        losses: dict[str, Tensor] = {"perceptual": self.perceptual(out.prediction, driving).loss}

        if self.uses_transform():
            if transform is None:
                raise ValueError("the equivariance losses are enabled but no transform was given")
            frame = transform.transform_frame(driving)  # [B, 3, H, W]
            kp_transformed = model.kp_detector(frame)
            with torch.autocast(device_type=source.device.type, enabled=False):
                eq = equivariance_losses(_float_kp(kp_driving), _float_kp(kp_transformed), transform,
                                         weight_value=w.equivariance_value,
                                         weight_jacobian=w.equivariance_jacobian if self.uses_jacobian() else 0.0)
            losses["equivariance_value"] = eq["equivariance_value"]
            if self.uses_jacobian():
                losses["equivariance_jacobian"] = eq["equivariance_jacobian"]
        if model.bg_predictor is not None and w.background != 0:
            if use_bg:
                reverse = model.bg_predictor(driving, source)  # [B, 3, 3]
                losses["background"] = background_loss(bg_param.float(), reverse.float(), weight=w.background)
            else:  # before bg_start: a zero that keeps the key set constant
                losses["background"] = source.new_zeros((), dtype=torch.float32)

        disc = self.discriminator
        if disc is not None:
            kp = kp_driving.value.detach()
            fake = disc(out.prediction, kp)
            # The real batch passes the discriminator here (no graph: feature matching only) and again in the
            # discriminator step (with its graph). Reusing one pass would keep the real batch's discriminator graph
            # alive through the generator's backward, and under DDP a discriminator forward must be followed by
            # that discriminator's own backward in the same step; the extra forward is the cheaper price.
            with torch.no_grad():
                real = disc(driving, kp)
            losses["generator_gan"] = generator_gan_loss(fake, w.generator_gan)
            losses["feature_matching"] = feature_matching_loss(real, fake, w.feature_matching)
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


def build_objective(cfg: ExperimentConfig, model: MRFA, perceptual: PerceptualLoss, *,
                    discriminator: Optional[MultiScaleDiscriminator] = None) -> TrainingObjective:
    """The objective of ``cfg``: its loss weights, schedule and equivariance transform around ``model``."""
    return TrainingObjective(model, perceptual, LossWeights.from_config(cfg), Schedule.from_config(cfg),
                             cfg.loss.transform, discriminator=discriminator)
