"""``mrfa reconstruct``: same-identity reconstruction of a dataset with L1 / PSNR / SSIM.

Not a paper box: the command-line front end of :func:`mrfa.inference.reconstruct.reconstruct` (frame 0 of each
test video is the source, every frame drives). Writes ``OUT/png/<video>/*.png`` (8-bit), ``OUT/mp4/<video>.mp4``
and ``OUT/metrics.json``; ``mrfa evaluate --pred OUT/png --gt ROOT/test`` adds LPIPS / AKD / AED.

Example::

    mrfa reconstruct --checkpoint runs/demo/snapshot.pt --data data/vox256 --output recon
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mrfa.commands.options import add_engine_arguments, engine_from_args


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``mrfa reconstruct`` options to ``parser`` and return it."""
    parser.add_argument("--checkpoint", required=True, help="mrfa snapshot / training state / official checkpoint")
    parser.add_argument("--config", default=None, help="YAML config (only for official checkpoints of non-default size)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in an output folder an earlier run wrote (without it, the same command "
                             "again resumes: videos with a matching record are skipped)")
    parser.add_argument("--data", required=True,
                        help="dataset root (its test/ split is used), a folder of videos, or one video")
    parser.add_argument("--output", required=True, help="output folder (png/, mp4/, metrics.json)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (auto: cuda when available)")
    parser.add_argument("--batch-size", type=int, default=8, help="driving frames per forward pass")
    parser.add_argument("--max-videos", type=int, default=None, help="only the first N videos")
    parser.add_argument("--max-frames", type=int, default=None, help="only the first N frames of each video")
    parser.add_argument("--no-mp4", action="store_true", help="skip the side-by-side viewing mp4s")
    parser.add_argument("--truncate-png", action="store_true",
                        help="write PNGs with the official (255 * x).astype(uint8) truncation instead of rounding")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    add_engine_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Execute ``mrfa reconstruct``; returns 0 (errors raise with one clear sentence; ``mrfa`` exits 1)."""
    from mrfa.inference.reconstruct import reconstruct

    for name in ("batch_size", "max_videos", "max_frames"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    from mrfa.inference.batch import init_batch

    dist = init_batch(args.device)
    png = reconstruct(args.checkpoint, args.data, args.output, config=args.config, device=args.device, dist=dist,
                      batch_size=args.batch_size, max_videos=args.max_videos, max_frames=args.max_frames,
                      write_mp4=not args.no_mp4, png_rounding="truncate" if args.truncate_png else "round",
                      progress=not args.quiet, overwrite=args.overwrite, engine=engine_from_args(args))
    if not dist.is_main:
        return 0
    report = json.loads((Path(args.output) / "metrics.json").read_text())
    overall = report["overall"]
    means = ", ".join(f"{k.upper()} {v if isinstance(v, str) else f'{v:.4f}'}" for k, v in overall["mean"].items())
    print(f"mrfa reconstruct: {overall['videos']} videos, {overall['frames']} frames: {means}")
    print(f"  frames: {png}\n  report: {Path(args.output) / 'metrics.json'}")
    failed = report.get("failed_items") or []
    for item in failed:
        print(f"mrfa reconstruct: warning: {item['item']} failed: {item['error']}", file=sys.stderr)
    return 1 if failed else 0
