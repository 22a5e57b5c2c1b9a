"""Jitter, flicker and head-pose tracks of driving videos, and what motion smoothing does to an animation.

    python tools/temporal_stability.py VIDEO [VIDEO ...]                          # the videos' own figures
    python tools/temporal_stability.py VIDEO ... --checkpoint C --source IMG      # + animated, raw vs --smooth

Uses the evaluation protocol of ``mrfa evaluate`` (docs/evaluation.md; offline dlib 68 landmarks), with every frame
analysed at 256 px: driving videos are centre-cropped to a square and resized, animations are upscaled from the
model size and compared with the model-size driving frames the model saw (upscaled the same way). Per video:
jitter / flicker (x1e-3), the driving's head-pose track (standard deviation and range of yaw / pitch / roll), and
for animations AKD (px at 256), pose error (degrees), expression error and the mouth-openness correlation against
the driving frames. Prints Markdown rows and writes --json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from mrfa.media.face import FaceResult
from mrfa.media.frames import square_frame
from mrfa.media.video import iter_video_frames, resize_frame, video_info
from mrfa.metrics.evaluate import EvalOptions, Scorer
from mrfa.metrics.image import MetricAggregator

SIZE = 256
METRICS = ("akd", "pose", "expression", "jitter", "flicker")


def square(frame: np.ndarray, size: int = SIZE) -> np.ndarray:
    """The centred square of ``frame`` at ``size`` px (the same rule as the Animator's)."""
    return square_frame(frame, size)


def score(scorer: Scorer, key: str, out: list[np.ndarray], ref: list[np.ndarray]) -> dict:
    agg = MetricAggregator()
    names = [f"{i:07d}" for i in range(len(out))]
    scorer.score_video(agg, key, names, np.stack(out), np.stack(ref), source=FaceResult())
    block = scorer.temporal[key]
    mean = agg.overall()["mean"]
    row = {"frames": len(out), "no_face": block["frames_without_face"], "jitter": block["jitter"],
           "flicker": block["flicker"], "akd": mean.get("akd_driving"), "pose_error": mean.get("pose_error"),
           "expression_error": mean.get("expression_error"), "mouth_corr": block.get("mouth_open_corr")}
    track = np.array([p for p in block["pose_track"]["ref"] if p is not None], dtype=np.float64)
    if len(track):
        row["ref_pose_std"] = track.std(axis=0).round(2).tolist()  # yaw, pitch, roll
        row["ref_pose_range"] = (track.max(axis=0) - track.min(axis=0)).round(1).tolist()
        row["ref_jitter"] = block["jitter_ref"]
    return row


def _fmt(v, scale: float = 1.0, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v * scale:.{digits}f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="+")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--source", default=None)
    p.add_argument("--smooth", default="1.0,5.0", help="MIN_CUTOFF,BETA of the smoothed animation")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    scorer = Scorer(EvalOptions(metrics=METRICS, face_backend="dlib", strict=True))
    animator = smooth = None
    if args.checkpoint:
        from mrfa.inference.animate import Animator
        from mrfa.inference.smoothing import smoothing_from_text

        if args.source is None:
            p.error("--checkpoint needs --source")
        animator = Animator.from_checkpoint(args.checkpoint, device="cpu")
        smooth = smoothing_from_text(args.smooth)
    rows = []
    print("| video | run | frames | no face | jitter x1e3 | flicker x1e3 | AKD px | pose err deg | expr err | "
          "mouth corr | driving yaw/pitch/roll std deg | s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for video in args.videos:
        frames = list(iter_video_frames(video))[: args.max_frames]
        fps = video_info(video).fps or 25.0
        runs: dict[str, tuple[list, list, float]] = {}
        sq = [square(f) for f in frames]
        runs["driving (itself)"] = (sq, sq, 0.0)
        if animator is not None:
            for name, params in (("animated", None), ("animated + smooth", smooth)):
                start = time.perf_counter()
                out = list(animator.frames(args.source, frames, smoothing=params, fps=fps))
                seconds = time.perf_counter() - start
                runs[name] = ([resize_frame(f.prediction, SIZE) for f in out],
                              [resize_frame(f.driving, SIZE) for f in out], seconds)
        for name, (out, ref, seconds) in runs.items():
            r = {"video": video, "run": name, "seconds": round(seconds, 2),
                 **score(scorer, f"{Path(video).stem}/{name}", out, ref)}
            rows.append(r)
            std = "/".join(f"{v:.1f}" for v in r.get("ref_pose_std", [])) or "n/a"
            print(f"| {Path(video).parent.name}/{Path(video).name} | {name} | {r['frames']} | {r['no_face']} | "
                  f"{_fmt(r['jitter'], 1e3)} | {_fmt(r['flicker'], 1e3)} | {_fmt(r['akd'])} | "
                  f"{_fmt(r['pose_error'])} | {_fmt(r['expression_error'], 1, 3)} | {_fmt(r['mouth_corr'])} | {std} | "
                  f"{r['seconds']:.1f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
