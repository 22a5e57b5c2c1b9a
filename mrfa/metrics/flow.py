"""Flow accuracy against a ground-truth motion (evaluates paper Sec. 3.3 "motion refinement" vs the prior).

For each clip with a known motion (the synthetic dataset's ``<video>`` + ``<video>.motion.npy``, read by
:func:`mrfa.data.synthetic.motion_clips`), source = frame 0 and driving = frame t (t >= 1). Ground truth ``motion[t]`` [H, W, 2] is, for each pixel of frame t, its position in
frame 0 in pixels (x, y; pixel centres at integers). Each estimate is turned into the same kind of map -- the
source position of every driving pixel at full resolution -- and the endpoint error ``|p_est - p_gt|_2`` is
averaged over pixels whose true position lies inside the frame:

* ``refined``: ``out.flows[-1]`` [B, 2, H, W], a pixel displacement read with align_corners=True, so the position
  is simply ``(x + u, y + v)``;
* ``prior``: ``out.deformation`` [B, g, g, 2] (g = size / 4), a normalised sampling grid for
  ``grid_sample(align_corners=False)`` -- the convention the dense-motion network, the coarse feature warp and
  the prior-only generator use. It is upsampled to H x W as a field (bilinear, align_corners=False, so cell
  centres keep their physical positions) and converted with ``x = ((u + 1) W - 1) / 2``;
* ``prior_refiner_init``: the flow the refiner actually starts from at full resolution (the official
  align_corners=True reading ``(g - 1)(u + 1) / 2`` of the grid, resized and multiplied by H / g);
* ``refined_last_level_in``: the flow entering the last (full-resolution) level, i.e. the prior plus the
  residuals of all coarser levels (Eq. 7) -- the flow the official model warps the source image with;
* ``zero``: no motion (the identity), the baseline any estimate should beat.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mrfa.nn.intermediates import capture
from mrfa.ops.grid import coords_grid, grid_to_pixel_flow, resize

METHODS = ("prior", "prior_refiner_init", "refined_last_level_in", "refined", "zero")


def pixel_grid(batch: int, size: int, *, device=None) -> Tensor:
    """Pixel-centre positions [B, size, size, 2] (x, y)."""
    return coords_grid(batch, size, size, device=device).permute(0, 2, 3, 1)


def prior_positions(deformation: Tensor, size: int) -> Tensor:
    """Source positions [B, size, size, 2] in pixels from a normalised align_corners=False grid [B, g, g, 2]."""
    field = F.interpolate(deformation.permute(0, 3, 1, 2).float(), size=(size, size), mode="bilinear",
                          align_corners=False)  # [B, 2, size, size]
    return (((field + 1.0) * size - 1.0) / 2.0).permute(0, 2, 3, 1)


def prior_refiner_positions(deformation: Tensor, size: int) -> Tensor:
    """Source positions [B, size, size, 2] of the refiner's initial flow (official align_corners=True reading)."""
    g = deformation.shape[1]
    flow = resize(grid_to_pixel_flow(deformation.float()), size) * (size / g)  # [B, 2, size, size]
    return flow.permute(0, 2, 3, 1) + pixel_grid(flow.shape[0], size, device=flow.device)


def refined_positions(flow: Tensor) -> Tensor:
    """Source positions [B, H, W, 2] of a full-resolution pixel flow [B, 2, H, W] (align_corners=True)."""
    return flow.float().permute(0, 2, 3, 1) + pixel_grid(flow.shape[0], flow.shape[-1], device=flow.device)


def endpoint_error(estimate: Tensor, truth: Tensor, valid: Tensor) -> tuple[float, int]:
    """Sum of ``|estimate - truth|_2`` over ``valid`` pixels and their count (all [B, H, W, ...])."""
    err = torch.linalg.vector_norm(estimate - truth, dim=-1)  # [B, H, W]
    return float(err[valid].sum()), int(valid.sum())


