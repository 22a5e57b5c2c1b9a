"""Motion refinement (the official ``RaftFlow`` minus its generator).

Coarse-to-fine over the generator levels (8..256 px at 256): each level restarts from the resized prior
flow plus the accumulated residuals of all coarser levels (Eq. 7), looks up the structure correlation
pyramid around the current flow, and predicts one flow and one occlusion-logit residual with the shared
updater. Warped features at every level go to the generator.
"""
from __future__ import annotations

from typing import Literal, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.corr_lookup import corr_lookup, corr_lookup_onthefly
from ..ops.correlation import CorrelationState, corr_volume, correlation_state
from ..ops.grid import coords_grid, grid_to_pixel_flow, pixel_flow_to_grid, resize, resize_grid, up2, warp
from ..types import DenseMotion
from .blocks import kp2gaussian
from .flow_updater import MotionEncoder, RefineHead
from .intermediates import current, record
from .structure_encoder import StructureEncoder


class Refinement(NamedTuple):
    """Per-level outputs (lists coarse -> fine)."""

    warped: list[Tensor]  # [B, C_i, r, r] features for the generator
    occlusion: list[Tensor]  # [B, 1, r, r] visibility in [0, 1]
    coarse: Optional[list[Tensor]]  # prior-warped features (coarse branch); None in prior-only mode
    flows: list[Tensor]  # [B, 2, r, r] pixel flows: refined per level (prior-only: the resized prior)
    flows_in: list[Tensor]  # [B, 2, r, r] flows entering each level
    warp_img: Tensor  # [B, 3, H, W] source warped to the driving frame


class SourceStructure(NamedTuple):
    """Source-side tensors of the refinement that do not depend on the driving frame."""

    key: Tensor  # [B, dim, g, g]
    struct_in: Tensor
    hourglass: Tensor


