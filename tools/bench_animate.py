"""Animation benchmarks (``python tools/benchmark.py animate``): per-frame cost with the source encoding cached
vs recomputed, and peak memory of a whole ``mrfa animate`` run for short and long driving videos.

Not a paper box: measures the inference driver :class:`mrfa.inference.animate.Animator`.

* **per-frame cost**: ``cached`` = the Animator path (source keypoints, generator features and source structure
  computed once, driving frames batched); ``recompute`` = ``model.animate(source, driving, driving_initial)`` per
  batch with nothing cached (what a naive loop over the official forward does). Median of ``--repeats`` passes
  over ``--frames-timing`` frames after a warm-up pass.
* **memory**: a synthetic driving mp4 of N frames (default 100 and 1000) is animated end to end (decode ->
  model -> H.264 encode) in a fresh child process per N; peak RSS (and peak CUDA memory) is reported with the
  baseline after model load, so "flat with video length" can be read off directly.

The model is randomly initialised from ``--config`` unless ``--checkpoint`` is given (speed does not depend on
the weights).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

from mrfa.utils.memory import rss_mib as _rss_mib

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = ROOT / "configs" / "demo.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``benchmark.py animate`` options to ``parser`` and return it."""
    parser.add_argument("--config", default=None,
                        help=f"model config (default {DEFAULT_CONFIG.relative_to(ROOT)}, else configs/tiny.yaml)")
    parser.add_argument("--checkpoint", default=None, help="benchmark this checkpoint instead of a random model")
    parser.add_argument("--fixture", default=None,
                        help="--end-to-end: a parity fixture's weights (tests/fixtures/parity/vox256-mtia.pt)")
    parser.add_argument("--device", nargs="+", default=["cpu", "cuda"], help="devices (cuda skipped if absent)")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[1, 4], help="driving frames per pass")
    parser.add_argument("--frames-timing", type=int, default=16, help="driving frames per timed pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes (median reported)")
    parser.add_argument("--memory-frames", type=int, nargs="*", default=[100, 1000],
                        help="driving video lengths for the peak-memory runs (none: skip)")
    parser.add_argument("--memory-batch-size", type=int, default=4, help="batch size of the memory runs")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the results as JSON here")
    parser.add_argument("--end-to-end", action="store_true",
                        help="instead: whole `mrfa animate` runs on synthetic faces (decode, face crop when a face "
                             "backend is installed, model, encode) per --speed preset, alone and beside a competing "
                             "torch process")
    parser.add_argument("--clip-frames", type=int, default=36, help="frames of the long end-to-end clip")
    parser.add_argument("--clip-size", type=int, default=256, help="side of the end-to-end clips in pixels")
    return parser


PRESETS = (("defaults (fp32 eager, no flags)", []), ("--speed exact", ["--speed", "exact"]),
           ("--speed fast", ["--speed", "fast"]), ("--speed fastest", ["--speed", "fastest"]))
_PEAK = ("import resource, sys\nfrom mrfa.cli import main\ncode = main(sys.argv[1:])\n"
         "print('peak-rss-kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nsys.exit(code)")


def face_clips(folder: Path, frames: int, size: int) -> tuple[Path, Path]:
    """A source portrait (frame 0 of one synthetic face clip) and a driving mp4 (another identity), ``size`` px."""
    import imageio.v3 as iio

    from mrfa.data.synthetic import generate_dataset

    generate_dataset(folder, num_train=1, num_test=2, num_frames=frames, size=size, video_format="mp4",
                     clips_per_identity=1)
    clips = sorted(p for p in (folder / "test").iterdir() if p.suffix == ".mp4")
    source = folder / "source.png"
    iio.imwrite(source, next(iter(iio.imiter(clips[0]))))
    return source, clips[1]


