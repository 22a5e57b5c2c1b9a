"""``mrfa animate``: reenact a portrait with a driving video (the official ``demo.py``, spec sections 9-10).

Not a paper box: the command-line front end of :class:`mrfa.inference.animate.Animator`. Compared with the
official demo it runs on CPU or GPU, takes inputs of any size / kind, streams the driving video in batches,
keeps the driving video's frame rate and audio, has a working best-frame search, optional VoxCeleb-style face
crop and paste-back into the full photo, a keypoint visualisation, and writes mp4 / mov / mkv / gif / PNG
frames atomically (no partial output is left behind on an error).

Example::

    mrfa animate --checkpoint runs/demo/snapshot.pt --source portrait.jpg --driving driving.mp4 \
        --output result.mp4 --crop --paste-back
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import numpy as np

from mrfa.inference.animate import AnimatedFrame, Animator, centre_box, iter_frames, load_image, square_frame
from mrfa.inference.engine import add_engine_arguments, check_engine, engine_from_args
from mrfa.inference.smoothing import smoothing_from_text
from mrfa.media import face
from mrfa.media.crop import CropBox, crop_box_for_image, crop_box_for_video
from mrfa.media.draw import draw_keypoints
from mrfa.media.paste import paste_back
from mrfa.media.video import FrameBuffer, VideoReadError, resize_frame, video_info, video_kind
from mrfa.media.writer import FrameWriter, check_output, output_kind
from mrfa.utils.device import resolve_device
from mrfa.utils.warnings import RunWarnings

DEFAULT_FPS = 25.0  # for frame folders, which carry no frame rate


def add_motion_arguments(parser: argparse.ArgumentParser, title: str = "motion transfer") -> None:
    """The motion-transfer flags of :meth:`Animator.frames` (``--relative/--absolute --adapt-scale --smooth
    --find-best-frame/--best-frame``), shared by ``mrfa animate`` and ``mrfa evaluate --pairs --checkpoint``."""
    m = parser.add_argument_group(title)
    rel = m.add_mutually_exclusive_group()
    rel.add_argument("--relative", dest="relative", action="store_true", default=True,
                     help="relative motion (official normalize_kp; the default)")
    rel.add_argument("--absolute", dest="relative", action="store_false", help="absolute driving keypoints")
    m.add_argument("--adapt-scale", action="store_true",
                   help="scale the motion by the source / reference keypoint convex-hull areas")
    m.add_argument("--smooth", nargs="?", const="1.0,5.0", default=None, metavar="MIN_CUTOFF,BETA",
                   help="causal One-Euro smoothing of the driving keypoints against jitter (off by default; "
                        "--smooth alone: min_cutoff 1 Hz, beta 5; see docs/animation.md)")
    best = m.add_mutually_exclusive_group()
    best.add_argument("--find-best-frame", action="store_true",
                      help="use the driving frame whose face landmarks are closest to the source's as reference")
    best.add_argument("--best-frame", type=int, default=None, metavar="N", help="reference driving frame index")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``mrfa animate`` options to ``parser`` and return it."""
    io = parser.add_argument_group("inputs and output")
    io.add_argument("--checkpoint", required=True, help="mrfa snapshot / training state / official checkpoint")
    io.add_argument("--config", default=None, help="YAML config (only for official checkpoints of non-default size)")
    io.add_argument("--source", required=True, help="source portrait: jpg / png / webp / bmp, any size")
    io.add_argument("--driving", required=True,
                    help="driving video: mp4 / mov / webm / mkv / avi / gif, or a folder of frames")
    io.add_argument("--output", required=True,
                    help="result: .mp4 / .mov / .mkv / .gif, or a folder name for PNG frames")
    io.add_argument("--overwrite", action="store_true",
                    help="replace an existing output file, or a PNG folder an earlier mrfa run wrote")
    add_motion_arguments(parser)
    f = parser.add_argument_group("face crop")
    f.add_argument("--crop", nargs="?", const="both", default="none", choices=("none", "both", "source", "driving"),
                   help="VoxCeleb-style face crop of the source and the driving video (or only one of them); "
                        "without it, non-square inputs are centre-cropped to a square")
    f.add_argument("--paste-back", action="store_true",
                   help="paste the animated crop back into the full source image with a feathered mask")
    f.add_argument("--feather", type=float, default=0.1, help="paste-back mask ramp, fraction of the crop side")
    f.add_argument("--detector", choices=("auto", "dlib", "face_alignment"), default="auto",
                   help="face backend for --crop / --find-best-frame (auto: face_alignment if usable, else dlib)")
    f.add_argument("--detect-stride", type=int, default=5, help="run the face detector on every N-th driving frame")
    r = parser.add_argument_group("runtime and rendering")
    r.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (auto: cuda when available)")
    r.add_argument("--batch-size", type=int, default=4, help="driving frames per forward pass")
    r.add_argument("--cache-mb", type=float, default=256,
                   help="memory for decoded driving frames kept between passes (default 256): model-size frames are "
                        "kept for rendering after the best-frame search, and with --crop the full-size clip too "
                        "when it fits, so the video is decoded once; 0: decode again for each pass")
    r.add_argument("--fps", type=float, default=None, help="output frame rate (default: the driving video's)")
    r.add_argument("--no-audio", action="store_true", help="do not copy the driving video's audio")
    r.add_argument("--visualize", action="store_true",
                   help="side by side: source | driving | result (+ pasted frame), keypoints drawn")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    add_engine_arguments(parser)
    return parser