class MotionRefiner(nn.Module):
    """Structure encoders + correlation pyramid + shared flow updater.

    Args:
        num_kp: structure keypoints K (10; TPS groups of 5 are averaged before).
        num_channels: image channels (the source structure input adds the downsampled image).
        grid_size: motion grid g = image size * dense-motion scale (64 at 256 px).
        level_channels: generator feature channels per level, coarse to fine.
        prior_only: no refinement; warps with the resized prior (the paper's prior baseline).
        flow_init: "prior" (official) or "correlation" (soft-argmax of the volume over source coordinates;
            occlusion logits then start at 0; our option, not in the official code).
        final_warp: "prior_flow" (official: the flow entering the last level) or "refined".
    """

    def __init__(self, *, num_kp: int, num_channels: int, grid_size: int, level_channels: list[int],
                 dim: int = 256, block_expansion: int = 32, max_features: int = 512, num_blocks: int = 5,
                 structure_kp_variance: float = 0.1, corr_levels: int = 2, corr_radius: int = 3,
                 context_dim: int = 192, hidden_dim: int = 128, prior_only: bool = False,
                 flow_init: Literal["prior", "correlation"] = "prior",
                 final_warp: Literal["prior_flow", "refined"] = "prior_flow",
                 corr_impl: Literal["auto", "cuda", "triton", "torch"] = "torch",
                 corr_mode: Literal["volume", "onthefly"] = "volume") -> None:
        super().__init__()
        self.num_kp, self.grid_size, self.prior_only = num_kp, grid_size, prior_only
        self.flow_init, self.final_warp, self.corr_impl = flow_init, final_warp, corr_impl
        self.corr_mode = corr_mode
        self.corr_levels, self.corr_radius = corr_levels, corr_radius
        self.kp_variance = structure_kp_variance
        # inference option (paper Table 6): refine only the first N (coarsest) levels; the finer ones warp with the
        # flow they receive (prior + coarser residuals). None refines every level (official).
        self.refine_levels: Optional[int] = None
        # inference option: the dtype of the correlation matmul's inputs (None: fp32, official); the volume is fp32
        self.corr_dtype: Optional[torch.dtype] = None
        if prior_only:
            return
        hg = dict(dim=dim, block_expansion=block_expansion, max_features=max_features, num_blocks=num_blocks)
        self.pos_embedding = nn.Parameter(torch.empty(1, num_kp, grid_size, grid_size))
        nn.init.trunc_normal_(self.pos_embedding, std=0.02)
        self.driving = StructureEncoder(in_features=num_kp, **hg)
        self.source = StructureEncoder(in_features=num_kp + num_channels, **hg)
        self.motion_encoder = MotionEncoder(corr_channels=corr_levels * (2 * corr_radius + 1) ** 2,
                                            hidden_dim=hidden_dim)
        self.refine_head = RefineHead(context_dim=context_dim, hidden_dim=hidden_dim)
        self.to_context = nn.ModuleList(nn.Conv2d(c, context_dim, 1) for c in level_channels)

    # ------------------------------------------------------------------ structure
    def structure_input(self, kp: Tensor) -> Tensor:
        """G(kp; var 0.1) + learned positional embedding: [B, K, g, g]."""
        g = self.grid_size
        return kp2gaussian(kp, (g, g), self.kp_variance) + self.pos_embedding

    def encode_source(self, kp_source: Tensor, img_down: Tensor) -> SourceStructure:
        struct_in = torch.cat([self.structure_input(kp_source), img_down], dim=1)  # [B, K+C, g, g]
        hourglass, key = self.source(struct_in)
        return SourceStructure(key=key, struct_in=struct_in, hourglass=hourglass)

    # ------------------------------------------------------------------ lookup
    def _lookup(self, pyramids: CorrelationState, flow: Tensor) -> Tensor:
        """Correlation features [B, L*(2r+1)^2, r, r] around ``flow``.

        Grids up to the motion grid g look up the volume pooled over the driving grid by f = g / r; finer
        grids look up at g and resize the features. ``pyramids`` holds everything prebuilt for this forward.
        """
        g, r, b = self.grid_size, flow.shape[-1], flow.shape[0]
        if r <= g:
            f = g // r  # driving-side pooling factor
            centre = (flow + coords_grid(b, r, r, device=flow.device, dtype=flow.dtype)) * f
        else:
            f = 1
            centre = resize(flow, g) * (g / r) + coords_grid(b, g, g, device=flow.device, dtype=flow.dtype)
        if pyramids.mode == "onthefly":
            corr = corr_lookup_onthefly(pyramids.queries[f], pyramids.keys, centre, self.corr_radius)
        else:
            corr = corr_lookup(pyramids.pyramids[f], centre, self.corr_radius, impl=self.corr_impl)
        return corr if r <= g else resize(corr, r)

    # ------------------------------------------------------------------ forward
    def forward(self, features: list[Tensor], source: Tensor, kp_driving: Tensor, dense: Optional[DenseMotion],
                source_structure: Optional[SourceStructure] = None, img_down: Optional[Tensor] = None,
                kp_source: Optional[Tensor] = None) -> Refinement:
        """Refine the prior over all generator levels.

        Args:
            features: generator.encode(source), coarse to fine.
            source: [B, C, H, W] full-resolution source (for the final image warp).
            kp_driving: [B, K, 2] structure keypoints of the driving frame.
            dense: the prior (None only with flow_init="correlation").
            source_structure: cached ``encode_source`` output, or computed from kp_source + img_down.
        """
        if self.prior_only:
            return self._prior_only(features, source, dense)
        if source_structure is None:
            source_structure = self.encode_source(kp_source, img_down)
        drv_in = self.structure_input(kp_driving)
        drv_hourglass, query = self.driving(drv_in)
        # the full volume is only needed by the correlation initialisation; lookups use prebuilt pyramids
        volume = corr_volume(query, source_structure.key) if self.flow_init == "correlation" else None
        trace = current()
        if trace is not None:
            trace.update(struct_src_in=source_structure.struct_in, struct_src_hourglass=source_structure.hourglass,
                         key_src=source_structure.key, struct_drv_in=drv_in, struct_drv_hourglass=drv_hourglass,
                         query_drv=query, levels=[])

        init_flow, init_occ, deformation = self._initial_motion(volume, dense)
        resolutions = [f.shape[-1] for f in features]
        pyramids = correlation_state(query, source_structure.key, {max(self.grid_size // r, 1) for r in resolutions},
                                     self.corr_levels, self.corr_mode, self.corr_dtype)  # once per forward
        flow = resize(init_flow, resolutions[0]) * (resolutions[0] / self.grid_size)
        occ_in = resize(init_occ, resolutions[0])
        acc_flow = acc_occ = None
        out = Refinement([], [], [], [], [], source)
        for i, (feat, r) in enumerate(zip(features, resolutions)):
            if self.refine_levels is not None and i >= self.refine_levels:  # not refined: warp with the flow in
                delta, delta_occ = torch.zeros_like(flow), torch.zeros_like(occ_in)
                corr = motion = warped_pre = context = hidden = None
            else:
                corr = self._lookup(pyramids, flow)
                motion = self.motion_encoder(flow, corr)
                warped_pre = warp(feat, flow)
                context = self.to_context[i](warped_pre)
                delta, delta_occ, hidden = self.refine_head(motion, F.relu(context))
            flow_ref = flow + delta
            occ_logit = occ_in + delta_occ
            occ = torch.sigmoid(occ_logit)
            warped = warp(feat, flow_ref)
            coarse = F.grid_sample(feat, resize_grid(deformation, r), align_corners=False)
            for lst, v in zip(out[:5], (warped, occ, coarse, flow_ref, flow)):
                lst.append(v)
            if trace is not None:
                trace["levels"].append(dict(
                    resolution=r, flow_in=flow, corr_lookup=corr, motion_feature=motion, warped_feature_pre=warped_pre,
                    context_pre_relu=context, refine_hidden=hidden, delta_flow=delta, delta_occlusion_logit=delta_occ,
                    flow_refined=flow_ref, occlusion_logit=occ_logit, occlusion=occ, warped_feature=warped,
                    coarse_occlusion=torch.sigmoid(resize(init_occ, r)), coarse_warped_feature=coarse))
            if i + 1 < len(features):
                # Eq. 7: restart from the resized prior plus all coarser residuals carried up by up2.
                d, o = up2(delta) * 2, up2(delta_occ)
                acc_flow = d if acc_flow is None else d + up2(acc_flow) * 2
                acc_occ = o if acc_occ is None else o + up2(acc_occ)
                r_next = resolutions[i + 1]
                flow = resize(init_flow, r_next) * (r_next / self.grid_size) + acc_flow
                occ_in = resize(init_occ, r_next) + acc_occ
        final_flow = out.flows[-1] if self.final_warp == "refined" else out.flows_in[-1]
        warp_img = warp(source, final_flow)
        record(warp_img=warp_img)
        return out._replace(warp_img=warp_img)

    def _initial_motion(self, volume: Optional[Tensor], dense: Optional[DenseMotion]) -> tuple[Tensor, Tensor, Tensor]:
        """(pixel flow [B,2,g,g], occlusion logits [B,1,g,g], normalised grid [B,g,g,2]) to start from."""
        if self.flow_init == "prior":
            return grid_to_pixel_flow(dense.deformation), dense.occlusion, dense.deformation
        b, g = volume.shape[0], self.grid_size
        attn = volume.reshape(b, g * g, g * g).softmax(dim=-1)  # driving -> distribution over source pixels
        coords = coords_grid(1, g, g, device=volume.device, dtype=volume.dtype).reshape(2, g * g)
        target = torch.matmul(attn, coords.t()).view(b, g, g, 2).permute(0, 3, 1, 2)  # [B, 2, g, g]
        flow = target - coords_grid(b, g, g, device=volume.device, dtype=volume.dtype)
        return flow, torch.zeros_like(flow[:, :1]), pixel_flow_to_grid(flow)

    def _prior_only(self, features: list[Tensor], source: Tensor, dense: DenseMotion) -> Refinement:
        out = Refinement([], [], None, [], [], source)
        levels = []
        for feat in features:
            r = feat.shape[-1]
            grid = resize_grid(dense.deformation, r)
            occ_logit = resize(dense.occlusion, r)
            warped = F.grid_sample(feat, grid, align_corners=False)
            flow = grid_to_pixel_flow(grid)
            for lst, v in zip((out.warped, out.occlusion, out.flows, out.flows_in),
                              (warped, torch.sigmoid(occ_logit), flow, flow)):
                lst.append(v)
            levels.append(dict(resolution=r, flow_in=flow, occlusion_logit=occ_logit, occlusion=out.occlusion[-1],
                               warped_feature=warped))
        warp_img = F.grid_sample(source, resize_grid(dense.deformation, source.shape[-1]), align_corners=False)
        record(levels=levels, warp_img=warp_img)
        return out._replace(warp_img=warp_img)
