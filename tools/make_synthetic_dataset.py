"""Write the embedded synthetic talking-face dataset (FOMM layout + ground-truth motion), no download needed.

Example:
    python tools/make_synthetic_dataset.py --output data/synthetic
    python tools/make_synthetic_dataset.py --output /tmp/synth --num-train 8 --num-test 2 --frames 16 --size 64

See mrfa/data/synthetic.py for the model of the clips and the motion convention.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from mrfa.data.synthetic import generate_dataset


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="dataset root to write (gets train/ and test/)")
    parser.add_argument("--num-train", type=int, default=40, help="training clips (default 40)")
    parser.add_argument("--num-test", type=int, default=8, help="test clips, identities unseen in train (default 8)")
    parser.add_argument("--frames", type=int, default=32, help="frames per clip (default 32)")
    parser.add_argument("--size", type=int, default=128, help="frame side in pixels (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    parser.add_argument("--clips-per-identity", type=int, default=4, help="clips per identity (default 4)")
    parser.add_argument("--format", choices=("png", "mp4"), default="png",
                        help="png: frame folders named *.mp4 (lossless, fastest to load; default); mp4: H.264 files")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate of mp4 files (default 25)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing train/ and test/ folders")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        summary = generate_dataset(args.output, num_train=args.num_train, num_test=args.num_test,
                                   num_frames=args.frames, size=args.size, seed=args.seed,
                                   clips_per_identity=args.clips_per_identity, video_format=args.format,
                                   fps=args.fps, overwrite=args.overwrite, verbose=True)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {summary['num_train']} train + {summary['num_test']} test clips "
          f"({summary['num_frames']} frames, {summary['size']} px, {summary['video_format']}) to {args.output} "
          f"in {summary['seconds']} s; ground-truth check MAE of first clips: {summary['first_clip_check_mae']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
