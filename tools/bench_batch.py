"""Throughput of dataset-scale reconstruction (``python tools/benchmark.py batch``).

On one generated dataset (``--videos`` clips of ``--frames`` frames at ``--size`` px) and one checkpoint, in one
run: ``mrfa reconstruct`` as 1 process x N threads and through ``torchrun`` as N processes x 1 thread (wall time,
items/s, frames/s), and the per-frame costs of the three stages measured in-process on one thread (decode,
model, PNG + mp4 encode), from which an estimate for more processes or GPUs follows.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="model (e.g. runs/demo/snapshot.pt)")
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", type=int, default=256, help="frame size of the generated clips")
    parser.add_argument("--procs", type=int, default=2, help="processes of the torchrun run (= threads of the other)")
    parser.add_argument("--json", default=None)


def _dataset(root: Path, videos: int, frames: int, size: int) -> None:
    from mrfa.data.synthetic import TEMPLATES, make_identity, render_clip, sample_trajectory
    from mrfa.media.video import write_video

    rng = np.random.default_rng(0)
    (root / "test").mkdir(parents=True)
    for i in range(videos):
        template = TEMPLATES["astronaut" if i % 2 else "cameraman"]
        clip = render_clip(make_identity(template, size, rng, f"id{i}"), sample_trajectory(frames, size, rng), size)[0]
        write_video(root / "test" / f"clip{i:03d}.mp4", clip, fps=25)


def _stage_costs(checkpoint: str, video: Path) -> dict[str, float]:
    """Seconds per frame of decode, model and encode for one clip, on one thread."""
    import torch

    from mrfa.inference.animate import Animator
    from mrfa.media.video import read_video
    from mrfa.media.writer import FrameWriter

    torch.set_num_threads(1)
    start = time.perf_counter()
    frames = read_video(video)
    decode = (time.perf_counter() - start) / len(frames)
    animator = Animator.from_checkpoint(checkpoint, device="cpu", batch_size=8)
    list(animator.reconstruct_frames(frames[:8]))  # warm-up
    start = time.perf_counter()
    preds = [p for p, _ in animator.reconstruct_frames(frames)]
    model = (time.perf_counter() - start) / len(frames)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        with FrameWriter(Path(tmp) / "png") as png, FrameWriter(Path(tmp) / "v.mp4", fps=25) as mp4:
            for p, d in zip(preds, frames):
                p8 = np.clip(np.rint(p * 255), 0, 255).astype(np.uint8)
                png.write(p8)
                mp4.write(np.concatenate([d, d, p8], axis=1) if d.shape == p8.shape else p8)
        encode = (time.perf_counter() - start) / len(frames)
    return {"decode_s_per_frame": decode, "model_s_per_frame": model, "encode_s_per_frame": encode}


def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="mrfa-bench-batch-"))
    data = work / "data"
    _dataset(data, args.videos, args.frames, args.size)
    ckpt = str(Path(args.checkpoint).resolve())
    base = ["reconstruct", "--checkpoint", ckpt, "--data", str(data), "--device", "cpu", "--quiet"]
    rows = {}
    for label, cmd, threads in (
            (f"1 process x {args.procs} threads", [sys.executable, "-m", "mrfa", *base, "--output",
                                                  str(work / "one")], args.procs),
            (f"{args.procs} processes x 1 thread", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                   f"--nproc_per_node={args.procs}", "-m", "mrfa", *base,
                                                   "--output", str(work / "many")], 1)):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        rows[label] = {"wall_s": round(wall, 2), "items_per_s": round(args.videos / wall, 3),
                       "frames_per_s": round(args.videos * args.frames / wall, 2)}
    a = json.loads((work / "one" / "metrics.json").read_text())
    b = json.loads((work / "many" / "metrics.json").read_text())
    same = {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    costs = _stage_costs(ckpt, data / "test" / "clip000.mp4")
    from mrfa.utils.machine import cpu_name

    cpu = cpu_name()
    result = {"cpu": cpu, "cores": os.cpu_count(), "videos": args.videos, "frames": args.frames, "size": args.size,
              "runs": rows, "reports_identical": same, **{k: round(v, 5) for k, v in costs.items()}}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p)
    sys.exit(run(p.parse_args()))
