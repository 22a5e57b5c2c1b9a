#!/usr/bin/env python
"""MRFA benchmarks, one tool with subcommands.

  python tools/benchmark.py forward [--fixture F.pt | --checkpoint C] [--batch 1 8] [--paths ...]
      every inference path (fp32 reference, channels_last, bf16, refine-levels, compile) side by side: frames/s,
      speed-up, peak RSS, and the prediction's max / mean |diff| and PSNR against the reference (tools/bench_forward.py)
  python tools/benchmark.py profile [--fixture F.pt] [--paths ...]
      per-block account of the reference and the --speed presets: self time, GFLOP, GFLOP/s and share of the
      measured GEMM peak per block (tools/bench_profile.py)
  python tools/benchmark.py kernels      the largest convolutions alone in fp32, bf16 and int8 (tools/bench_kernels.py)
  python tools/benchmark.py flops [--config configs/vox256.yaml] [--batch 1 8] [--device cpu cuda]
      full forward (inference mode): frames/s, peak memory, FLOPs per frame by component.
  python tools/benchmark.py train-step [--config ...] [--batch N]   one optimisation step (alias: --train)
  python tools/benchmark.py animate ...    per-frame animation cost, source cached vs not (tools/bench_animate.py);
      --end-to-end: whole `mrfa animate` commands per --speed preset, idle and beside a competing process
  python tools/benchmark.py app --checkpoint C   the web app vs mrfa animate on the same job (tools/bench_app.py)
  python tools/benchmark.py batch --checkpoint C  reconstruct throughput: 1 process vs torchrun (tools/bench_batch.py)
  python tools/benchmark.py corr [--sizes 256:16 ...]  correlation lookup variants and kernels (tools/bench_corr.py)

Each measurement runs in a fresh subprocess so CPU peak RSS is per configuration. Timings are medians over
``--repeats`` runs after one warm-up. The model is randomly initialised (speed does not depend on the weights).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from mrfa.utils.memory import rss_mib as _rss_mib

ROOT = Path(__file__).resolve().parents[1]


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_forward(config: str, batch: int, device: str, repeats: int, flops: bool) -> dict:
    """Run in a child process: build, warm up, time ``repeats`` forwards; report peak memory."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import mrfa

    cfg = mrfa.load_config(config)
    torch.manual_seed(0)
    model = mrfa.build_model(cfg).to(device).eval()
    size = cfg.model.image_size
    src = torch.rand(batch, 3, size, size, device=device)
    drv = torch.rand(batch, 3, size, size, device=device)
    result: dict = dict(config=config, batch=batch, device=device, size=size,
                        threads=torch.get_num_threads())
    if flops:
        counter = FlopCounterMode(display=False, depth=99)
        with torch.inference_mode(), counter:
            model(src[:1], drv[:1])
        counts = {k: sum(v.values()) for k, v in counter.get_flop_counts().items() if k.startswith("MRFA.")}
        # group the leaf modules by component (methods such as generator.encode are not module calls);
        # the rest is functional work: attention and correlation matmuls
        leaves = [k for k in counts if not any(o.startswith(k + ".") for o in counts)]
        groups: dict = {}
        for k in leaves:
            name = ".".join(k.split(".")[1:3]) if k.startswith("MRFA.refiner.") else k.split(".")[1]
            groups[name] = groups.get(name, 0) + counts[k]
        total = counter.get_total_flops()
        groups["functional (attention, correlation)"] = total - sum(groups.values())
        result["gflop_per_frame"] = total / 1e9
        result["gflop_by_module"] = {k: v / 1e9 for k, v in groups.items()}
    base_rss = _rss_mib()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated() / 2**20
    times = []
    with torch.inference_mode():
        for i in range(repeats + 1):
            _sync(device)
            t0 = time.perf_counter()
            model(src, drv)
            _sync(device)
            if i:
                times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    result.update(seconds_per_batch=t, frames_per_second=batch / t)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result.update(peak_rss_mib=peak_rss, activation_rss_mib=peak_rss - base_rss)
    if device.startswith("cuda"):
        result.update(peak_cuda_mib=torch.cuda.max_memory_allocated() / 2**20,
                      activation_cuda_mib=torch.cuda.max_memory_allocated() / 2**20 - base_cuda,
                      gpu=torch.cuda.get_device_name())
    return result


