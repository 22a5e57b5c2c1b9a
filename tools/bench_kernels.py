"""The model's largest convolutions alone (``python tools/benchmark.py kernels``): fp32, bf16 and int8 side by side.

Each row is one convolution shape of the vox256 model at batch 1 (the refinement's 256 px level, the generator's
finest decoder block, the motion encoder's correlation input), timed in this process: the best of ``--repeats``
calls after a warm-up, channels_last, with the intra-op threads torch uses. int8 is PyTorch's quantized
convolution (the x86 engine: oneDNN / FBGEMM with VNNI or AMX int8 where the CPU has them), input and weights
quantized per tensor, the quantize / dequantize steps timed too, as a model would pay them. The accuracy column
is the int8 output's error relative to the fp32 output's spread on random data (no calibration).
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

from mrfa.utils.machine import cpu_name

# (name, in channels, out channels, kernel, side) of the vox256 model's heaviest convolutions
SHAPES = (
    ("refine head conv1 256 px", 256, 128, 3, 256),
    ("refine head convc1 256 px", 192, 128, 3, 256),
    ("motion encoder conv 256 px", 160, 126, 3, 256),
    ("generator up block 256 px", 128, 64, 3, 256),
    ("generator up block 128 px", 256, 128, 3, 128),
)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    return parser


def _best(fn: Callable, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def run(args: argparse.Namespace) -> int:
    import torch
    import torch.ao.nn.quantized as nnq

    from mrfa.inference.engine import cpu_supports_bf16

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.quantized.engine = "x86" if "x86" in torch.backends.quantized.supported_engines else \
        torch.backends.quantized.supported_engines[-1]
    bf16 = cpu_supports_bf16()
    print(f"# convolutions alone: {cpu_name()}; torch {torch.__version__}; {torch.get_num_threads()} threads; "
          f"quantized engine {torch.backends.quantized.engine}; ms per call, best of {args.repeats}")
    print("| convolution | GFLOP | fp32 ms | bf16 ms | int8 ms (with quantize / dequantize) | int8 vs bf16 | "
          "int8 error / output std |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for name, cin, cout, k, side in SHAPES:
            conv = torch.nn.Conv2d(cin, cout, k, padding=k // 2).eval().to(memory_format=torch.channels_last)
            x = torch.relu(torch.randn(1, cin, side, side, generator=g)).contiguous(memory_format=torch.channels_last)
            gflop = 2 * cin * cout * k * k * side * side / 1e9
            t32 = _best(lambda: conv(x), args.repeats)
            tb = float("nan")
            if bf16:
                cb, xb = conv.to(torch.bfloat16), x.to(torch.bfloat16)
                tb = _best(lambda: cb(xb), args.repeats)
                conv = conv.float()
            ref = conv(x)
            scale_x = float(x.max()) / 255
            qconv = nnq.Conv2d(cin, cout, k, padding=k // 2)
            wq = torch.quantize_per_tensor(conv.weight.detach(), float(conv.weight.abs().max()) / 127, 0, torch.qint8)
            qconv.set_weight_bias(wq, conv.bias.detach())
            qconv.scale, qconv.zero_point = float(ref.abs().max()) / 127, 128

            def int8() -> torch.Tensor:
                xq = torch.quantize_per_tensor(x, scale_x, 0, torch.quint8)
                return qconv(xq).dequantize()

            t8 = _best(int8, args.repeats)
            err = float((int8() - ref).abs().mean() / ref.std())
            print(f"| {name} | {gflop:.1f} | {1e3 * t32:.1f} | {1e3 * tb:.1f} | {1e3 * t8:.1f} | "
                  f"{tb / t8:.2f}x | {err:.3f} |", flush=True)
    return 0


def main(argv=None) -> int:
    return run(add_arguments(argparse.ArgumentParser(description=__doc__)).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
