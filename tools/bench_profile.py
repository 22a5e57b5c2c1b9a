"""Where the forward's time goes, block by block (``python tools/benchmark.py profile``): for the reference path
and the fast paths, in one run, each block's time, GFLOP, achieved GFLOP/s and its fraction of this CPU's
measured matmul peak (fp32 for fp32 paths, bf16 for bf16 paths).

Blocks are timed with wall-clock hooks around module calls (keypoint detector, dense motion, structure encoders,
motion encoder / refine head / context per level, generator encoder and decoder) and around the functional steps
(correlation pyramid, correlation lookup, ``grid_sample`` warps, the engine's bf16 casts). Time is *self* time: a
block's time minus the blocks timed inside it, so the rows add up to the forward; "outside the blocks" is the
rest (resizes, flow sums, the model's glue). FLOPs come from ``torch.utils.flop_counter`` in a separate pass
(convolutions, matmuls, attention; elementwise work and ``grid_sample`` count as 0).

The peak is measured in the same child process before the model runs: the best of 5 square matmuls
and channels_last 1x1 convolutions (``--peak-size``, default 2048) with the same thread count, in fp32 and, where
the CPU has native bf16, in bf16.
Each path runs in a fresh child process with the weights and inputs of ``benchmark.py forward`` (``--fixture``,
``--checkpoint`` or a seeded random init of ``--config``): one warm-up forward, then ``--repeats`` timed ones.
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Optional

from mrfa.utils.machine import cpu_name

import bench_forward  # tools/ is sys.path[0] when a tool runs: the same paths, weights and inputs

DEFAULT_PATHS = ("fp32 eager (reference)", "--speed exact", "--speed fast", "--speed fastest")
OUTSIDE = "outside the blocks (resize, flow sums, glue)"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    bench_forward.add_arguments(parser)
    parser.set_defaults(batch=[1], repeats=3, paths=list(DEFAULT_PATHS))
    parser.add_argument("--peak-size", type=int, default=2048, help="matmul size of the peak measurement")
    return parser


class BlockClock:
    """A stack of open blocks; each close adds the block's self time (and self FLOPs) to its row."""

    def __init__(self, flops: Optional[Callable[[], int]] = None) -> None:
        self.flops = flops or (lambda: 0)
        self.stack: list[list[Any]] = []  # [name, t0, child seconds, flops0, child flops]
        self.seconds: dict[str, float] = defaultdict(float)
        self.gflop: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def open(self, name: str) -> None:
        self.stack.append([name, time.perf_counter(), 0.0, self.flops(), 0])

    def close(self) -> None:
        name, t0, child_s, f0, child_f = self.stack.pop()
        seconds, flops = time.perf_counter() - t0, self.flops() - f0
        self.seconds[name] += seconds - child_s
        self.gflop[name] += (flops - child_f) / 1e9
        if not self.stack or self.stack[-1][0] != name:  # a recursive call is one call
            self.calls[name] += 1
        if self.stack:
            self.stack[-1][2] += seconds
            self.stack[-1][4] += flops

    def wrap(self, fn: Callable, label: Callable[..., str] | str) -> Callable:
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            self.open(label(*args, **kwargs) if callable(label) else label)
            try:
                return fn(*args, **kwargs)
            finally:
                self.close()
        return timed

    def hook(self, module, label: Callable[..., str] | str) -> None:
        module.register_forward_pre_hook(lambda m, args: self.open(label(*args) if callable(label) else label))
        module.register_forward_hook(lambda m, args, out: self.close())


def _level(x, *rest) -> str:
    return f"{x.shape[-1]} px"


