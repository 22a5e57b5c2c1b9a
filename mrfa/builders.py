"""Config -> modules: the one place where a config becomes networks."""
from __future__ import annotations

from torch import nn

from .config import ExperimentConfig, ModelConfig
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
