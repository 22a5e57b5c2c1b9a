"""Endpoint error of the prior and the refined flow against the synthetic ground truth.

Example (after the demo):
    python tools/flow_accuracy.py --checkpoint runs/demo/snapshot.pt
    python tools/flow_accuracy.py --checkpoint runs/demo/snapshot.pt --data data/synthetic64 --json epe.json

Conventions (source = frame 0, driving = frame t) are documented in mrfa/metrics/flow.py.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

import torch

from mrfa.checkpoint import load_checkpoint
from mrfa.data.synthetic import motion_clips
from mrfa.metrics.flow import evaluate_flow, format_table


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="snapshot or training state (mrfa train output)")
    parser.add_argument("--data", help="synthetic dataset root (default: data.root of the checkpoint's config)")
    parser.add_argument("--split", default="test", help="split folder (default: test)")
    parser.add_argument("--max-videos", type=int, default=None, help="evaluate only the first N clips")
    parser.add_argument("--batch", type=int, default=8, help="driving frames per forward pass (default 8)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    try:
        model = load_checkpoint(args.checkpoint).to(torch.device(args.device))
        root = args.data or model.config.data.root
        result = evaluate_flow(model, motion_clips(root, args.split, args.max_videos), batch=args.batch)
    except (FileNotFoundError, ValueError) as err:
        print(f"flow_accuracy.py: error: {err}", file=sys.stderr)
        return 1
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"checkpoint": args.checkpoint, "data": str(root), **result}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
