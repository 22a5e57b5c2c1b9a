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
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from mrfa.data.video import VideoReadError, video_info, video_kind
from mrfa.inference.animate import AnimatedFrame, Animator, centre_box, iter_frames, load_image, square_frame
from mrfa.inference.crop import CropBox
from mrfa.inference.video_writer import FrameWriter, output_kind

DEFAULT_FPS = 25.0  # for frame folders, which carry no frame rate


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
    m = parser.add_argument_group("motion transfer")
    rel = m.add_mutually_exclusive_group()
    rel.add_argument("--relative", dest="relative", action="store_true", default=True,
                     help="relative motion (official normalize_kp; the default)")
    rel.add_argument("--absolute", dest="relative", action="store_false", help="absolute driving keypoints")
    m.add_argument("--adapt-scale", action="store_true",
                   help="scale the motion by the source / reference keypoint convex-hull areas")
    best = m.add_mutually_exclusive_group()
    best.add_argument("--find-best-frame", action="store_true",
                      help="use the driving frame whose face landmarks are closest to the source's as reference")
    best.add_argument("--best-frame", type=int, default=None, metavar="N", help="reference driving frame index")
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
    r.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (auto: cuda when available)")
    r.add_argument("--batch-size", type=int, default=4, help="driving frames per forward pass")
    r.add_argument("--fps", type=float, default=None, help="output frame rate (default: the driving video's)")
    r.add_argument("--no-audio", action="store_true", help="do not copy the driving video's audio")
    r.add_argument("--visualize", action="store_true",
                   help="side by side: source | driving | result (+ pasted frame), keypoints drawn")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def check_driving(path: Path) -> None:
    """Fail early, with one sentence, for a missing / non-video / empty driving input."""
    if video_kind(path) == "strip":
        raise ValueError(f"driving video {path} is an image; expected a video (mp4/mov/webm/mkv/avi/gif) or a "
                         "folder of frames")
    if video_info(path).num_frames == 0:
        raise VideoReadError(f"driving video {path} contains no frames")


# ------------------------------------------------------------------------------------------ rendering
def keypoint_colors(num: int) -> np.ndarray:
    """``[num, 3]`` uint8 distinct colours (hue wheel)."""
    hue = np.arange(num) / max(num, 1)
    k = (np.array([5.0, 3.0, 1.0])[None] + hue[:, None] * 6.0) % 6.0  # HSV -> RGB with S = V = 1
    rgb = 1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return (rgb * 255).astype(np.uint8)


def draw_keypoints(image: np.ndarray, kp: Optional[np.ndarray]) -> np.ndarray:
    """Draw ``[K, 2]`` keypoints in [-1, 1] (x, y) on a copy of ``uint8 [S, S, 3]`` as coloured discs."""
    from skimage.draw import disk

    out = image.copy()
    if kp is None:
        return out
    size = out.shape[0]
    radius = max(1.5, size / 96)
    for (x, y), colour in zip(kp, keypoint_colors(len(kp))):
        col, row = ((x + 1) * size - 1) / 2, ((y + 1) * size - 1) / 2  # align_corners=False pixel centres
        rr, cc = disk((row, col), radius, shape=out.shape[:2])
        out[rr, cc] = colour
    return out


def visualize(frame: AnimatedFrame, source: np.ndarray, pasted: Optional[np.ndarray] = None) -> np.ndarray:
    """``source | driving | result`` panels (``uint8 [S, 3S(+w), 3]``) with keypoints; ``pasted`` (the full
    paste-back frame) is resized to height S and appended."""
    panels = [draw_keypoints(source, frame.kp_source), draw_keypoints(frame.driving, frame.kp_driving),
              draw_keypoints(frame.prediction, frame.kp_result)]
    if pasted is not None:
        size = source.shape[0]
        width = max(2, int(round(pasted.shape[1] * size / pasted.shape[0] / 2)) * 2)
        panels.append(_resize(pasted, (size, width)))
    return np.concatenate(panels, axis=1)


def _resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from mrfa.data.video import resize_frame

    return resize_frame(image, shape)


# ------------------------------------------------------------------------------------------ command
def run(args: argparse.Namespace) -> int:
    """Execute ``mrfa animate``; returns 0 (errors raise with one clear sentence; ``mrfa`` exits 1)."""
    from mrfa.inference.crop import crop_box_for_image, crop_box_for_video
    from mrfa.inference.face import choose_detector
    from mrfa.inference.paste import paste_back

    source_path, driving_path, output = Path(args.source), Path(args.driving), Path(args.output)
    kind = output_kind(output)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.best_frame is not None and args.best_frame < 0:
        raise ValueError(f"--best-frame must be >= 0, got {args.best_frame}")
    if output.resolve() in (source_path.resolve(), driving_path.resolve()):
        raise ValueError(f"--output {output} would overwrite an input")
    src_full = load_image(source_path, "source")
    check_driving(driving_path)
    info = video_info(driving_path)
    config = None
    if args.config:
        from mrfa.config import load_config

        config = load_config(args.config)
    animator = Animator.from_checkpoint(args.checkpoint, device=args.device, batch_size=args.batch_size,
                                        config=config)
    detector = choose_detector(args.detector) if args.crop != "none" or args.find_best_frame else None
    source_box: Optional[CropBox] = None
    driving_box: Optional[CropBox] = None
    if args.crop in ("both", "source"):
        source_box = crop_box_for_image(src_full, detector=detector, name=f"source {source_path}")
    if args.crop in ("both", "driving"):
        driving_box = crop_box_for_video(iter_frames(driving_path), detector=detector, stride=args.detect_stride,
                                         name=f"driving video {driving_path}")
    paste_box = source_box if source_box is not None else centre_box(*src_full.shape[:2])
    fps = args.fps or info.fps or DEFAULT_FPS
    audio = kind == "video" and not args.no_audio and info.has_audio
    source_sq = square_frame(src_full, animator.image_size, source_box)
    count = 0
    with FrameWriter(output, fps=fps, audio_from=driving_path if audio else None) as writer:
        frames = animator.frames(src_full, driving_path, relative=args.relative, adapt_scale=args.adapt_scale,
                                 best_frame=args.best_frame, find_best_frame=args.find_best_frame,
                                 detector=detector, source_box=source_box, driving_box=driving_box,
                                 keypoints=args.visualize, progress=not args.quiet)
        for frame in frames:
            pasted = paste_back(src_full, frame.prediction, paste_box, feather=args.feather) if args.paste_back \
                else None
            if args.visualize:
                image = visualize(frame, source_sq, pasted)
            else:
                image = pasted if pasted is not None else frame.prediction
            writer.write(image)
            count += 1
    details = [f"{count} frames", f"{fps:g} fps" if kind != "frames" else "PNG frames",
               "with audio" if audio else "no audio", f"reference frame {animator.reference_frame}"]
    if source_box is not None or driving_box is not None:
        details.append(f"crop boxes source={source_box} driving={driving_box}")
    print(f"mrfa animate: wrote {output} ({', '.join(details)})")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m mrfa.inference.cli_animate``: the same as ``mrfa animate``."""
    from mrfa.cli import main as mrfa_main

    return mrfa_main(["animate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
