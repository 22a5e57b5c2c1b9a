"""Animate a portrait into a file: face crop, the Animator's frames, paste-back or side-by-side panels, and the
atomic writer with the driving audio, in one function that ``mrfa animate`` and the web app share.

Not a paper box: the official ``demo.py`` does the same steps (read, crop, animate, save with imageio), here
streamed so that memory stays flat in the length of the driving video, reported through a progress callback,
and stoppable between two frames (the partial output is then deleted).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from mrfa.inference.animate import AnimatedFrame, Animator
from mrfa.inference.smoothing import OneEuroParams
from mrfa.media import face
from mrfa.media.crop import CropBox, crop_box_for_image, crop_box_for_video
from mrfa.media.draw import draw_keypoints
from mrfa.media.frames import centre_box, iter_frames, load_image, square_frame
from mrfa.media.paste import paste_back
from mrfa.media.video import FrameBuffer, VideoReadError, resize_frame, video_info, video_kind
from mrfa.media.writer import FrameWriter, output_kind

DEFAULT_FPS = 25.0
MIN_FPS, MAX_FPS = 0.01, 1000.0  # what the H.264 / mp4 timebase represents exactly


class Cancelled(Exception):
    """The caller asked to stop (``should_stop`` returned True); nothing was written."""


@dataclass
class AnimateRequest:
    """What to animate and how (the options of ``mrfa animate``).

    Attributes:
        source / driving / output: the portrait, the driving video (file or frame folder) and the result path.
        relative / adapt_scale / best_frame / find_best_frame / smoothing: motion transfer, as
            :meth:`Animator.frames`.
        crop: "none", "both", "source" or "driving" (VoxCeleb-style face crop).
        paste_back / feather: paste the animated crop back into the full photo, mask ramp as a crop fraction.
        visualize: side-by-side panels source | driving | result (| pasted) with keypoints.
        detector / detect_stride: face backend and frame step of the video detection.
        fps: output frame rate (None: the driving video's, else 25). audio: copy the driving audio track.
        overwrite: the output may replace an existing one. cache_mb: memory for decoded driving frames.
        keep_frames: keep the first N (prediction, driving) pairs in the result (for figures); 0 keeps none.
    """

    source: Path
    driving: Path
    output: Path
    relative: bool = True
    adapt_scale: bool = False
    best_frame: Optional[int] = None
    find_best_frame: bool = False
    smoothing: Optional[OneEuroParams] = None
    crop: str = "none"
    paste_back: bool = False
    feather: float = 0.1
    visualize: bool = False
    detector: str = "auto"
    detect_stride: int = 5
    fps: Optional[float] = None
    audio: bool = True
    overwrite: bool = False
    cache_mb: float = 256.0
    keep_frames: int = 0


@dataclass
class AnimateResult:
    """What :func:`animate_to_file` wrote and noticed."""

    output: Path
    frames: int
    fps: float
    announced_frames: int
    audio_requested: bool
    audio_muxed: bool
    audio_error: Optional[str]
    nonfinite_frames: int
    reference_frame: int
    decodes: int
    source_box: Optional[CropBox]
    driving_box: Optional[CropBox]
    seconds: float
    kept: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (prediction, driving) pairs


def check_driving(path: Path) -> None:
    """Fail early, with one sentence, for a missing / non-video / empty driving input."""
    if video_kind(path) == "strip":
        raise ValueError(f"driving video {path} is an image; expected a video (mp4/mov/webm/mkv/avi/gif) or a "
                         "folder of frames")
    if video_info(path).num_frames == 0:
        raise VideoReadError(f"driving video {path} contains no frames")


def visualize(frame: AnimatedFrame, source: np.ndarray, pasted: Optional[np.ndarray] = None) -> np.ndarray:
    """``source | driving | result`` panels (``uint8 [S, 3S(+w), 3]``) with keypoints; ``pasted`` (the full
    paste-back frame) is resized to height S and appended."""
    panels = [draw_keypoints(source, frame.kp_source), draw_keypoints(frame.driving, frame.kp_driving),
              draw_keypoints(frame.prediction, frame.kp_result)]
    if pasted is not None:
        size = source.shape[0]
        width = max(2, int(round(pasted.shape[1] * size / pasted.shape[0] / 2)) * 2)
        panels.append(resize_frame(pasted, (size, width)))
    return np.concatenate(panels, axis=1)


def animate_to_file(animator: Animator, req: AnimateRequest, *,
                    progress: Optional[Callable[[int, int], None]] = None,
                    should_stop: Optional[Callable[[], bool]] = None) -> AnimateResult:
    """Animate ``req.source`` with ``req.driving`` into ``req.output`` (atomically; see :class:`AnimateRequest`).

    Args:
        progress: called after every frame with (frames done, frames announced by the driving video's header).
        should_stop: polled before every frame; True stops the run, deletes the partial output and raises
            :class:`Cancelled`.

    Raises:
        ValueError / VideoReadError / FileNotFoundError: bad inputs, one sentence. Cancelled: stopped on request.
        WriteError / OutputError: the output could not be written (nothing is left behind).
    """
    start = time.perf_counter()
    kind = output_kind(req.output)
    src_full = load_image(req.source, "source")
    check_driving(req.driving)
    info = video_info(req.driving)
    detector = face.choose_detector(req.detector) if req.crop != "none" or req.find_best_frame else None
    source_box: Optional[CropBox] = None
    driving_box: Optional[CropBox] = None
    driving: object = req.driving
    decodes = 0
    if req.crop in ("both", "source"):
        source_box = crop_box_for_image(src_full, detector=detector, name=f"source {req.source}")
    if req.crop in ("both", "driving"):
        # the tracking pass keeps the full-size frames for the later passes when the whole clip fits the cache
        # (decided from the header, so a clip that does not fit costs no memory at all)
        full_size = info.num_frames * info.width * info.height * 3
        kept = FrameBuffer(int(req.cache_mb * 2**20) if 0 < full_size <= req.cache_mb * 2**20 else 0)
        driving_box = crop_box_for_video(kept.tap(iter_frames(req.driving)), detector=detector,
                                         stride=req.detect_stride, name=f"driving video {req.driving}")
        decodes += 1
        if kept.complete and kept.frames:
            driving = kept.frames
    paste_box = source_box if source_box is not None else centre_box(*src_full.shape[:2])
    fps = req.fps or info.fps or DEFAULT_FPS
    if not (np.isfinite(fps) and MIN_FPS <= fps <= MAX_FPS):
        raise ValueError(f"the frame rate must be between {MIN_FPS:g} and {MAX_FPS:g} frames per second, got "
                         f"{fps:g}")
    audio = kind == "video" and req.audio and info.has_audio
    source_sq = square_frame(src_full, animator.image_size, source_box)
    count, bad = 0, 0
    kept_pairs: list[tuple[np.ndarray, np.ndarray]] = []
    with FrameWriter(req.output, fps=fps, audio_from=req.driving if audio else None,
                     overwrite=req.overwrite) as writer:
        frames = animator.frames(src_full, driving, relative=req.relative, adapt_scale=req.adapt_scale,
                                 best_frame=req.best_frame, find_best_frame=req.find_best_frame,
                                 detector=detector, source_box=source_box, driving_box=driving_box,
                                 keypoints=req.visualize, progress=False, total=info.num_frames or None,
                                 smoothing=req.smoothing, fps=fps)
        for frame in frames:
            if should_stop is not None and should_stop():
                raise Cancelled("stopped on request; nothing was written")
            bad += not frame.finite
            pasted = paste_back(src_full, frame.prediction, paste_box, feather=req.feather) if req.paste_back \
                else None
            if req.visualize:
                image = visualize(frame, source_sq, pasted)
            else:
                image = pasted if pasted is not None else frame.prediction
            writer.write(image)
            if len(kept_pairs) < req.keep_frames:
                kept_pairs.append((frame.prediction, frame.driving))
            count += 1
            if progress is not None:
                progress(count, max(info.num_frames, count))
        if bad == count:
            raise ValueError("the model produced NaN / inf for every frame (are its weights finite?); nothing was "
                             "written")
    decodes += animator.driving_passes if driving is req.driving else 0
    return AnimateResult(output=Path(req.output), frames=count, fps=fps, announced_frames=info.num_frames,
                         audio_requested=audio, audio_muxed=writer.audio_muxed, audio_error=writer.audio_error,
                         nonfinite_frames=bad, reference_frame=animator.reference_frame, decodes=decodes,
                         source_box=source_box, driving_box=driving_box, seconds=time.perf_counter() - start,
                         kept=kept_pairs)
