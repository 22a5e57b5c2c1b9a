"""``mrfa convert`` / ``tools/convert_official.py``: official MRFA checkpoint -> mrfa snapshot."""
from __future__ import annotations

import argparse
from pathlib import Path

from mrfa.checkpoint import convert_official
from mrfa.config import load_config, read_yaml
from mrfa.official import load_official_config
from mrfa.media.writer import check_output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="official checkpoint ({'model': state_dict} with or without 'module.')")
    parser.add_argument("output", help="where to write the mrfa snapshot (.pt)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--config", default=None,
                        help="config to build with: one of ours (configs/*.yaml) or an official YAML; "
                             "default: inferred from the checkpoint's key names (official 256 px sizes)")


def run(args: argparse.Namespace) -> int:
    check_output(args.output, inputs=[args.input, args.config], overwrite=args.overwrite, what="output")
    config = None
    if args.config:
        data = read_yaml(Path(args.config))
        official = isinstance(data, dict) and ("raft_flow" in data or "train_params" in data or
                                               "model_params" in data)
        config = load_official_config(args.config) if official else load_config(args.config)
    cfg = convert_official(args.input, args.output, config, overwrite=args.overwrite)
    m = cfg.model
    print(f"wrote {args.output}: prior {m.prior}, background {m.background}, prior_only {m.refinement.prior_only}")
    return 0
