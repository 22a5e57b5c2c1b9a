"""Evaluation metrics of the MRFA reconstruction / animation tables (protocol: docs/evaluation.md).

Pixel metrics (``l1``, ``psnr``, ``ssim``, :func:`frame_metrics`, :class:`MetricAggregator`) are
imported eagerly; LPIPS and the face backends load their weights only when built. The
``mrfa evaluate`` command lives in :mod:`mrfa.metrics.evaluate`.
"""
from __future__ import annotations

from mrfa.metrics.face import (
    DlibBackend,
    FaceAlignmentBackend,
    FaceResult,
    aed,
    aed_squared,
    akd,
    csim,
    make_identity_backend,
    make_landmark_backend,
)
from mrfa.metrics.image import IMAGE_METRICS, MetricAggregator, frame_metrics, l1, psnr, ssim, to_float01
from mrfa.metrics.lpips import LPIPSMetric, LPIPSNet, build_offline_lpips, lpips_distance

__all__ = [
    "IMAGE_METRICS",
    "DlibBackend",
    "FaceAlignmentBackend",
    "FaceResult",
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
    "make_identity_backend",
    "make_landmark_backend",
    "psnr",
    "ssim",
    "to_float01",
]