def instrument(model, clock: BlockClock) -> list[tuple[object, str, Any]]:
    """Hook the model's blocks and wrap the functional steps; returns what to restore afterwards."""
    import torch.nn.functional as F

    import mrfa.inference.engine as engine
    import mrfa.nn.refiner as refiner_mod

    patched: list[tuple[object, str, Any]] = []

    def patch(owner, name: str, label) -> None:
        original = getattr(owner, name)
        patched.append((owner, name, original))
        setattr(owner, name, clock.wrap(original, label))

    kp = model.kp_detector
    if hasattr(kp, "pre_feature"):
        clock.hook(kp.pre_feature, "keypoint detector: HRNet (x2)")
        clock.hook(kp.transformer, "keypoint detector: transformer (x2)")
    clock.hook(kp, "keypoint detector: heatmaps, jacobians (x2)")
    if model.dense_motion is not None:
        clock.hook(model.dense_motion, "dense motion (prior): rest")
        clock.hook(model.dense_motion.hourglass, "dense motion (prior): hourglass")
    if model.bg_predictor is not None:
        clock.hook(model.bg_predictor, "background predictor")
    r = model.refiner
    if not r.prior_only:
        clock.hook(r.source, "structure encoder (source)")
        clock.hook(r.driving, "structure encoder (driving)")
        clock.hook(r.motion_encoder, lambda flow, corr: f"motion encoder {flow.shape[-1]} px")
        clock.hook(r.refine_head, lambda motion, ctx: f"refine head {motion.shape[-1]} px")
        for conv in r.to_context:
            clock.hook(conv, lambda x: f"context {x.shape[-1]} px")
        patch(refiner_mod, "correlation_state", "correlation: volume + pyramid")
        patch(refiner_mod, "corr_lookup", "correlation: lookup")
        patch(refiner_mod, "corr_lookup_onthefly", "correlation: lookup")
    clock.hook(r, OUTSIDE)  # the refiner's own glue counts with the model's
    patch(model.generator, "encode", "generator encoder")
    patch(model.generator, "decode", "generator decoder")
    patch(F, "grid_sample", "warps (grid_sample)")
    patch(engine, "_cast", "bf16 casts")
    return patched


