"""MRFA: keypoint prior + structure-correlation motion refinement + occlusion-aware generator.

Composes injected parts (built from a config by ``mrfa.builders.build_model``):
``kp_detector`` (MTIA / FOMM / TPS), ``dense_motion`` (the local-affine or TPS prior),
optional ``bg_predictor``, ``refiner`` (structure encoders, correlation, shared updater) and
``generator`` (encode / decode U-Net).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

from torch import Tensor, nn

from ..ops.grid import AntiAliasInterpolation2d
from ..types import Keypoints, MRFAOutput
from .generator import OcclusionAwareGenerator
from .intermediates import current, paused, scope
from .refiner import MotionRefiner, SourceStructure
from .relative_motion import movement_scale, normalize_kp


class SourceEncoding(NamedTuple):
    """Everything about the source image that does not depend on the driving frame (cache it per video)."""

    source: Tensor  # [B, 3, H, W]
    kp: Keypoints
    features: list  # generator.encode(source), coarse to fine
    structure: Optional[SourceStructure]  # None in prior-only mode
    prior_input: Optional[Tensor] = None  # [B, 3, h, w] the prior's blurred, downsampled source (None: no prior)


class MRFA(nn.Module):
    """The MRFA network.

    Args:
        kp_detector: image [B, C, H, W] -> Keypoints.
        dense_motion: prior network ``(source, kp_driving, kp_source, bg_param, dropout_p) -> DenseMotion``,
            or None when the refiner initialises from the correlation volume.
        generator: OcclusionAwareGenerator.
        refiner: MotionRefiner.
        bg_predictor: ``(source, driving) -> [B, 3, 3]`` background affine, or None.
        image_size: H = W the network is defined for; num_channels: C.
        kp_group: TPS prior: keypoints per TPS transform, averaged for the structure encoders (1 = none).
    """

    def __init__(self, *, kp_detector: nn.Module, dense_motion: Optional[nn.Module],
                 generator: OcclusionAwareGenerator, refiner: MotionRefiner, bg_predictor: Optional[nn.Module] = None,
                 image_size: int = 256, num_channels: int = 3, grid_scale: float = 0.25, kp_group: int = 1) -> None:
        super().__init__()
        self.kp_detector = kp_detector
        self.dense_motion = dense_motion
        self.bg_predictor = bg_predictor
        self.generator = generator
        self.refiner = refiner
        self.down = AntiAliasInterpolation2d(num_channels, grid_scale)
        self.image_size, self.num_channels, self.kp_group = image_size, num_channels, kp_group

    # ------------------------------------------------------------------ checks
    @property
    def has_jacobian(self) -> bool:
        """Whether the keypoint detector predicts jacobians (local affine prior) or plain points (TPS)."""
        return bool(getattr(self.kp_detector, "has_jacobian", False))

    def check_image(self, x: Tensor, name: str) -> None:
        """Raise one clear ValueError unless ``x`` is a float [B, C, size, size] tensor."""
        want = f"[B, {self.num_channels}, {self.image_size}, {self.image_size}]"
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape {want}, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor with values in [0, 1], got dtype {x.dtype} "
                             f"(convert uint8 images with x.float() / 255)")
        if x.dim() != 4 or x.shape[1] != self.num_channels or tuple(x.shape[-2:]) != (self.image_size,) * 2:
            raise ValueError(f"{name} must have shape {want} for this model, got {list(x.shape)} "
                             f"(resize inputs to {self.image_size}x{self.image_size})")

    # ------------------------------------------------------------------ parts
    def structure_kp(self, kp: Keypoints) -> Tensor:
        """Keypoints fed to the structure encoders: TPS groups averaged, [B, K, 2]."""
        v = kp.value
        if self.kp_group == 1:
            return v
        return v.view(v.shape[0], -1, self.kp_group, 2).mean(2)

    def encode_source(self, source: Tensor, kp_source: Optional[Keypoints] = None) -> SourceEncoding:
        """Everything that depends on the source only (computed once per video): detector keypoints, generator
        features, source structure and the prior's blurred source."""
        with paused():
            kp = self.kp_detector(source) if kp_source is None else kp_source
        features = self.generator.encode(source)
        structure = None
        if not self.refiner.prior_only:
            structure = self.refiner.encode_source(self.structure_kp(kp), self.down(source))
        prior_input = self.dense_motion.prepare_source(source) if self.dense_motion is not None else None
        return SourceEncoding(source=source, kp=kp, features=features, structure=structure, prior_input=prior_input)

    def generate(self, enc: SourceEncoding, kp_driving: Keypoints, bg_param: Optional[Tensor] = None,
                 dropout_p: float = 0.0) -> MRFAOutput:
        """Render the source encoding with the driving keypoints: the one rendering path of the model (the
        training objective, reconstruction, reenactment and the visualisation all end here)."""
        source = enc.source
        dense = None
        if self.dense_motion is not None:
            with paused():
                dense = self.dense_motion(source, kp_driving, enc.kp, bg_param=bg_param, dropout_p=dropout_p,
                                          prior_input=enc.prior_input)
        trace = current()
        if trace is not None:
            trace["img_down"] = self.down(source)
            trace["dense_motion"] = dense._asdict() if dense is not None else None
        with scope("decoder") as dec_trace:
            if dec_trace is not None:
                dec_trace["gen_features"] = enc.features
            ref = self.refiner(enc.features, source, self.structure_kp(kp_driving), dense,
                               source_structure=enc.structure)
            prediction = self.generator.decode(ref.warped, ref.occlusion, ref.coarse, ref.warp_img)
        if trace is not None:
            trace["prediction"] = prediction
        return MRFAOutput(prediction=prediction, kp_source=enc.kp, kp_driving=kp_driving, flows=ref.flows,
                          occlusions=ref.occlusion, warped_image=ref.warp_img,
                          deformation=dense.deformation if dense is not None else None,
                          occlusion_prior=dense.occlusion if dense is not None else None, bg_param=bg_param)

    # ------------------------------------------------------------------ public API
    def forward(self, source: Tensor, driving: Tensor, *, kp_source: Optional[Keypoints] = None,
                kp_driving: Optional[Keypoints] = None, dropout_p: float = 0.0,
                use_background: bool = True) -> MRFAOutput:
        """Reconstruct ``driving`` from ``source`` (both [B, C, H, W] in [0, 1]).

        ``kp_source`` / ``kp_driving`` override the detector (used by the parity tests); ``dropout_p`` is the
        TPS prior's training-time component dropout; ``use_background=False`` leaves the background motion out
        (the training schedule's ``bg_start``). Intermediates: :func:`mrfa.nn.intermediates.capture`.
        """
        self.check_image(source, "source")
        self.check_image(driving, "driving")
        if source.shape[0] != driving.shape[0]:
            raise ValueError(f"source and driving batch sizes differ: {source.shape[0]} vs {driving.shape[0]}")
        with paused():
            kp_d = self.kp_detector(driving) if kp_driving is None else kp_driving
        enc = self.encode_source(source, kp_source)
        return self.reconstruct_encoded(enc, driving, kp_driving=kp_d, dropout_p=dropout_p,
                                        use_background=use_background)

    def reconstruct_encoded(self, enc: SourceEncoding, driving: Tensor, *, kp_driving: Optional[Keypoints] = None,
                            dropout_p: float = 0.0, use_background: bool = True) -> MRFAOutput:
        """Same-identity reconstruction of ``driving`` [B, C, H, W] from a source encoding (batch 1 encodings
        are broadcast): absolute driving keypoints plus the background motion when the model has it."""
        enc = expand_encoding(enc, driving.shape[0])
        with paused():
            kp_d = self.kp_detector(driving) if kp_driving is None else kp_driving
            bg_param = None
            if self.bg_predictor is not None and use_background:
                bg_param = self.bg_predictor(enc.source, driving)  # [B, 3, 3]
        trace = current()
        if trace is not None and bg_param is not None:
            trace["bg_param"] = [bg_param]
        return self.generate(enc, kp_d, bg_param=bg_param, dropout_p=dropout_p)

    def animate(self, source: Tensor, driving: Tensor, driving_initial: Tensor, *, relative: bool = True,
                adapt_scale: bool = False, relative_jacobian: Optional[bool] = None,
                source_encoding: Optional[SourceEncoding] = None, kp_driving_initial: Optional[Keypoints] = None,
                scale: Optional[Tensor] = None, kp_driving: Optional[Keypoints] = None) -> MRFAOutput:
        """Reenact ``source`` with the motion of ``driving`` relative to ``driving_initial``.

        As the official demo: no background motion; relative jacobians whenever the detector has them
        (``relative_jacobian=None``). Pass a cached ``source_encoding`` / ``kp_driving_initial`` / adapt-scale
        ``scale`` (:func:`movement_scale`) to avoid recomputing these per-video constants for every batch;
        ``kp_driving`` replaces the detector's keypoints of ``driving`` (e.g. smoothed over time).
        """
        self.check_image(driving, "driving")
        enc = source_encoding if source_encoding is not None else self.encode_source(self._checked(source, "source"))
        with paused():
            kp_d0 = kp_driving_initial if kp_driving_initial is not None else \
                self.kp_detector(self._checked(driving_initial, "driving_initial"))
            kp_d = self.kp_detector(driving) if kp_driving is None else kp_driving
        kp_s = _expand_kp(enc.kp, kp_d.value.shape[0])
        if adapt_scale and scale is None:
            scale = movement_scale(kp_s, _expand_kp(kp_d0, kp_d.value.shape[0]))
        kp_d0 = _expand_kp(kp_d0, kp_d.value.shape[0])
        if relative_jacobian is None:
            relative_jacobian = kp_d.jacobian is not None
        kp_norm = normalize_kp(kp_s, kp_d, kp_d0, relative=relative, adapt_scale=adapt_scale,
                               relative_jacobian=relative_jacobian, scale=scale)
        enc = expand_encoding(enc, kp_d.value.shape[0])
        return self.generate(enc, kp_norm)

    def _checked(self, x: Tensor, name: str) -> Tensor:
        self.check_image(x, name)
        return x


def _expand_kp(kp: Keypoints, batch: int) -> Keypoints:
    if kp.value.shape[0] == batch:
        return kp
    return Keypoints(kp.value.expand(batch, *kp.value.shape[1:]),
                     None if kp.jacobian is None else kp.jacobian.expand(batch, *kp.jacobian.shape[1:]))


def expand_encoding(enc: SourceEncoding, batch: int) -> SourceEncoding:
    """Broadcast a batch-1 source encoding to ``batch`` driving frames (views, no copies)."""
    if enc.source.shape[0] == batch:
        return enc
    ex = lambda t: t.expand(batch, *t.shape[1:])  # noqa: E731
    structure = None if enc.structure is None else SourceStructure(*map(ex, enc.structure))
    prior_input = None if enc.prior_input is None else ex(enc.prior_input)
    return SourceEncoding(ex(enc.source), _expand_kp(enc.kp, batch), [ex(f) for f in enc.features], structure,
                          prior_input)