def _animate(args: argparse.Namespace, source: Path, driving: Path, out: Path, flags: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one ``mrfa animate`` process."""
    cmd = [sys.executable, "-c", _PEAK, "animate", "--checkpoint", str(args.checkpoint), "--source", str(source),
           "--driving", str(driving), "--output", str(out), "--quiet", "--device", "cpu", *args.crop_flags, *flags]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.strip().splitlines() if not line.startswith("peak-rss-kib")]
        raise RuntimeError((errors or ["?"])[-1])
    peak = [line for line in proc.stderr.splitlines() if line.startswith("peak-rss-kib")]
    return seconds, int(peak[-1].split()[1]) / 1024 if peak else float("nan")


def run_end_to_end(args: argparse.Namespace) -> int:
    """Whole `mrfa animate` commands (fresh processes) per preset, idle and beside a competing process.

    Each preset animates a long and a short clip of synthetic faces; the per-frame cost is the difference of the
    two runs over the difference of their lengths (decode, face crop, model, encode), the start-up cost (imports,
    checkpoint, source, warm-up) what is left of the short run.
    """
    from mrfa.media.face import backend_status
    from mrfa.utils.machine import cpu_name

    if not args.checkpoint and not args.fixture:
        raise SystemExit("--end-to-end needs --checkpoint (a snapshot the command can load) or --fixture")
    missing = backend_status("dlib") and backend_status("face_alignment")  # --detector auto uses either
    args.crop_flags = [] if missing else ["--crop", "both"]
    short = max(2, args.clip_frames // 6)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.fixture:  # the parity fixture's recipe weights as a snapshot the command loads
            import bench_forward
            from mrfa.checkpoint import save_snapshot

            model = bench_forward._load(argparse.Namespace(fixture=args.fixture))[0]
            args.checkpoint = str(Path(tmp) / "fixture-weights.pt")
            save_snapshot(args.checkpoint, model, model.config)
        source, long_clip = face_clips(Path(tmp) / "long", args.clip_frames, args.clip_size)
        _, short_clip = face_clips(Path(tmp) / "short", short, args.clip_size)
        busy = [sys.executable, "-c", "import torch\nx = torch.rand(512, 512)\nwhile True: x = (x @ x).clamp(-1, 1)"]
        print(f"# end-to-end mrfa animate: synthetic faces {args.clip_size} x {args.clip_size}, {args.clip_frames} "
              f"and {short} frames, {'--crop both' if not missing else 'no face crop (' + missing + ')'}; "
              f"{Path(args.fixture).name + ' weights' if args.fixture else args.checkpoint}; {cpu_name()}")
        print("| preset | machine | start-up s | s/frame | frames/s | speed-up | peak RSS MiB |\n"
              "| --- | --- | --- | --- | --- | --- | --- |")
        for machine in ("idle", "busy (a 2-thread torch loop beside it)"):
            competitor = subprocess.Popen(busy) if machine != "idle" else None
            try:
                ref = None
                for name, flags in PRESETS:
                    t_long, peak = _animate(args, source, long_clip, Path(tmp) / f"l{len(rows)}.mp4", flags)
                    t_short, _ = _animate(args, source, short_clip, Path(tmp) / f"s{len(rows)}.mp4", flags)
                    per_frame = max(t_long - t_short, 1e-9) / (args.clip_frames - short)
                    startup = t_short - short * per_frame
                    ref = ref or per_frame
                    rows.append({"preset": name, "machine": machine, "startup_s": startup,
                                 "seconds_per_frame": per_frame, "peak_rss_mib": peak})
                    print(f"| {name} | {machine} | {startup:.1f} | {per_frame:.3f} | {1 / per_frame:.2f} | "
                          f"{ref / per_frame:.2f}x | {peak:.0f} |", flush=True)
            finally:
                if competitor is not None:
                    competitor.kill()
                    competitor.wait()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def _config_path(args: argparse.Namespace) -> str:
    if args.config:
        return str(args.config)
    return str(DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else ROOT / "configs" / "tiny.yaml")


def _load_model(config: str, checkpoint: Optional[str]):
    import torch

    import mrfa

    if checkpoint:
        return mrfa.load_checkpoint(checkpoint)
    torch.manual_seed(0)
    return mrfa.build_model(mrfa.load_config(config)).eval()


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_per_frame(model, device: str, batch_size: int, frames: int, repeats: int) -> dict:
    """Seconds per driving frame, source cached (Animator) vs recomputed (plain ``model.animate``)."""
    import torch

    from mrfa.inference.animate import Animator

    animator = Animator(model, device=device, batch_size=batch_size)
    size = animator.image_size
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    driving = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
    src_t = animator.to_tensor([source])
    drv_t = animator.to_tensor(list(driving))

    def cached() -> None:
        for _ in animator.animate(source, driving, batch_size=batch_size):
            pass

    def recompute() -> None:
        with torch.inference_mode():
            for i in range(0, frames, batch_size):
                d = drv_t[i:i + batch_size]
                animator.model.animate(src_t.expand(len(d), -1, -1, -1), d, drv_t[:1].expand(len(d), -1, -1, -1))

    out = {}
    for name, fn in (("cached", cached), ("recompute", recompute)):
        times = []
        for i in range(repeats + 1):
            animator._cache = None  # every pass pays the one source encoding (amortised over the clip)
            _sync(animator.device)
            t0 = time.perf_counter()
            fn()
            _sync(animator.device)
            if i:
                times.append(time.perf_counter() - t0)
        out[f"{name}_ms_per_frame"] = 1000 * statistics.median(times) / frames
    out["speedup"] = out["recompute_ms_per_frame"] / out["cached_ms_per_frame"]
    return out


def synthetic_driving(path: Path, frames: int, size: int = 256, fps: float = 25.0) -> Path:
    """Write a smooth moving-blob mp4 of ``frames`` frames (cheap to decode, deterministic)."""
    from mrfa.media.writer import FrameWriter

    yy, xx = np.mgrid[0:size, 0:size] / size
    with FrameWriter(path, fps=fps) as w:
        for t in range(frames):
            cx, cy = 0.5 + 0.2 * np.sin(t / 9.0), 0.5 + 0.2 * np.cos(t / 13.0)
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02)
            img = np.stack([blob, 0.5 * xx + 0.3 * blob, yy], axis=-1)
            w.write((np.clip(img, 0, 1) * 255).astype(np.uint8))
    return path


def measure_memory(config: str, checkpoint: Optional[str], device: str, driving: Path, batch_size: int) -> dict:
    """Child process: animate ``driving`` end to end into an mp4; peak RSS / CUDA memory vs the baseline."""
    import torch

    from mrfa.inference.animate import Animator
    from mrfa.media.writer import FrameWriter

    animator = Animator(_load_model(config, checkpoint), device=device, batch_size=batch_size)
    size = animator.image_size
    source = np.full((size, size, 3), 128, np.uint8)
    for _ in animator.animate(source, np.zeros((batch_size, size, size, 3), np.uint8)):  # warm-up
        pass
    baseline = _rss_mib()
    if animator.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, FrameWriter(Path(tmp) / "out.mp4", fps=25) as writer:
        n = 0
        for frame in animator.animate(source, driving):
            writer.write(frame)
            n += 1
    result = {"frames": n, "seconds": time.perf_counter() - t0, "baseline_rss_mib": baseline,
              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    result["growth_mib"] = result["peak_rss_mib"] - baseline
    if animator.device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def run(args: argparse.Namespace) -> int:
    """Run the animation benchmarks and print a table (optionally JSON)."""
    import torch

    if args.end_to_end:
        return run_end_to_end(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = _config_path(args)
    devices = [d for d in args.device if not d.startswith("cuda") or torch.cuda.is_available()]
    skipped = sorted(set(args.device) - set(devices))
    model = _load_model(config, args.checkpoint)
    print(f"# animation benchmark: {args.checkpoint or config} ({model.image_size} px, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters); torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads" + (f"; skipped (not available): {', '.join(skipped)}" if skipped
                                                      else ""))
    results: dict = {"config": config, "checkpoint": args.checkpoint, "image_size": model.image_size,
                     "per_frame": [], "memory": []}
    for device in devices:
        for bs in args.batch_size:
            r = {"device": device, "batch_size": bs, "frames": args.frames_timing,
                 **measure_per_frame(model, device, bs, args.frames_timing, args.repeats)}
            results["per_frame"].append(r)
            print(f"{device:5s} batch {bs:2d}: source cached {r['cached_ms_per_frame']:8.1f} ms/frame, "
                  f"recomputed {r['recompute_ms_per_frame']:8.1f} ms/frame ({r['speedup']:.2f}x)")
    if args.memory_frames:
        with tempfile.TemporaryDirectory() as tmp:
            for device in devices:
                for n in args.memory_frames:
                    video = synthetic_driving(Path(tmp) / f"driving{n}.mp4", n)
                    cmd = [sys.executable, str(Path(__file__).resolve()), "_memory", config, str(args.checkpoint or ""),
                           device, str(video), str(args.memory_batch_size), str(args.threads or 0)]
                    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT))
                    if proc.returncode != 0:
                        raise RuntimeError(f"memory benchmark child failed: {proc.stderr.strip()[-1000:]}")
                    r = {"device": device, **json.loads(proc.stdout.strip().splitlines()[-1])}
                    results["memory"].append(r)
                    cuda = f", peak CUDA {r['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in r else ""
                    print(f"{device:5s} {r['frames']:5d}-frame driving video: peak RSS {r['peak_rss_mib']:7.1f} MiB "
                          f"(+{r['growth_mib']:.1f} over the loaded model){cuda}, "
                          f"{1000 * r['seconds'] / r['frames']:.1f} ms/frame end to end")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """Child entry point (``_memory``) or the benchmark itself."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_memory":
        config, checkpoint, device, video, batch, threads = argv[1:7]
        if int(threads):
            import torch

            torch.set_num_threads(int(threads))
        print(json.dumps(measure_memory(config, checkpoint or None, device, Path(video), int(batch))))
        return 0
    parser = add_arguments(argparse.ArgumentParser(prog="benchmark.py animate", description=__doc__))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
