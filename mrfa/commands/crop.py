"""``mrfa crop``: a VoxCeleb-style square face crop of an image or a video (the geometry is
:mod:`mrfa.media.crop`, the faces :mod:`mrfa.media.face`).

Example::

    mrfa crop --input interview.mp4 --output face.mp4 --box-json face-box.json
"""
from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from mrfa.media import face
from mrfa.media.crop import apply_crop, crop_box_for_image, crop_box_for_video
from mrfa.media.video import (
    IMAGE_OUTPUT_SUFFIXES,
    VIDEO_FILE_SUFFIXES,
    iter_video_frames,
    read_image,
    video_info,
    write_image,
)
from mrfa.media.writer import FrameWriter, check_output, output_kind, write_json

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``mrfa crop`` options to a (sub)parser and return it."""
    parser.add_argument("--input", required=True, help="image or video to crop")
    parser.add_argument("--output", required=True, help="output image (.png/.jpg/.webp/.bmp), or .mp4 for a video")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--size", type=int, default=256, help="output side in pixels (default 256)")
    parser.add_argument("--detector", choices=["auto", "dlib", "face_alignment"], default="auto",
                        help="face detector; auto uses face_alignment if its weights are present, else dlib")
    parser.add_argument("--increase", type=float, default=0.1,
                        help="VoxCeleb enlargement of the face box per side (default 0.1)")
    parser.add_argument("--border", choices=["fit", "shift", "pad"], default="fit",
                        help="when the crop leaves the frame: fit = shift it inside and shrink it to the frame "
                        "if needed (no padding, default); shift = shift inside, pad only if larger than the frame; "
                        "pad = keep it centred on the face and pad")
    parser.add_argument("--pad-mode", choices=["edge", "constant"], default="edge",
                        help="padding for parts of the crop outside the frame (default edge)")
    parser.add_argument("--stride", type=int, default=1, help="detect faces on every N-th video frame (default 1)")
    parser.add_argument("--box-json", default=None,
                        help="also write the crop box and frame size as JSON (for paste-back)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``mrfa crop``: detect, crop to a VoxCeleb-style square, write an image or an mp4 (atomically).

    Raises:
        FileNotFoundError: the input does not exist. NoFaceError: no face in the input.
        ValueError / OutputError: inconsistent options, or an output that would overwrite an input or an existing
            file without ``--overwrite``.
    """
    src, dst = Path(args.input), Path(args.output)
    if not src.is_file():
        raise FileNotFoundError(f"input file {src} does not exist")
    if not 16 <= args.size <= 4096:
        raise ValueError(f"--size must be between 16 and 4096 pixels, got {args.size}")
    if not (math.isfinite(args.increase) and 0.0 <= args.increase <= 2.0):
        raise ValueError(f"--increase must be a number between 0 and 2, got {args.increase}")
    if args.stride < 1:
        raise ValueError(f"--stride must be >= 1, got {args.stride}")
    video = src.suffix.lower() in VIDEO_FILE_SUFFIXES
    out_suffix = dst.suffix.lower()
    if video and out_suffix != ".mp4":
        raise ValueError(f"the input {src} is a video, so the output {dst} must end in .mp4")
    if not video and out_suffix not in IMAGE_OUTPUT_SUFFIXES:
        raise ValueError(f"the input {src} is an image, so the output {dst} must be an image file "
                         f"({', '.join(IMAGE_OUTPUT_SUFFIXES)})")
    if video and args.size % 2:
        raise ValueError(f"--size must be even for mp4 output (yuv420p), got {args.size}")
    check_output(dst, inputs=[src], overwrite=args.overwrite)
    if args.box_json:
        check_output(args.box_json, inputs=[src, dst], overwrite=args.overwrite, what="--box-json")
    detector = face.choose_detector(args.detector)
    if not video:
        img = read_image(src)
        box = crop_box_for_image(img, detector=detector, increase=args.increase, border=args.border, name=str(src))
        write_image(dst, apply_crop(img, box, args.size, pad_mode=args.pad_mode), overwrite=args.overwrite)
        height, width = img.shape[:2]
        frames = 1
    else:
        info = video_info(src)
        box = crop_box_for_video(iter_video_frames(src), detector=detector, increase=args.increase,
                                 border=args.border, stride=args.stride, name=str(src))
        height, width = info.height, info.width
        with FrameWriter(dst, fps=info.fps or 25.0, crf=18, overwrite=args.overwrite,
                         audio_from=src if info.has_audio and output_kind(dst) == "video" else None) as writer:
            for frame in iter_video_frames(src):
                writer.write(apply_crop(frame, box, args.size, pad_mode=args.pad_mode))
        frames = writer.frames_written
    if args.box_json:
        write_json(args.box_json, {**box.to_dict(), "frame_height": height, "frame_width": width, "size": args.size,
                                   "detector": detector.name}, indent=2, overwrite=args.overwrite)
    print(f"mrfa crop: wrote {dst} ({frames} frame{'s' if frames != 1 else ''}, box {box})")
    return 0
