"""Evaluation metrics of the MRFA reconstruction / animation tables (protocol: docs/evaluation.md).

Pixel metrics (``l1``, ``psnr``, ``ssim``, :func:`frame_metrics`, :class:`MetricAggregator`) are
imported eagerly; LPIPS loads its weights only when built; the face backends are :mod:`mrfa.media.face`. The
``mrfa evaluate`` command lives in :mod:`mrfa.metrics.evaluate`.
"""
from __future__ import annotations

from mrfa.metrics.face import aed, aed_squared, akd, csim
from mrfa.metrics.image import IMAGE_METRICS, MetricAggregator, frame_metrics, l1, psnr, ssim, to_float01
from mrfa.metrics.lpips import LPIPSMetric, LPIPSNet, build_offline_lpips, lpips_distance

__all__ = [
    "IMAGE_METRICS",
    "LPIPSMetric",
    "LPIPSNet",
    "MetricAggregator",
    "aed",
    "aed_squared",
    "akd",
    "build_offline_lpips",
    "csim",
    "frame_metrics",
    "l1",
    "lpips_distance",
    "psnr",
    "ssim",
    "to_float01",
]