def _child(args: argparse.Namespace, extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "_child-flops", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cmd_forward(args: argparse.Namespace) -> int:
    import torch

    devices = [d for d in args.device if d == "cpu" or torch.cuda.is_available()]
    skipped = sorted(set(args.device) - set(devices))
    print(f"# MRFA forward benchmark: {args.config}; torch {torch.__version__}"
          + (f"; skipped (not available): {', '.join(skipped)}" if skipped else ""))
    rows = []
    for device in devices:
        for i, batch in enumerate(args.batch):
            extra = ["--config", args.config, "--batch", str(batch), "--device", device,
                     "--repeats", str(args.repeats)] + (["--flops"] if i == 0 and device == devices[0] else [])
            r = _child(args, extra)
            rows.append(r)
            mem = (f"peak CUDA {r['peak_cuda_mib']:.0f} MiB (activations {r['activation_cuda_mib']:.0f})"
                   if "peak_cuda_mib" in r else
                   f"peak RSS {r['peak_rss_mib']:.0f} MiB (forward adds {r['activation_rss_mib']:.0f})")
            print(f"{device:5s} batch {batch:2d}: {r['frames_per_second']:7.2f} frames/s "
                  f"({r['seconds_per_batch'] * 1000:8.1f} ms/batch, {r['threads']} threads), {mem}")
            if "gflop_per_frame" in r:
                parts = ", ".join(f"{k} {v:.1f}" for k, v in sorted(r["gflop_by_module"].items(), key=lambda kv: -kv[1]))
                print(f"      FLOPs per frame: {r['gflop_per_frame']:.1f} GFLOP ({parts})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def cmd_animate(args: argparse.Namespace) -> int:
    import bench_animate  # tools/ is on sys.path when this script runs

    return int(bench_animate.run(args) or 0)


def cmd_train_step(args: argparse.Namespace) -> int:
    import bench_train

    return int(bench_train.run(args) or 0)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_child-flops"):
        p = argparse.ArgumentParser()
        p.add_argument("--config"), p.add_argument("--batch", type=int), p.add_argument("--device")
        p.add_argument("--repeats", type=int), p.add_argument("--flops", action="store_true")
        a = p.parse_args(sys.argv[2:])
        print(json.dumps(measure_forward(a.config, a.batch, a.device, a.repeats, a.flops)))
        return 0
    if sys.argv[1:2] == ["corr"]:  # its own options (tools/bench_corr.py --help)
        import bench_corr

        return int(bench_corr.main(sys.argv[2:]) or 0)
    if "--train" in sys.argv[1:2]:  # the spelling: tools/benchmark.py --train ...
        sys.argv[1] = "train-step"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    import bench_forward

    fw = sub.add_parser("forward", help="inference paths vs the fp32 reference: speed and accuracy")
    bench_forward.add_arguments(fw)
    fw.set_defaults(func=lambda a: bench_forward.run(a))
    import bench_profile

    pr = sub.add_parser("profile", help="per-block account: time, GFLOP, share of the GEMM peak, reference vs presets")
    bench_profile.add_arguments(pr)
    pr.set_defaults(func=lambda a: bench_profile.run(a))
    import bench_kernels

    kn = sub.add_parser("kernels", help="the largest convolutions alone: fp32, bf16, int8")
    bench_kernels.add_arguments(kn)
    kn.set_defaults(func=lambda a: bench_kernels.run(a))
    f = sub.add_parser("flops", help="full forward: frames/s, peak memory, FLOPs by component")
    f.add_argument("--config", default=str(ROOT / "configs" / "vox256.yaml"))
    f.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    f.add_argument("--device", nargs="+", default=["cpu", "cuda"])
    f.add_argument("--repeats", type=int, default=2)
    f.add_argument("--json", default=None, help="also write the rows as JSON here")
    f.set_defaults(func=cmd_forward)
    import bench_animate
    import bench_train

    a = sub.add_parser("animate", help="per-frame animation cost (source cached vs recomputed), memory")
    bench_animate.add_arguments(a)
    a.set_defaults(func=cmd_animate)
    import bench_app

    ap = sub.add_parser("app", help="the web app's overhead over mrfa animate on the same job, first-frame latency")
    bench_app.add_arguments(ap)
    ap.set_defaults(func=lambda a: bench_app.run(a))
    import bench_batch

    bt = sub.add_parser("batch", help="dataset throughput: 1 process x N threads vs N torchrun processes")
    bench_batch.add_arguments(bt)
    bt.set_defaults(func=lambda a: bench_batch.run(a))
    t = sub.add_parser("train-step", help="training step time and peak memory")
    bench_train.add_arguments(t)
    t.set_defaults(func=cmd_train_step)
    args = parser.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
