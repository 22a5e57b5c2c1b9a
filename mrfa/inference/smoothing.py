"""Motion smoothing for reenactment: a causal One-Euro filter on the driving keypoints and jacobians.

Not a paper box (off by default, so outputs stay official). Casiez, Roussel and Vogel's One-Euro filter is an
exponential smoother whose cut-off frequency rises with the speed of the signal: slow motion (where detector
jitter is visible) is smoothed strongly, fast motion passes with little lag. It is streaming: each frame updates
a constant-size state from the previous one, with no look-ahead.

For a signal x_t sampled at ``fps``::

    dx_t  = alpha(d_cutoff) * (x_t - x_{t-1}) * fps + (1 - alpha(d_cutoff)) * dx_{t-1}
    cut_t = min_cutoff + beta * |dx_t|
    y_t   = alpha(cut_t) * x_t + (1 - alpha(cut_t)) * y_{t-1},       alpha(c) = 1 / (1 + fps / (2 pi c))

applied element-wise to the keypoint positions (in [-1, 1] units) and jacobian entries.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from mrfa.types import Keypoints


@dataclass(frozen=True)
class OneEuroParams:
    """Filter settings. ``min_cutoff`` (Hz): lower = smoother when still, more lag; ``beta``: how fast the cut-off
    rises with speed (higher = less lag on fast motion); ``d_cutoff`` (Hz): smoothing of the speed estimate."""

    min_cutoff: float = 1.0
    beta: float = 5.0
    d_cutoff: float = 1.0

    def __post_init__(self) -> None:
        if not (self.min_cutoff > 0 and self.d_cutoff > 0 and self.beta >= 0):
            raise ValueError(f"smoothing needs min_cutoff > 0, d_cutoff > 0 and beta >= 0, got {self}")


def _alpha(cutoff: Tensor, fps: float) -> Tensor:
    return 1.0 / (1.0 + fps / (2 * math.pi * cutoff))


class OneEuroFilter:
    """Streaming One-Euro filter of tensors of a fixed shape (state: the last output and the last speed)."""

    def __init__(self, params: OneEuroParams, fps: float) -> None:
        if not fps > 0:
            raise ValueError(f"smoothing needs a positive frame rate, got {fps}")
        self.params, self.fps = params, float(fps)
        self._y: Optional[Tensor] = None
        self._dx: Optional[Tensor] = None

    def __call__(self, x: Tensor) -> Tensor:
        """Filter one sample ``x`` (any shape, float); returns the smoothed sample."""
        x = x.double()
        if self._y is None:
            self._y, self._dx = x, torch.zeros_like(x)
            return x
        p = self.params
        a_d = _alpha(torch.tensor(p.d_cutoff, dtype=x.dtype), self.fps)
        self._dx = a_d * (x - self._y) * self.fps + (1 - a_d) * self._dx
        a = _alpha(p.min_cutoff + p.beta * self._dx.abs(), self.fps)
        self._y = a * x + (1 - a) * self._y
        return self._y


class KeypointSmoother:
    """One-Euro filters for a stream of :class:`Keypoints` (value ``[K, 2]`` and jacobian ``[K, 2, 2]``), fed one
    driving frame at a time in temporal order."""

    def __init__(self, params: OneEuroParams, fps: float) -> None:
        self.value = OneEuroFilter(params, fps)
        self.jacobian = OneEuroFilter(params, fps)

    def __call__(self, kp: Keypoints) -> Keypoints:
        """Smooth a batch ``[B, K, ...]`` of consecutive frames (frame by frame)."""
        values, jacs = [], []
        for b in range(kp.value.shape[0]):
            values.append(self.value(kp.value[b]).to(kp.value.dtype))
            if kp.jacobian is not None:
                jacs.append(self.jacobian(kp.jacobian[b]).to(kp.jacobian.dtype))
        return Keypoints(torch.stack(values), torch.stack(jacs) if jacs else None)


def smoothing_from_text(text: Optional[str]) -> Optional[OneEuroParams]:
    """Parse the CLI's ``--smooth MIN_CUTOFF,BETA`` (None: smoothing off)."""
    if text is None:
        return None
    try:
        min_cutoff, beta = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--smooth takes MIN_CUTOFF,BETA (e.g. 1.0,5.0), got {text!r}") from None
    return OneEuroParams(min_cutoff=min_cutoff, beta=beta)
