"""Where the forward's time goes (``python tools/benchmark.py profile``): torch.profiler on the reference path and
on fast paths, in one run, as Markdown tables (operator groups and the top operators by self CPU time).

Each path runs in a fresh child process (same weights and inputs as ``benchmark.py forward``: ``--fixture``,
``--checkpoint`` or a seeded random init of ``--config``): one warm-up forward, then ``--repeats`` profiled
forwards under ``torch.inference_mode``; times are per forward (ms).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from mrfa.utils.machine import cpu_name

import bench_forward  # tools/ is sys.path[0] when a tool runs: the same paths, weights and inputs

GROUPS = (  # (group, substrings of aten / mkldnn op names), first match wins
    ("convolution", ("convolution", "conv2d", "mkldnn_conv")),
    ("matmul / linear", ("addmm", "bmm", "matmul", "::mm", "linear", "baddbmm", "_mkl_linear")),
    ("grid_sample / interpolate", ("grid_sampler", "upsample", "interpolate")),
    ("normalisation", ("batch_norm", "instance_norm", "group_norm", "layer_norm", "native_norm")),
    ("softmax", ("softmax",)),
    ("pooling", ("pool",)),
    ("dtype casts / copies", ("copy_", "to_copy", "::to", "contiguous", "clone")),
)
DEFAULT_PATHS = ("fp32 eager (reference)", "channels_last", "bf16 + channels_last")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    bench_forward.add_arguments(parser)
    parser.set_defaults(batch=[1], repeats=3, paths=list(DEFAULT_PATHS))
    parser.add_argument("--top", type=int, default=10, help="operators listed per path")
    return parser


def _group(name: str) -> str:
    low = name.lower()
    for group, keys in GROUPS:
        if any(k in low for k in keys):
            return group
    return "elementwise / other"


def child(args: argparse.Namespace, path: str, batch: int) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from mrfa.inference.engine import EngineOptions, prepare_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model, src, drv = bench_forward._load(args)
    opts = dict(bench_forward.PATHS[path])
    if opts.get("refine_levels") == -1:
        opts["refine_levels"] = len(model.generator.channels) - 1 if hasattr(model.generator, "channels") else None
    if opts.get("backend") == "onnxruntime":
        raise SystemExit("the profiler sees PyTorch operators only; onnxruntime is not profiled here")
    engine = prepare_model(model, EngineOptions(**opts), torch.device("cpu"))
    src, drv = (x.expand(batch, -1, -1, -1).contiguous() for x in (src, drv))
    if opts.get("channels_last"):
        src, drv = (x.contiguous(memory_format=torch.channels_last) for x in (src, drv))
    with torch.inference_mode():
        engine(src, drv)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.repeats):
                engine(src, drv)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    groups: dict[str, float] = {}
    for e in events:
        groups[_group(e.key)] = groups.get(_group(e.key), 0.0) + e.self_cpu_time_total
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.top]
    per = 1e3 * args.repeats  # microseconds over all repeats -> ms per forward
    return {"path": path, "batch": batch, "total_ms": total / per,
            "groups": {g: t / per for g, t in sorted(groups.items(), key=lambda kv: -kv[1])},
            "top": [{"op": e.key, "ms": e.self_cpu_time_total / per, "calls": e.count // args.repeats}
                    for e in top]}


def run(args: argparse.Namespace) -> int:
    import torch

    weights = (f"fixture {Path(args.fixture).name}" if args.fixture else
               f"checkpoint {args.checkpoint}" if args.checkpoint else f"random init of {args.config}")
    print(f"# forward profile: {weights}; {cpu_name()}; torch {torch.__version__}; "
          f"{torch.get_num_threads()} threads; ms per forward, self CPU time")
    results = []
    for batch in args.batch:
        for path in args.paths:
            child_args = {k: v for k, v in vars(args).items() if not callable(v)}
            cmd = [sys.executable, __file__, "_child", json.dumps(child_args), path, str(batch)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                print(f"\n{path}, batch {batch}: failed: {(proc.stderr.strip().splitlines() or ['?'])[-1][:200]}")
                continue
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    groups = list(dict.fromkeys(g for r in results for g in r["groups"]))
    print("\n| operator group | " + " | ".join(f"{r['path']} (b{r['batch']})" for r in results) + " |")
    print("| --- |" + " --- |" * len(results))
    for g in groups:
        cells = [f"{r['groups'].get(g, 0):.0f} ({100 * r['groups'].get(g, 0) / r['total_ms']:.0f} %)" for r in results]
        print(f"| {g} | " + " | ".join(cells) + " |")
    print("| **total** | " + " | ".join(f"**{r['total_ms']:.0f}**" for r in results) + " |")
    for r in results:
        print(f"\n{r['path']}, batch {r['batch']}: top operators")
        print("| operator | ms | calls | share |")
        print("| --- | --- | --- | --- |")
        for t in r["top"]:
            print(f"| `{t['op']}` | {t['ms']:.1f} | {t['calls']} | {100 * t['ms'] / r['total_ms']:.0f} % |")
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
