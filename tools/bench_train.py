"""Training-step benchmark (``python tools/benchmark.py train-step``): time and peak memory of one step.

Runs the real :class:`~mrfa.training.trainer.Trainer` step (objective, backward, clipping, optimiser) on random
images, so it measures what training does, without the data loader.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time

import torch

from mrfa.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. loss.backbone=random (no pretrained VGG needed)")
    parser.add_argument("--batch", type=int, nargs="+", default=[4])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)


def run(args: argparse.Namespace) -> int:
    from mrfa.training.trainer import Trainer

    for batch in args.batch:
        cfg = load_config(args.config, [*args.set, f"train.batch_size={batch}", "train.grad_accum=1"])
        size = cfg.model.image_size
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(cfg, output=tmp, device=args.device, with_data=False)
            g = torch.Generator().manual_seed(0)
            step = {"source": torch.rand(batch, 3, size, size, generator=g),
                    "driving": torch.rand(batch, 3, size, size, generator=g)}
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            times = []
            for i in range(args.repeats + 1):
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                trainer.train_step([step])
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                if i:
                    times.append(time.perf_counter() - t0)
        t = statistics.median(times)
        mem = (f"peak CUDA {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if args.device.startswith("cuda")
               else f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (process)")
        print(f"{args.config} {args.device} batch {batch} x {size}px: {t:.3f} s/step "
              f"({batch / t:.1f} samples/s, {torch.get_num_threads()} threads), {mem}")
    return 0