def check_driving(path: Path) -> None:
    """Fail early, with one sentence, for a missing / non-video / empty driving input."""
    if video_kind(path) == "strip":
        raise ValueError(f"driving video {path} is an image; expected a video (mp4/mov/webm/mkv/avi/gif) or a "
                         "folder of frames")
    if video_info(path).num_frames == 0:
        raise VideoReadError(f"driving video {path} contains no frames")


# ------------------------------------------------------------------------------------------ rendering
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


# ------------------------------------------------------------------------------------------ command
def _check_args(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.best_frame is not None and args.best_frame < 0:
        raise ValueError(f"--best-frame must be >= 0, got {args.best_frame}")
    if args.fps is not None and not (np.isfinite(args.fps) and args.fps > 0):
        raise ValueError(f"--fps must be a positive number, got {args.fps:g}")
    if args.detect_stride < 1:
        raise ValueError(f"--detect-stride must be >= 1, got {args.detect_stride}")
    if not 0.0 <= args.feather <= 0.5:
        raise ValueError(f"--feather must be in [0, 0.5], got {args.feather:g}")
    if args.cache_mb < 0:
        raise ValueError(f"--cache-mb must be >= 0, got {args.cache_mb:g}")
    smoothing_from_text(args.smooth)


def run(args: argparse.Namespace) -> int:
    """Execute ``mrfa animate``; returns 0 (errors raise with one clear sentence; ``mrfa`` exits 1)."""
    _check_args(args)
    engine = engine_from_args(args)
    check_engine(engine, resolve_device(args.device))  # before anything is read
    source_path, driving_path, output = Path(args.source), Path(args.driving), Path(args.output)
    check_output(output, inputs=[source_path, driving_path, args.checkpoint, args.config], overwrite=args.overwrite)
    kind = output_kind(output)
    src_full = load_image(source_path, "source")
    check_driving(driving_path)
    info = video_info(driving_path)
    warn = RunWarnings("mrfa animate")
    config = None
    if args.config:
        from mrfa.config import load_config

        config = load_config(args.config)
    animator = Animator.from_checkpoint(args.checkpoint, device=args.device, batch_size=args.batch_size,
                                        config=config, cache_mb=args.cache_mb, engine=engine)
    if min(src_full.shape[:2]) < animator.image_size:
        warn("upscaled_source", f"the source {source_path} ({src_full.shape[1]}x{src_full.shape[0]}) is smaller "
                                f"than the model's {animator.image_size} px and is upscaled")
    detector = face.choose_detector(args.detector) if args.crop != "none" or args.find_best_frame else None
    source_box: Optional[CropBox] = None
    driving_box: Optional[CropBox] = None
    driving: object = driving_path
    decodes = 0
    if args.crop in ("both", "source"):
        source_box = crop_box_for_image(src_full, detector=detector, name=f"source {source_path}")
    if args.crop in ("both", "driving"):
        # the tracking pass keeps the full-size frames for the later passes when the whole clip fits the cache
        # (decided from the header, so a clip that does not fit costs no memory at all)
        full_size = info.num_frames * info.width * info.height * 3
        kept = FrameBuffer(int(args.cache_mb * 2**20) if 0 < full_size <= args.cache_mb * 2**20 else 0)
        driving_box = crop_box_for_video(kept.tap(iter_frames(driving_path)), detector=detector,
                                         stride=args.detect_stride, name=f"driving video {driving_path}")
        decodes += 1
        if kept.complete and kept.frames:
            driving = kept.frames
    paste_box = source_box if source_box is not None else centre_box(*src_full.shape[:2])
    fps = args.fps or info.fps or DEFAULT_FPS
    audio = kind == "video" and not args.no_audio and info.has_audio
    source_sq = square_frame(src_full, animator.image_size, source_box)
    count, bad = 0, 0
    with FrameWriter(output, fps=fps, audio_from=driving_path if audio else None, overwrite=args.overwrite) as writer:
        frames = animator.frames(src_full, driving, relative=args.relative, adapt_scale=args.adapt_scale,
                                 best_frame=args.best_frame, find_best_frame=args.find_best_frame,
                                 detector=detector, source_box=source_box, driving_box=driving_box,
                                 keypoints=args.visualize, progress=not args.quiet, total=info.num_frames or None,
                                 smoothing=smoothing_from_text(args.smooth), fps=fps)
        for frame in frames:
            bad += not frame.finite
            pasted = paste_back(src_full, frame.prediction, paste_box, feather=args.feather) if args.paste_back \
                else None
            if args.visualize:
                image = visualize(frame, source_sq, pasted)
            else:
                image = pasted if pasted is not None else frame.prediction
            writer.write(image)
            count += 1
        if bad == count:
            raise ValueError(f"the model {args.checkpoint} produced NaN / inf for every frame (are its weights "
                             "finite?); nothing was written")
    decodes += animator.driving_passes if driving is driving_path else 0
    if bad:
        warn("nonfinite_frames", f"{bad} of {count} frames contained NaN / inf model outputs")
    if info.num_frames and count < info.num_frames:
        warn("truncated_driving", f"the driving video {driving_path} announces {info.num_frames} frames but only "
                                  f"{count} could be decoded (a truncated file?)")
    if audio and writer.audio_error:
        warn("audio_not_copied", writer.audio_error)
    details = [f"{count} frames", f"{fps:g} fps" if kind != "frames" else "PNG frames",
               "with audio" if audio and writer.audio_muxed else "no audio",
               f"reference frame {animator.reference_frame}", f"driving decoded {decodes}x"]
    if source_box is not None or driving_box is not None:
        details.append(f"crop boxes source={source_box} driving={driving_box}")
    print(f"mrfa animate: wrote {output} ({', '.join(details)})" + warn.summary())
    return 0
