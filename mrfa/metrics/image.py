"""Pixel-level reconstruction metrics (L1, PSNR, SSIM) and their aggregation.

Evaluation box of the paper (same-identity reconstruction, MRFA section 4 / official
``reconstruction.py``): every driving frame is compared with the generated frame; each metric
is a per-frame score, averaged over all frames of all videos (frame-weighted). This module is
used both by ``mrfa evaluate`` and by the reconstruction command.

Conventions (see ``docs/evaluation.md``):

* Images are compared as floats in [0, 1]. ``uint8`` input is divided by 255; float input
  must already lie in [0, 1] (a [-1, 1] or [0, 255] float image raises ``ValueError``).
* L1 is ``mean |pred - gt|`` over H x W x C.
* PSNR is ``10 log10(1 / MSE)`` per frame (peak 1). Identical frames give ``inf``; the
  aggregators keep it (a mean containing ``inf`` is ``inf``) and count such frames, unless a
  ``psnr_cap`` in dB is given. JSON writers encode non-finite values as strings.
* SSIM is scikit-image's ``structural_similarity`` with the Wang et al. (2004) settings:
  11 x 11 Gaussian window, sigma 1.5, population covariance, data range 1, averaged over
  the colour channels; frames must be at least 11 x 11 pixels.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]  # noqa: UP007 (runtime alias, Python 3.9)

IMAGE_METRICS: tuple[str, ...] = ("l1", "psnr", "ssim")
# Tolerance for float images slightly outside [0, 1] (rounding of a sigmoid output etc.).
_RANGE_TOL = 1e-3


def to_float01(image: ArrayLike) -> np.ndarray:
    """Convert one image to a float64 numpy array in [0, 1], channels last.

    Args:
        image: numpy ``[H, W, C]`` / ``[H, W]`` (uint8 or float in [0, 1]) or a torch tensor
            ``[C, H, W]`` / ``[1, C, H, W]`` (float in [0, 1] or uint8), channels first as in
            the models.

    Returns:
        ``[H, W, C]`` float64 array in [0, 1] (``C`` = 1 for grey input).

    Raises:
        ValueError: for an unsupported dtype or shape, or float values outside [0, 1].
    """
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dim() != 3:
            raise ValueError(f"torch image must be [C, H, W] or [1, C, H, W], got shape {tuple(t.shape)}")
        arr = t.permute(1, 2, 0).numpy()  # [H, W, C]
    else:
        arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"image must be [H, W] or [H, W, C], got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"image dtype {arr.dtype} is not supported; pass uint8 or float in [0, 1]")
    out = arr.astype(np.float64)
    lo, hi = float(out.min()), float(out.max())
    if lo < -_RANGE_TOL or hi > 1.0 + _RANGE_TOL:
        raise ValueError(f"float image values lie in [{lo:.3g}, {hi:.3g}], expected [0, 1]")
    return np.clip(out, 0.0, 1.0)


def _pair(pred: ArrayLike, gt: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p, g = to_float01(pred), to_float01(gt)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ground-truth shape {g.shape}")
    return p, g


def l1(pred: ArrayLike, gt: ArrayLike) -> float:
    """Mean absolute difference of two images in [0, 1] (see :func:`to_float01` for inputs)."""
    p, g = _pair(pred, gt)
    return float(np.abs(p - g).mean())


def psnr(pred: ArrayLike, gt: ArrayLike, *, cap: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB with peak 1, ``inf`` for identical images.

    Args:
        pred: predicted image (see :func:`to_float01`).
        gt: ground-truth image of the same shape.
        cap: if given, values above ``cap`` dB (including ``inf``) are clipped to ``cap``.
    """
    p, g = _pair(pred, gt)
    mse = float(np.mean((p - g) ** 2))
    value = math.inf if mse == 0.0 else 10.0 * math.log10(1.0 / mse)
    return min(value, cap) if cap is not None else value


def ssim(pred: ArrayLike, gt: ArrayLike, *, gaussian_weights: bool = True) -> float:
    """Structural similarity (scikit-image), averaged over channels; 1 for identical images.

    Args:
        pred: predicted image (see :func:`to_float01`), at least 11 x 11 pixels (7 x 7 without Gaussian weights).
        gt: ground-truth image of the same shape.
        gaussian_weights: Wang et al. settings (Gaussian sigma 1.5, population covariance) when
            True; scikit-image's plain defaults (7 x 7 uniform window, sample covariance) when False.
    """
    from skimage.metrics import structural_similarity

    p, g = _pair(pred, gt)
    options = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False} if gaussian_weights else {}
    window = 11 if gaussian_weights else 7
    if min(p.shape[:2]) < window:
        raise ValueError(f"SSIM needs frames of at least {window}x{window} pixels, got {p.shape[0]}x{p.shape[1]}")
    return float(structural_similarity(g, p, data_range=1.0, channel_axis=-1, **options))


