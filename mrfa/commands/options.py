"""Options shared by several commands (the inference engine flags)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mrfa.inference.engine import SPEEDS, EngineOptions, speed_preset
from mrfa.utils.device import resolve_device


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """The engine flags shared by the commands (``--backend --precision --channels-last --compile
    --refine-levels``)."""
    g = parser.add_argument_group("inference engine (defaults: the fp32 eager parity reference)")
    g.add_argument("--speed", choices=SPEEDS, default=None,
                   help="one choice for the engine, resolved for this machine: exact (fp32, the parity reference), "
                        "fast (>= 60 dB against fp32), fastest (>= 40 dB); the flags below are for experts")
    g.add_argument("--backend", choices=("torch", "onnxruntime", "openvino"), default="torch",
                   help="onnxruntime / openvino: run an mrfa export folder given as --checkpoint (openvino: CPU, fp32)")
    g.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="bf16: CPUs with AVX512-BF16/AMX and GPUs; fp16: GPUs. Conv blocks only, coordinates stay fp32")
    g.add_argument("--channels-last", action="store_true", help="NHWC memory order for the convolutions")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (slow first frames)")
    g.add_argument("--refine-levels", type=int, default=None, metavar="N",
                   help="refine only the N coarsest levels (paper Table 6: N = levels - 1 stops at H/2); negative: "
                        "all but the -N finest")


def engine_from_args(args: argparse.Namespace) -> EngineOptions:
    """The engine the flags ask for: a ``--speed`` preset resolved for this machine (said on stderr), or the
    expert flags.

    Raises:
        ValueError: ``--speed`` together with an expert flag.
    """
    expert = EngineOptions(backend=args.backend, precision=args.precision, channels_last=args.channels_last,
                           compile=args.compile, refine_levels=args.refine_levels)
    if getattr(args, "speed", None) is None:
        return expert
    if expert != EngineOptions():
        raise ValueError("give --speed or the expert engine flags (--backend, --precision, --channels-last, "
                         "--compile, --refine-levels), not both")
    checkpoint = getattr(args, "checkpoint", None)
    exported = bool(checkpoint) and Path(checkpoint).is_dir()
    options, said = speed_preset(args.speed, resolve_device(getattr(args, "device", "auto")), exported=exported)
    print(f"engine: {said}", file=sys.stderr)
    return options
