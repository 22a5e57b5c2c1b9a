"""Frame pairing for ``mrfa evaluate`` (evaluation box: inputs of the metric tables).

Reading and discovery are :mod:`mrfa.media.video` (``discover_videos``, ``read_named_frames``); this module pairs
predicted with ground-truth frames and matches their sizes. Lossless PNG frames should be used for landmark and
identity metrics (mp4 compression changes AKD, pose-evaluation#15).
"""
from __future__ import annotations

import numpy as np

from mrfa.media.video import resize_frame


def align_frames(
    names_pred: list[str],
    pred: np.ndarray,
    names_gt: list[str],
    gt: np.ndarray,
    *,
    pairing: str = "auto",
    truncate: bool = False,
    what: str = "video",
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Pair predicted and ground-truth frames.

    Args:
        names_pred: frame names of ``pred`` ``[T_p, H, W, 3]``.
        pred: predicted frames.
        names_gt: frame names of ``gt`` ``[T_g, H, W, 3]``.
        gt: ground-truth frames.
        pairing: ``"name"`` (same file names), ``"index"`` (same position) or ``"auto"`` (by name
            when both name sets are equal, else by index).
        truncate: allow missing / surplus frames (score the common ones) instead of raising.
        what: video name used in error messages.

    Returns:
        (frame names, pred ``[T, H, W, 3]``, gt ``[T, H, W, 3]``), in ground-truth order.
    """
    if pairing not in ("auto", "name", "index"):
        raise ValueError(f"frame pairing {pairing!r} is not supported; choose auto, name or index")
    if pairing == "name" or (pairing == "auto" and sorted(names_pred) == sorted(names_gt)):
        index_p = {n: i for i, n in enumerate(names_pred)}
        keep = [(i, n) for i, n in enumerate(names_gt) if n in index_p]
        if not keep or (len(keep) != len(names_gt) and not truncate):
            missing = len(names_gt) - len(keep)
            raise ValueError(f"{what}: {missing} ground-truth frames have no prediction of the same name")
        return [n for _, n in keep], pred[[index_p[n] for _, n in keep]], gt[[i for i, _ in keep]]
    if len(pred) != len(gt) and not truncate:
        raise ValueError(f"{what}: {len(pred)} predicted frames vs {len(gt)} ground-truth frames (use --truncate)")
    n = min(len(pred), len(gt))
    return names_gt[:n], pred[:n], gt[:n]


def match_size(pred: np.ndarray, gt: np.ndarray, *, resize: bool = False, what: str = "video") -> np.ndarray:
    """Return ``pred`` ``[T, H', W', 3]`` at the size of ``gt`` ``[T, H, W, 3]``: unchanged when equal,
    anti-aliased resize when ``resize``, else ``ValueError``."""
    if pred.shape[1:3] == gt.shape[1:3]:
        return pred
    if not resize:
        sizes = f"prediction frames are {pred.shape[1:3]}, ground truth {gt.shape[1:3]}"
        raise ValueError(f"{what}: {sizes} (use --resize-pred)")
    return np.stack([resize_frame(f, tuple(gt.shape[1:3])) for f in pred])
