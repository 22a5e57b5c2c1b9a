"""Training visualisations (not a paper box; the official ``logger.Visualizer`` redone without cv2).

``training_grid`` lays out, for up to ``max_rows`` batch elements, one row of tiles:

source + source keypoints | driving + driving keypoints | prediction | warped source | prior (coarse) flow |
refined flow | prior occlusion | refined occlusion

Flows are drawn with the usual colour wheel (hue = direction, saturation = magnitude, white = no motion),
occlusion/visibility maps in grey (white = visible). Pure numpy + scikit-image drawing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mrfa.media.convert import float_to_uint8, tensor_to_uint8
from mrfa.media.draw import color_tile, draw_keypoints, flow_to_color, gray_tile
from mrfa.ops.grid import grid_to_pixel_flow
from mrfa.types import MRFAOutput

COLUMNS = ("source+kp", "driving+kp", "prediction", "warped source", "prior flow", "refined flow",
           "prior occlusion", "refined occlusion")


def to_uint8(image: Tensor | np.ndarray) -> np.ndarray:
    """[3, H, W] float in [0, 1] (tensor or array) -> uint8 [H, W, 3] (the media layer's rounding rule)."""
    if isinstance(image, Tensor):
        return tensor_to_uint8(image)
    return float_to_uint8(np.asarray(image, np.float32).transpose(1, 2, 0))


def training_grid(source: Tensor, driving: Tensor, out: MRFAOutput, max_rows: int = 4) -> np.ndarray:
    """Visualisation grid of a training batch (columns in ``COLUMNS``) -> uint8 [rows * H, 8 * W, 3].

    Args:
        source, driving: [B, 3, H, W] in [0, 1].
        out: the model output for that batch.
        max_rows: batch elements shown.
    """
    size = source.shape[-1]
    rows = []
    with torch.no_grad():
        prior = None if out.deformation is None else grid_to_pixel_flow(out.deformation.float())  # [B, 2, g, g]
        refined = out.flows[-1].float()
        for b in range(min(max_rows, source.shape[0])):
            kp_s = out.kp_source.value[b].detach().float().cpu().numpy()
            kp_d = out.kp_driving.value[b].detach().float().cpu().numpy()
            ref_np = refined[b].cpu().numpy()
            mag = max(float(np.hypot(ref_np[0], ref_np[1]).max()), 1e-6)
            tiles = [draw_keypoints(to_uint8(source[b]), kp_s), draw_keypoints(to_uint8(driving[b]), kp_d),
                     to_uint8(out.prediction[b]), to_uint8(out.warped_image[b])]
            if prior is not None:
                prior_np = prior[b].cpu().numpy() * (size / prior.shape[-1])  # full-resolution pixels
                tiles.append(color_tile(flow_to_color(prior_np, mag), size))
            else:
                tiles.append(np.full((size, size, 3), 255, np.uint8))
            tiles.append(color_tile(flow_to_color(ref_np, mag), size))
            if out.occlusion_prior is not None:
                tiles.append(gray_tile(torch.sigmoid(out.occlusion_prior[b, 0].float()).cpu().numpy(), size))
            else:
                tiles.append(np.zeros((size, size, 3), np.uint8))
            tiles.append(gray_tile(out.occlusions[-1][b, 0].float().cpu().numpy(), size))
            rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def reconstruction_frames(model: torch.nn.Module, video: Tensor, *, batch: int = 8) -> tuple[np.ndarray, float]:
    """Reconstruct every frame of ``video`` [3, T, H, W] from frame 0 (no grad, the model's current mode).

    Returns:
        ``source | driving | prediction`` side by side, uint8 [T, H, 3 W, 3], and the mean L1 of prediction vs
        driving over all frames (float images in [0, 1]).
    """
    device = next(model.parameters()).device
    frames = video.permute(1, 0, 2, 3)  # [T, 3, H, W]
    source = frames[:1].to(device)
    out_frames, l1_sum = [], 0.0
    with torch.no_grad():
        enc = model.encode_source(source)  # once per clip
        for start in range(0, frames.shape[0], batch):
            driving = frames[start:start + batch].to(device)
            pred = model.reconstruct_encoded(enc, driving).prediction
            l1_sum += float((pred.float() - driving).abs().mean(dim=(1, 2, 3)).sum())
            for d, p in zip(driving, pred):
                out_frames.append(np.concatenate([to_uint8(source[0]), to_uint8(d), to_uint8(p)], axis=1))
    return np.stack(out_frames), l1_sum / frames.shape[0]


def write_reconstruction_video(model: torch.nn.Module, test_set: Any, path: Path, *, fps: float = 10.0) -> dict:
    """Reconstruct the first clip of ``test_set`` (a test-mode ``FramesDataset``) from its frame 0 and write
    ``source | driving | prediction`` to ``path`` (mp4; frames of at most 128 px are enlarged by pixel replication
    to about 256 px). The model is put back in its previous mode.

    Returns:
        ``{'video': path, 'video_clip': name, 'video_l1': mean |prediction - driving| in [0, 1]}``.
    """
    from mrfa.media.video import write_video

    item = test_set[0]
    video = torch.from_numpy(item["video"])  # [3, T, H, W]
    was_training = model.training
    model.eval()
    frames, l1 = reconstruction_frames(model, video)  # [T, H, 3W, 3]
    model.train(was_training)
    zoom = max(1, 256 // frames.shape[1])  # small models: enlarge (pixel replication) to be watchable
    frames = frames.repeat(zoom, axis=1).repeat(zoom, axis=2)
    write_video(path, frames, fps=fps, overwrite=True)  # the run's own preview, rewritten at each evaluation
    return {"video": str(path), "video_clip": item["name"], "video_l1": round(l1, 5)}
