"""Make the README's picture: source | driving | result, a few frames of one clip, from shippable material.

The source is frame 0 of one synthetic test clip (an identity the demo model never saw in training), the driving
video another test clip; the result is ``Animator.animate`` with relative motion. The synthetic faces are built
from scikit-image's public-domain portraits, so the picture may be shipped.

Example::

    python tools/make_figure.py --checkpoint runs/demo/snapshot.pt --data data/synthetic64 \\
        --output docs/images/demo.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mrfa.checkpoint import load_checkpoint
from mrfa.inference.animate import Animator
from mrfa.media.video import read_video, write_image


def figure(animator: Animator, source: np.ndarray, driving: np.ndarray, rows: int, zoom: int) -> np.ndarray:
    """``uint8 [rows*S*zoom, 3*S*zoom, 3]``: per row, source | driving frame | result frame (evenly spaced)."""
    results = np.stack(list(animator.animate(source, list(driving))))  # [T, S, S, 3]
    picks = np.linspace(0, len(driving) - 1, rows).round().astype(int)
    gap = np.full((animator.image_size, 2, 3), 255, np.uint8)
    lines = []
    for t in picks:
        lines.append(np.concatenate([source, gap, driving[t], gap, results[t]], axis=1))
        lines.append(np.full((2, lines[-1].shape[1], 3), 255, np.uint8))
    image = np.concatenate(lines[:-1], axis=0)
    return image.repeat(zoom, axis=0).repeat(zoom, axis=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, type=Path, help="the model (e.g. runs/demo/snapshot.pt)")
    ap.add_argument("--data", required=True, type=Path, help="a synthetic dataset (its test/ split is used)")
    ap.add_argument("--output", required=True, type=Path, help="PNG to write")
    ap.add_argument("--source-clip", type=int, default=4, help="index of the test clip giving the source")
    ap.add_argument("--driving-clip", type=int, default=1, help="index of the test clip giving the motion")
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--zoom", type=int, default=2, help="pixel replication for a visible figure")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    clips = sorted(p for p in (args.data / "test").iterdir() if p.name.endswith(".mp4"))
    if len(clips) < 2:
        raise SystemExit(f"make_figure: error: {args.data / 'test'} holds fewer than two clips")
    animator = Animator(load_checkpoint(args.checkpoint), device="cpu")
    size = animator.image_size
    source = read_video(clips[args.source_clip], size=size)[0]
    driving = read_video(clips[args.driving_clip], size=size)
    write_image(args.output, figure(animator, source, driving, args.rows, args.zoom), overwrite=args.overwrite)
    print(f"make_figure: wrote {args.output} (source {clips[args.source_clip].name}, driving "
          f"{clips[args.driving_clip].name})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
