"""Options shared by several commands (the inference engine flags)."""
from __future__ import annotations

import argparse

from mrfa.inference.engine import EngineOptions


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """The engine flags shared by the commands (``--backend --precision --channels-last --compile
    --refine-levels``)."""
    g = parser.add_argument_group("inference engine (defaults: the fp32 eager parity reference)")
    g.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch")
    g.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="bf16: CPUs with AVX512-BF16/AMX and GPUs; fp16: GPUs. Conv blocks only, coordinates stay fp32")
    g.add_argument("--channels-last", action="store_true", help="NHWC memory order for the convolutions")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (slow first frames)")
    g.add_argument("--refine-levels", type=int, default=None, metavar="N",
                   help="refine only the N coarsest levels (paper Table 6: N = levels - 1 stops at H/2)")


def engine_from_args(args: argparse.Namespace) -> EngineOptions:
    return EngineOptions(backend=args.backend, precision=args.precision, channels_last=args.channels_last,
                         compile=args.compile, refine_levels=args.refine_levels)