def measure_peak(size: int, bf16: bool) -> dict[str, float]:
    """Best-of-5 GFLOP/s of this CPU's GEMM in fp32 (and bf16): the better of a square matmul (``size``; MKL in
    fp32) and the same GEMM as a channels_last 1x1 convolution (oneDNN, the library the model's convolutions use;
    on some CPUs it is twice as fast as MKL's sgemm)."""
    import torch

    out = {}
    side = size // 32  # the convolution's image: side^2 pixels x (size/2) channels, the same order of work
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if name == "bf16" and not bf16:
            continue
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        conv = torch.nn.Conv2d(size // 2, size // 2, 1, bias=False).to(dtype).to(memory_format=torch.channels_last)
        x = torch.randn(1, size // 2, side, side, dtype=dtype).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            rates = []
            gemms = ((lambda: torch.mm(a, b), 2 * size ** 3), (lambda: conv(x), 2 * (size // 2) ** 2 * side ** 2))
            for fn, flop in gemms:
                fn()
                rates.append(flop / min(_timed(fn) for _ in range(5)) / 1e9)
        out[name] = max(rates)
    return out


def _timed(fn: Callable) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def child(args: argparse.Namespace, path: str, batch: int) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mrfa.inference.engine import EngineOptions, cpu_supports_bf16, prepare_model

    if args.threads:
        torch.set_num_threads(args.threads)
    peak = measure_peak(args.peak_size, cpu_supports_bf16())
    model, src, drv = bench_forward._load(args)
    opts = bench_forward.path_options(path)
    if opts.get("backend", "torch") != "torch" or opts.get("compile"):
        raise SystemExit(f"{path}: the block account times the PyTorch eager engine only")
    engine = prepare_model(model, EngineOptions(**opts), torch.device("cpu"))
    src, drv = (x.expand(batch, -1, -1, -1).contiguous() for x in (src, drv))
    if opts.get("channels_last"):
        src, drv = (x.contiguous(memory_format=torch.channels_last) for x in (src, drv))

    with torch.inference_mode():  # FLOPs: one forward under the counter
        counter = FlopCounterMode(display=False)
        flop_clock = BlockClock(counter.get_total_flops)
        restore = instrument(model, flop_clock)
        with counter:
            flop_clock.open(OUTSIDE)
            engine(src, drv)
            flop_clock.close()
        for owner, name, original in restore:
            setattr(owner, name, original)
        model, src, drv = bench_forward._load(args)  # fresh hooks: rebuild the model for the timing pass
        engine = prepare_model(model, EngineOptions(**opts), torch.device("cpu"))
        src, drv = (x.expand(batch, -1, -1, -1).contiguous() for x in (src, drv))
        if opts.get("channels_last"):
            src, drv = (x.contiguous(memory_format=torch.channels_last) for x in (src, drv))
        engine(src, drv)  # warm-up, not instrumented
        clock = BlockClock()
        restore = instrument(model, clock)
        totals = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            clock.open(OUTSIDE)
            engine(src, drv)
            clock.close()
            totals.append(time.perf_counter() - t0)
        for owner, name, original in restore:
            setattr(owner, name, original)
    n = args.repeats
    rows = {name: {"ms": 1e3 * s / n / batch, "calls": clock.calls[name] // n,
                   "gflop": flop_clock.gflop.get(name, 0.0) / batch}
            for name, s in clock.seconds.items()}
    return {"path": path, "batch": batch, "peak": peak, "total_ms": 1e3 * statistics.median(totals) / batch,
            "gflop": counter.get_total_flops() / 1e9 / batch, "bf16": opts.get("precision") == "bf16",
            "rows": rows}


ORDER = ("keypoint detector", "dense motion", "background", "structure encoder", "correlation", "motion encoder",
         "context", "refine head", "generator encoder", "generator decoder", "warps", "bf16 casts", "outside")


def _sort_key(name: str) -> tuple:
    head = next((i for i, k in enumerate(ORDER) if name.startswith(k)), len(ORDER))
    digits = "".join(c for c in name if c.isdigit())
    return head, int(digits) if digits and "px" in name else 0, name


def run(args: argparse.Namespace) -> int:
    import torch

    weights = (f"fixture {Path(args.fixture).name}" if args.fixture else
               f"checkpoint {args.checkpoint}" if args.checkpoint else f"random init of {args.config}")
    results = []
    for batch in args.batch:
        for path in args.paths:
            child_args = {k: v for k, v in vars(args).items() if not callable(v)}
            cmd = [sys.executable, __file__, "_child", json.dumps(child_args), path, str(batch)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                print(f"{path}, batch {batch}: failed: {(proc.stderr.strip().splitlines() or ['?'])[-1][:200]}")
                continue
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    if not results:
        return 1
    peak = results[0]["peak"]
    peaks = ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items())
    print(f"# per-block account: {weights}; {cpu_name()}; torch {torch.__version__}; "
          f"{args.threads or torch.get_num_threads()} threads; ms per frame (self time); matmul peak {peaks}")
    names = sorted({n for r in results for n in r["rows"]}, key=_sort_key)
    head = " | ".join(f"{r['path']} (b{r['batch']}): ms / GFLOP/s / % peak" for r in results)
    print(f"\n| block | calls | GFLOP | {head} |")
    print("| --- | --- | --- |" + " --- |" * len(results))
    for name in names:
        ref = next((r["rows"][name] for r in results if name in r["rows"]), None)
        cells = []
        for r in results:
            row = r["rows"].get(name)
            if row is None or row["ms"] < 0.05:
                cells.append("-")
                continue
            rate = row["gflop"] / (row["ms"] / 1e3)
            p = peak["bf16" if r["bf16"] and "bf16" in peak else "fp32"]
            cells.append(f"{row['ms']:.1f} / {rate:.0f} / {100 * rate / p:.0f} %" if row["gflop"] > 1e-3
                         else f"{row['ms']:.1f}")
        print(f"| {name} | {ref['calls']} | {ref['gflop']:.2f} | " + " | ".join(cells) + " |")
    cells = []
    for r in results:
        rate = r["gflop"] / (r["total_ms"] / 1e3)
        p = peak["bf16" if r["bf16"] and "bf16" in peak else "fp32"]
        cells.append(f"**{r['total_ms']:.0f}** / {rate:.0f} / {100 * rate / p:.0f} %")
    print(f"| **forward** | | {results[0]['gflop']:.1f} | " + " | ".join(cells) + " |")
    for r in results:
        bound = r["gflop"] / peak["bf16" if r["bf16"] and "bf16" in peak else "fp32"] * 1e3
        print(f"\n{r['path']}: {r['gflop']:.1f} GFLOP per frame; at the matmul peak it would take {bound:.0f} ms, "
              f"it takes {r['total_ms']:.0f} ms ({100 * bound / r['total_ms']:.0f} % of the bound)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["_child"]:
        args = argparse.Namespace(**json.loads(argv[1]))
        print(json.dumps(child(args, argv[2], int(argv[3]))))
        return 0
    return run(add_arguments(argparse.ArgumentParser(description=__doc__)).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