@torch.no_grad()
def evaluate_flow(model: torch.nn.Module, clips: Iterable[tuple[str, np.ndarray, np.ndarray]], *,
                  batch: int = 8) -> dict[str, float]:
    """Mean endpoint errors (pixels) of the prior, the refiner's initial flow, the refined flow and zero motion.

    Args:
        model: an MRFA model (put in eval mode here).
        clips: ``(name, frames, motion)`` per clip: frames uint8 [T, H, W, 3]; motion float32 [T, H, W, 2], for
            each pixel of frame t its (x, y) position in frame 0 in pixels; e.g.
            ``mrfa.data.synthetic.motion_clips(root, "test")``.
        batch: driving frames per forward pass.

    Returns:
        one mean error per method of ``METHODS`` (NaN for a method the model lacks), plus ``videos``, ``frames``
        and ``valid_fraction``.

    Raises:
        ValueError: a clip's size differs from the model's image size, or its motion does not match its frames.
    """
    model.eval()
    device = next(model.parameters()).device
    sums = {k: 0.0 for k in METHODS}
    count, frames_done, total_pixels, seen, videos = 0, 0, 0, set(), 0
    for name, frames, motion_np in clips:
        motion = torch.from_numpy(motion_np)  # [T, H, W, 2]
        size = motion.shape[1]
        if size != model.image_size or motion.shape[2] != size:
            raise ValueError(f"the motion of {name} is {motion.shape[2]}x{size} but the model works at "
                             f"{model.image_size} px; evaluate on a dataset generated at the model's size")
        if frames.shape[:3] != motion_np.shape[:3]:
            raise ValueError(f"{name}: frames {frames.shape[:3]} and motion {motion_np.shape[:3]} differ")
        video = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0  # [T, 3, H, W]
        videos += 1
        source = video[:1].to(device)
        for start in range(1, video.shape[0], batch):
            driving = video[start:start + batch].to(device)
            n = driving.shape[0]
            with capture() as trace:
                out = model(source.expand(n, -1, -1, -1), driving)
            truth = motion[start:start + n].to(device)  # [n, H, W, 2]
            valid = ((truth >= 0) & (truth <= size - 1)).all(dim=-1)  # [n, H, W]
            estimates = {"refined": refined_positions(out.flows[-1]), "zero": pixel_grid(n, size, device=device)}
            levels = (trace.get("decoder") or {}).get("levels") or []
            if levels and levels[-1].get("flow_in") is not None:  # every variant, prior-only included
                estimates["refined_last_level_in"] = refined_positions(levels[-1]["flow_in"])
            if out.deformation is not None:
                estimates["prior"] = prior_positions(out.deformation, size)
                estimates["prior_refiner_init"] = prior_refiner_positions(out.deformation, size)
            for name, est in estimates.items():
                sums[name] += endpoint_error(est, truth, valid)[0]
                seen.add(name)
            count += int(valid.sum())
            total_pixels += valid.numel()
            frames_done += n
    result = {k: (v / count if count and k in seen else float("nan")) for k, v in sums.items()}
    result.update(videos=float(videos), frames=float(frames_done),
                  valid_fraction=float(count / max(total_pixels, 1)))
    return result


def format_table(result: dict[str, float]) -> str:
    """A short human-readable report of :func:`evaluate_flow`'s result."""
    lines = [f"flow endpoint error (pixels) over {int(result['videos'])} clip(s), {int(result['frames'])} frame pairs, "
             f"{100 * result['valid_fraction']:.1f} % of pixels with an in-frame ground truth"]
    labels = {"prior": "prior (deformation, align_corners=False)",
              "prior_refiner_init": "prior as the refiner reads it (align_corners=True)",
              "refined_last_level_in": "prior + coarser residuals (official image warp)",
              "refined": "refined (flows[-1])", "zero": "zero motion (baseline)"}
    for key in METHODS:
        lines.append(f"  {labels[key]:<52s} {result[key]:8.3f}")
    return "\n".join(lines)
