"""The ``mrfa`` console script: ``mrfa {train,animate,reconstruct,crop,evaluate,convert} ...``.

Each subcommand lives next to the code it drives and exposes ``add_arguments(parser)`` and
``run(args) -> int``; this file only mounts them (imports are lazy so ``mrfa --help`` stays fast).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional

# name -> (module, help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("mrfa.training.cli", "train a model from a YAML config (also: python tools/train.py)"),
    "animate": ("mrfa.inference.cli_animate", "animate a source portrait with a driving video"),
    "reconstruct": ("mrfa.inference.cli_reconstruct", "same-identity reconstruction of a dataset + metrics"),
    "crop": ("mrfa.inference.crop", "VoxCeleb-style face crop of an image or video"),
    "evaluate": ("mrfa.metrics.evaluate", "score predictions against ground truth (L1/PSNR/SSIM/LPIPS/AKD/AED/CSIM)"),
    "convert": ("mrfa.convert", "convert an official MRFA checkpoint into an mrfa snapshot"),
}


def _module_functions(module_name: str):
    module = importlib.import_module(module_name)
    add = getattr(module, "add_arguments", None) or getattr(module, "add_crop_arguments")
    run = getattr(module, "run", None) or getattr(module, "run_crop")
    return add, run


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="mrfa", description="MRFA face animation: train, animate, evaluate.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    name = argv[0]
    if name not in SUBCOMMANDS:
        parser.error(f"unknown command {name!r}; choose from {', '.join(SUBCOMMANDS)}")
    add, run = _module_functions(SUBCOMMANDS[name][0])
    subparser = argparse.ArgumentParser(prog=f"mrfa {name}", description=SUBCOMMANDS[name][1])
    add(subparser)
    args = subparser.parse_args(argv[1:])
    try:
        return int(run(args) or 0)
    except (OSError, ValueError, RuntimeError) as e:  # one clear sentence, non-zero exit
        print(f"mrfa {name}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
