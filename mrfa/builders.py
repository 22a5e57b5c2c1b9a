"""Config -> modules: the one place where a config becomes networks, losses and optimisers.

Networks: :func:`build_model` (and its parts). Training: :func:`build_perceptual`, :func:`build_discriminator`,
:func:`parameter_groups` and :func:`build_optimizers` / :func:`build_schedulers` (the official recipe: one Adam
over the keypoint detector, decoder and dense motion, a second for the background predictor, a third for the
discriminator, MultiStepLR on epochs with gamma 0.1).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.optim.lr_scheduler import MultiStepLR

from .config import ExperimentConfig, ModelConfig, TrainConfig
from .losses.adversarial import MultiScaleDiscriminator
from .losses.perceptual import PerceptualLoss
from .nn.bg_motion import BGMotionPredictor
from .nn.dense_motion import DenseMotionNetwork
from .nn.dense_motion_tps import TPSDenseMotionNetwork
from .nn.generator import OcclusionAwareGenerator
from .nn.keypoint_fomm import FOMMKeypointDetector
from .nn.keypoint_mtia import MTIADetector
from .nn.keypoint_tps import TPSKeypointDetector
from .nn.mrfa import MRFA
from .nn.refiner import MotionRefiner

TPS_POINTS = 5


def build_kp_detector(m: ModelConfig) -> nn.Module:
    if m.prior == "mtia":
        c = m.mtia
        return MTIADetector(num_kp=m.num_kp, in_channels=m.num_channels, image_size=m.image_size,
                            stem_channels=c.stem_channels, layer1_blocks=c.layer1_blocks,
                            stage2_modules=c.stage2_modules, stage2_blocks=tuple(c.stage2_blocks),
                            stage2_channels=tuple(c.stage2_channels), stage3_modules=c.stage3_modules,
                            stage3_blocks=tuple(c.stage3_blocks), stage3_channels=tuple(c.stage3_channels),
                            patch_size=c.patch_size, dim=c.dim, depth=c.depth, heads=c.heads, mlp_ratio=c.mlp_ratio,
                            estimate_jacobian=c.estimate_jacobian)
    if m.prior == "fomm":
        c = m.fomm_detector
        return FOMMKeypointDetector(num_kp=m.num_kp, num_channels=m.num_channels, block_expansion=c.block_expansion,
                                    max_features=c.max_features, num_blocks=c.num_blocks, temperature=c.temperature,
                                    scale_factor=c.scale_factor, estimate_jacobian=c.estimate_jacobian)
    return TPSKeypointDetector(num_tps=m.tps.num_tps, num_channels=m.num_channels)


def build_dense_motion(m: ModelConfig) -> nn.Module:
    d = m.dense_motion
    common = dict(num_channels=m.num_channels, block_expansion=d.block_expansion, max_features=d.max_features,
                  num_blocks=d.num_blocks, scale_factor=d.scale_factor, kp_variance=d.kp_variance)
    if m.prior == "tpsm":
        return TPSDenseMotionNetwork(num_tps=m.tps.num_tps, **common)
    return DenseMotionNetwork(num_kp=m.num_kp, **common)


def build_model(cfg: ModelConfig | ExperimentConfig) -> MRFA:
    """Build the MRFA network described by ``cfg`` (an ExperimentConfig or its ``model`` part)."""
    m = cfg.model if isinstance(cfg, ExperimentConfig) else cfg
    generator = OcclusionAwareGenerator(num_channels=m.num_channels, block_expansion=m.generator.block_expansion,
                                        max_features=m.generator.max_features,
                                        num_down_blocks=m.generator.num_down_blocks)
    s, r = m.structure, m.refinement
    refiner = MotionRefiner(num_kp=m.num_kp, num_channels=m.num_channels,
                            grid_size=int(m.image_size * m.dense_motion.scale_factor),
                            level_channels=generator.channels, dim=s.dim, block_expansion=s.block_expansion,
                            max_features=s.max_features, num_blocks=s.num_blocks, structure_kp_variance=s.kp_variance,
                            corr_levels=r.corr_levels, corr_radius=r.corr_radius, context_dim=r.context_dim,
                            hidden_dim=r.hidden_dim, prior_only=r.prior_only, flow_init=r.flow_init,
                            final_warp=r.final_warp, corr_impl=r.corr_impl,
                            corr_mode=r.corr_mode)
    use_prior = r.prior_only or r.flow_init == "prior"
    model = MRFA(kp_detector=build_kp_detector(m), dense_motion=build_dense_motion(m) if use_prior else None,
                generator=generator, refiner=refiner,
                bg_predictor=BGMotionPredictor(num_channels=m.num_channels) if m.background else None,
                image_size=m.image_size, num_channels=m.num_channels, grid_scale=m.dense_motion.scale_factor,
                 kp_group=TPS_POINTS if m.prior == "tpsm" else 1)
    model.config = cfg if isinstance(cfg, ExperimentConfig) else ExperimentConfig(model=m)
    return model


# ---------------------------------------------------------------------------------------------- training
def build_perceptual(cfg: ExperimentConfig) -> PerceptualLoss:
    """The perceptual loss of ``loss.backbone``; ``'random'`` = random-weight VGG19 (tests only)."""
    lc = cfg.loss
    if lc.backbone == "random":
        return PerceptualLoss(backbone="vgg19", scales=lc.scales, layer_weights=lc.perceptual, weights_path="random")
    return PerceptualLoss(backbone=lc.backbone, scales=lc.scales, layer_weights=lc.perceptual,
                          weights_path=lc.vgg_weights)


def detector_num_kp(m: ModelConfig) -> int:
    """Keypoints the detector outputs (TPS prior: 5 per TPS transform)."""
    return m.tps.num_tps * TPS_POINTS if m.prior == "tpsm" else m.num_kp


def build_discriminator(cfg: ExperimentConfig) -> Optional[MultiScaleDiscriminator]:
    """The multi-scale PatchGAN of ``loss.adversarial`` (conditioned on the driving keypoints), or None."""
    a = cfg.loss.adversarial
    if not a.enabled:
        return None
    return MultiScaleDiscriminator(scales=a.scales, in_channels=cfg.model.num_channels,
                                   block_expansion=a.block_expansion, max_features=a.max_features,
                                   num_blocks=a.num_blocks, sn=a.spectral_norm, num_kp=detector_num_kp(cfg.model))


GENERATOR_GROUPS = ("kp_detector", "decoder", "dense_motion")  # the official generator optimiser's groups
CLIPPED_GROUPS = ("kp_detector", "dense_motion", "bg_predictor")  # official: not the decoder / generator


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


def build_optimizers(t: TrainConfig, groups: dict[str, list[nn.Parameter]],
                     discriminator: Optional[nn.Module] = None) -> dict[str, torch.optim.Optimizer]:
    """Adam (``t.lr``, ``t.betas``) per official optimiser: ``generator`` (named groups of
    :data:`GENERATOR_GROUPS`), ``bg_predictor`` and ``discriminator`` (each only when present)."""
    betas = (t.betas[0], t.betas[1])
    main = [{"params": groups[n], "name": n} for n in GENERATOR_GROUPS if n in groups]
    optimizers = {"generator": torch.optim.Adam(main, lr=t.lr, betas=betas)}
    if "bg_predictor" in groups:
        optimizers["bg_predictor"] = torch.optim.Adam(groups["bg_predictor"], lr=t.lr, betas=betas)
    if discriminator is not None:
        optimizers["discriminator"] = torch.optim.Adam(discriminator.parameters(), lr=t.lr, betas=betas)
    return optimizers


def build_schedulers(t: TrainConfig, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, MultiStepLR]:
    """One MultiStepLR per optimiser: the learning rate drops tenfold at each epoch of ``t.epoch_milestones``."""
    return {k: MultiStepLR(o, milestones=t.epoch_milestones, gamma=0.1) for k, o in optimizers.items()}
