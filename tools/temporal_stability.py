"""Landmark jitter and flicker of videos (mrfa.metrics.temporal), and of animations with and without smoothing.

    python tools/temporal_stability.py VIDEO [VIDEO ...]                          # the videos' own jitter
    python tools/temporal_stability.py VIDEO ... --checkpoint C --source IMG      # + animated, raw vs --smooth

Landmarks: the offline dlib backend (68 points); frames are analysed at 256 px (animations are upscaled to 256 px
for the detector). Prints one Markdown row per video and writes --json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from mrfa.media.face import make_landmark_backend
from mrfa.media.video import iter_video_frames, resize_frame, video_info
from mrfa.metrics.temporal import flicker, landmark_jitter

SIZE = 256


def _landmarks(frames, backend) -> tuple[list, list]:
    tracks, boxes = [], []
    for f in frames:
        res = backend.analyze(f, landmarks=True)
        tracks.append(res.landmarks)
        boxes.append(res.box)
    return tracks, boxes


def measure(frames: list[np.ndarray], backend) -> dict:
    frames = [resize_frame(f, SIZE) for f in frames]
    tracks, boxes = _landmarks(frames, backend)
    return {**landmark_jitter(tracks), **flicker(np.stack(frames), boxes)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="+")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--source", default=None)
    p.add_argument("--smooth", default="1.0,5.0", help="MIN_CUTOFF,BETA of the smoothed animation")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    backend = make_landmark_backend("dlib")
    animator = None
    if args.checkpoint:
        from mrfa.inference.animate import Animator
        from mrfa.inference.smoothing import OneEuroParams

        animator = Animator.from_checkpoint(args.checkpoint, device="cpu")
        cutoff, beta = (float(v) for v in args.smooth.split(","))
        smooth = OneEuroParams(cutoff, beta)
    rows = []
    print("| video | frames | no face | jitter x1e3 | jitter_sigma x1e3 | flicker x1e3 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for video in args.videos:
        frames = list(iter_video_frames(video))[: args.max_frames]
        fps = video_info(video).fps or 25.0
        runs = {"driving": frames}
        if animator is not None:
            runs["animated"] = [f.prediction for f in animator.frames(args.source, frames)]
            runs["animated + smooth"] = [f.prediction for f in animator.frames(args.source, frames,
                                                                               smoothing=smooth, fps=fps)]
        for name, fr in runs.items():
            r = {"video": video, "what": name, **measure(fr, backend)}
            rows.append(r)
            print(f"| {Path(video).name} {name} | {int(r['frames'])} | {int(r['frames_without_face'])} | "
                  f"{1e3 * r['jitter']:.2f} | {1e3 * r['jitter_sigma']:.2f} | {1e3 * r['flicker']:.2f} |",
                  flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