def frame_metrics(
    pred: ArrayLike,
    gt: ArrayLike,
    *,
    metrics: Sequence[str] = IMAGE_METRICS,
    psnr_cap: float | None = None,
) -> dict[str, float]:
    """Pixel metrics of one predicted frame against its ground truth.

    Args:
        pred: predicted frame, uint8 or float in [0, 1]; numpy ``[H, W, C]`` or torch ``[C, H, W]``.
        gt: ground-truth frame, same conventions and size.
        metrics: subset of ``("l1", "psnr", "ssim")``.
        psnr_cap: optional cap in dB for PSNR (default: keep ``inf``).

    Returns:
        ``{"l1": float, "psnr": float, "ssim": float}`` restricted to ``metrics``.
    """
    unknown = [m for m in metrics if m not in IMAGE_METRICS]
    if unknown:
        raise ValueError(f"unknown image metric(s) {unknown}; choose from {list(IMAGE_METRICS)}")
    p, g = _pair(pred, gt)
    out: dict[str, float] = {}
    if "l1" in metrics:
        out["l1"] = float(np.abs(p - g).mean())
    if "psnr" in metrics:
        out["psnr"] = psnr(p, g, cap=psnr_cap)
    if "ssim" in metrics:
        out["ssim"] = ssim(p, g)
    return out


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


class MetricAggregator:
    """Collects per-frame metric values and reduces them per video and overall.

    A value of ``None`` means "not measurable for this frame" (e.g. no face detected); such
    frames are counted under ``missing_frames`` and left out of that metric's mean, never
    silently. Non-finite values (PSNR of identical frames) are kept in the mean and counted
    under ``nonfinite_frames``.

    Example::

        agg = MetricAggregator()
        agg.add("video_a", "0000000", {"l1": 0.02, "akd": None})
        report = agg.summary()  # {"overall": {...}, "per_video": {...}}
    """

    def __init__(self) -> None:
        self._values: dict[str, dict[str, list[float]]] = {}  # video -> metric -> values
        self._missing: dict[str, dict[str, int]] = {}
        self._frames: dict[str, int] = {}
        self._counts: dict[str, dict[str, int]] = {}
        self.per_frame: list[dict[str, object]] = []

    def add(self, video: str, frame: str | int, values: Mapping[str, float | None], *, keep: bool = True) -> None:
        """Record the metric values of one frame (``keep`` also stores the row in ``per_frame``)."""
        self._frames[video] = self._frames.get(video, 0) + 1
        vals = self._values.setdefault(video, {})
        miss = self._missing.setdefault(video, {})
        for name, value in values.items():
            vals.setdefault(name, [])
            if value is None:
                miss[name] = miss.get(name, 0) + 1
            else:
                vals[name].append(float(value))
        if keep:
            self.per_frame.append({"video": video, "frame": frame, **dict(values)})

    def count(self, video: str, key: str, n: int = 1) -> None:
        """Increment a named counter of ``video`` (e.g. ``no_face_pred``)."""
        counts = self._counts.setdefault(video, {})
        counts[key] = counts.get(key, 0) + n

    @property
    def videos(self) -> list[str]:
        """Names of the videos seen so far, in insertion order."""
        return list(self._frames)

    def _reduce(self, videos: Iterable[str]) -> dict[str, object]:
        videos = list(videos)
        metrics: list[str] = []
        for v in videos:
            metrics += [m for m in self._values.get(v, {}) if m not in metrics]
        values = {m: [x for v in videos for x in self._values.get(v, {}).get(m, [])] for m in metrics}
        counts: dict[str, int] = {}
        for v in videos:
            for k, n in self._counts.get(v, {}).items():
                counts[k] = counts.get(k, 0) + n
        return {
            "frames": sum(self._frames.get(v, 0) for v in videos),
            "mean": {m: _mean(values[m]) for m in metrics},
            "valid_frames": {m: len(values[m]) for m in metrics},
            "missing_frames": {m: sum(self._missing.get(v, {}).get(m, 0) for v in videos) for m in metrics},
            "nonfinite_frames": {m: int(sum(not math.isfinite(x) for x in values[m])) for m in metrics},
            "counts": counts,
        }

    def per_video(self) -> dict[str, dict[str, object]]:
        """Per-video reduction: ``{video: {"frames", "mean", "valid_frames", "missing_frames", ...}}``."""
        return {v: self._reduce([v]) for v in self._frames}

    def overall(self) -> dict[str, object]:
        """Overall reduction: frame-weighted ``mean`` (the official protocol) and ``video_mean``
        (mean of the per-video means over the videos where the metric was measurable)."""
        out = self._reduce(self._frames)
        per_video = self.per_video()
        video_mean: dict[str, float | None] = {}
        for m in out["mean"]:  # type: ignore[union-attr]
            means = [pv["mean"].get(m) for pv in per_video.values()]  # type: ignore[union-attr]
            video_mean[m] = _mean([x for x in means if x is not None])
        out["videos"] = len(self._frames)
        out["video_mean"] = video_mean
        return out

    def summary(self, *, per_frame: bool = False) -> dict[str, object]:
        """``{"overall": ..., "per_video": ...}`` plus ``"per_frame"`` rows when asked."""
        out: dict[str, object] = {"overall": self.overall(), "per_video": self.per_video()}
        if per_frame:
            out["per_frame"] = self.per_frame
        return out
