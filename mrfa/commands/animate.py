"""``mrfa animate``: reenact a portrait with a driving video (the official ``demo.py``).

Not a paper box: the command-line front end of :class:`mrfa.inference.animate.Animator`. Compared with the
official demo it runs on CPU or GPU, takes inputs of any size / kind, streams the driving video in batches,
keeps the driving video's frame rate and audio, has a working best-frame search, optional VoxCeleb-style face
crop and paste-back into the full photo, a keypoint visualisation, and writes mp4 / mov / mkv / gif / PNG
frames atomically (no partial output is left behind on an error).

Example::

    mrfa animate --checkpoint runs/demo/snapshot.pt --source portrait.jpg --driving driving.mp4 \
        --output result.mp4 --crop --paste-back
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mrfa.commands.options import add_engine_arguments, engine_from_args
from mrfa.inference.animate import Animator
from mrfa.inference.engine import check_engine
from mrfa.inference.pipeline import MAX_FPS, MIN_FPS, AnimateRequest, animate_to_file, check_driving
from mrfa.inference.smoothing import smoothing_from_text
from mrfa.media.frames import load_image
from mrfa.media.video import check_image_size, video_info
from mrfa.media.writer import check_output, output_kind
from mrfa.utils.device import resolve_device
from mrfa.utils.warnings import RunWarnings

DEFAULT_FPS = 25.0  # for frame folders, which carry no frame rate


def add_motion_arguments(parser: argparse.ArgumentParser, title: str = "motion transfer") -> None:
    """The motion-transfer flags of :meth:`Animator.frames` (``--relative/--absolute --adapt-scale --smooth
    --find-best-frame/--best-frame``), shared by ``mrfa animate`` and ``mrfa evaluate --pairs --checkpoint``."""
    m = parser.add_argument_group(title)
    rel = m.add_mutually_exclusive_group()
    rel.add_argument("--relative", dest="relative", action="store_true", default=True,
                     help="relative motion (official normalize_kp; the default)")
    rel.add_argument("--absolute", dest="relative", action="store_false", help="absolute driving keypoints")
    m.add_argument("--adapt-scale", action="store_true",
                   help="scale the motion by the source / reference keypoint convex-hull areas")
    m.add_argument("--smooth", nargs="?", const="1.0,5.0", default=None, metavar="MIN_CUTOFF,BETA",
                   help="causal One-Euro smoothing of the driving keypoints against jitter (off by default; "
                        "--smooth alone: min_cutoff 1 Hz, beta 5; see docs/animation.md)")
    best = m.add_mutually_exclusive_group()
    best.add_argument("--find-best-frame", action="store_true",
                      help="use the driving frame whose face landmarks are closest to the source's as reference")
    best.add_argument("--best-frame", type=int, default=None, metavar="N", help="reference driving frame index")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``mrfa animate`` options to ``parser`` and return it."""
    io = parser.add_argument_group("inputs and output")
    io.add_argument("--checkpoint", required=True, help="mrfa snapshot / training state / official checkpoint")
    io.add_argument("--config", default=None, help="YAML config (only for official checkpoints of non-default size)")
    io.add_argument("--source", help="source portrait: jpg / png / webp / bmp, any size")
    io.add_argument("--driving", help="driving video: mp4 / mov / webm / mkv / avi / gif, or a folder of frames")
    io.add_argument("--pairs", metavar="PAIRS.csv", default=None,
                    help="animate many pairs in one run (instead of --source/--driving): a CSV with 'source' and "
                         "'driving' columns and an optional 'result' name; --output is then a folder. Shards over "
                         "torchrun processes and resumes when run again (docs/batch.md)")
    io.add_argument("--data", default=None, help="with --pairs: the folder relative paths start from (default: the "
                                                 "CSV's folder)")
    io.add_argument("--output", required=True,
                    help="result: .mp4 / .mov / .mkv / .gif, or a folder name for PNG frames (with --pairs: the "
                         "output folder)")
    io.add_argument("--overwrite", action="store_true",
                    help="replace an existing output file, or a PNG folder an earlier mrfa run wrote (with --pairs: "
                         "start over instead of resuming)")
    add_motion_arguments(parser)
    f = parser.add_argument_group("face crop")
    f.add_argument("--crop", nargs="?", const="both", default="none", choices=("none", "both", "source", "driving"),
                   help="VoxCeleb-style face crop of the source and the driving video (or only one of them); "
                        "without it, non-square inputs are centre-cropped to a square")
    f.add_argument("--paste-back", action="store_true",
                   help="paste the animated crop back into the full source image with a feathered mask")
    f.add_argument("--feather", type=float, default=0.1, help="paste-back mask ramp, fraction of the crop side")
    f.add_argument("--detector", choices=("auto", "dlib", "face_alignment"), default="auto",
                   help="face backend for --crop / --find-best-frame (auto: face_alignment if usable, else dlib)")
    f.add_argument("--detect-stride", type=int, default=5, help="run the face detector on every N-th driving frame")
    r = parser.add_argument_group("runtime and rendering")
    r.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (auto: cuda when available)")
    r.add_argument("--batch-size", type=int, default=4, help="driving frames per forward pass")
    r.add_argument("--cache-mb", type=float, default=256,
                   help="memory for decoded driving frames kept between passes (default 256): model-size frames are "
                        "kept for rendering after the best-frame search, and with --crop the full-size clip too "
                        "when it fits, so the video is decoded once; 0: decode again for each pass")
    r.add_argument("--fps", type=float, default=None, help="output frame rate (default: the driving video's)")
    r.add_argument("--no-audio", action="store_true", help="do not copy the driving video's audio")
    r.add_argument("--visualize", action="store_true",
                   help="side by side: source | driving | result (+ pasted frame), keypoints drawn")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    add_engine_arguments(parser)
    return parser


# ------------------------------------------------------------------------------------------ command
def _check_args(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.best_frame is not None and args.best_frame < 0:
        raise ValueError(f"--best-frame must be >= 0, got {args.best_frame}")
    if args.fps is not None and not (np.isfinite(args.fps) and MIN_FPS <= args.fps <= MAX_FPS):
        raise ValueError(f"--fps must be between {MIN_FPS:g} and {MAX_FPS:g}, got {args.fps:g}")
    if args.detect_stride < 1:
        raise ValueError(f"--detect-stride must be >= 1, got {args.detect_stride}")
    if not 0.0 <= args.feather <= 0.5:
        raise ValueError(f"--feather must be in [0, 0.5], got {args.feather:g}")
    if not (np.isfinite(args.cache_mb) and 0 <= args.cache_mb <= 1 << 20):
        raise ValueError(f"--cache-mb must be a number of megabytes between 0 and 1048576, got {args.cache_mb:g}")
    smoothing_from_text(args.smooth)


def run(args: argparse.Namespace) -> int:
    """Execute ``mrfa animate``; returns 0 (errors raise with one clear sentence; ``mrfa`` exits 1)."""
    _check_args(args)
    if args.pairs is not None:
        if args.source or args.driving:
            raise ValueError("give either --pairs or --source with --driving")
        return run_pairs(args)
    if not args.source or not args.driving:
        raise ValueError("--source and --driving are required (or --pairs PAIRS.csv)")
    engine = engine_from_args(args)
    check_engine(engine, resolve_device(args.device))  # before anything is read
    source_path, driving_path, output = Path(args.source), Path(args.driving), Path(args.output)
    check_output(output, inputs=[source_path, driving_path, args.checkpoint, args.config], overwrite=args.overwrite)
    load_image(source_path, "source")  # input errors before the model is loaded
    check_driving(driving_path)
    warn = RunWarnings("mrfa animate")
    config = None
    if args.config:
        from mrfa.config import load_config

        config = load_config(args.config)
    animator = Animator.from_checkpoint(args.checkpoint, device=args.device, batch_size=args.batch_size,
                                        config=config, cache_mb=args.cache_mb, engine=engine)
    src_size = check_image_size(source_path)  # (width, height) from the header
    if min(src_size) < animator.image_size:
        warn("upscaled_source", f"the source {source_path} ({src_size[0]}x{src_size[1]}) is smaller than the "
                                f"model's {animator.image_size} px and is upscaled")
    request = AnimateRequest(source=source_path, driving=driving_path, output=output, relative=args.relative,
                             adapt_scale=args.adapt_scale, best_frame=args.best_frame,
                             find_best_frame=args.find_best_frame, smoothing=smoothing_from_text(args.smooth),
                             crop=args.crop, paste_back=args.paste_back, feather=args.feather,
                             visualize=args.visualize, detector=args.detector, detect_stride=args.detect_stride,
                             fps=args.fps, audio=not args.no_audio, overwrite=args.overwrite, cache_mb=args.cache_mb)
    bar = None if args.quiet else tqdm(total=video_info(driving_path).num_frames or None, unit="frame",
                                       desc="animate", leave=False)
    try:
        result = animate_to_file(animator, request, progress=None if bar is None else lambda done, total:
                                 bar.update(done - bar.n))
    finally:
        if bar is not None:
            bar.close()
    if result.nonfinite_frames:
        warn("nonfinite_frames", f"{result.nonfinite_frames} of {result.frames} frames contained NaN / inf model "
                                 "outputs")
    if result.announced_frames and result.frames < result.announced_frames:
        warn("truncated_driving", f"the driving video {driving_path} announces {result.announced_frames} frames "
                                  f"but only {result.frames} could be decoded (a truncated file?)")
    if result.audio_requested and result.audio_error:
        warn("audio_not_copied", result.audio_error)
    kind = output_kind(output)
    details = [f"{result.frames} frames", f"{result.fps:g} fps" if kind != "frames" else "PNG frames",
               "with audio" if result.audio_requested and result.audio_muxed else "no audio",
               f"reference frame {result.reference_frame}", f"driving decoded {result.decodes}x"]
    if result.source_box is not None or result.driving_box is not None:
        details.append(f"crop boxes source={result.source_box} driving={result.driving_box}")
    print(f"mrfa animate: wrote {output} ({', '.join(details)})" + warn.summary())
    return 0


def _request_options(args: argparse.Namespace) -> dict:
    """The options that decide an animation's result (recorded with every item of a --pairs run)."""
    return {"relative": args.relative, "adapt_scale": args.adapt_scale, "best_frame": args.best_frame,
            "find_best_frame": args.find_best_frame, "smooth": args.smooth, "crop": args.crop,
            "paste_back": args.paste_back, "feather": args.feather, "visualize": args.visualize,
            "detector": args.detector, "fps": args.fps, "audio": not args.no_audio}


def run_pairs(args: argparse.Namespace) -> int:
    """``mrfa animate --pairs``: one output per row, sharded over torchrun ranks, resumable."""
    import dataclasses

    from mrfa.inference.batch import BatchRun, WorkItem, checkpoint_sha256, init_batch, run_batch, safe_key
    from mrfa.media.video import video_key
    from mrfa.metrics.evaluate import read_pairs

    pairs, output = Path(args.pairs), Path(args.output)
    base = Path(args.data) if args.data else pairs.parent
    rows = read_pairs(pairs)
    dist = init_batch(args.device)
    engine = engine_from_args(args)
    check_engine(engine, dist.device)
    smoothing = smoothing_from_text(args.smooth)
    items = []
    for number, row in enumerate(rows, start=1):
        src, drv = (Path(row[k]) if Path(row[k]).is_absolute() else base / row[k] for k in ("source", "driving"))
        name = (row.get("result") or "").strip() or f"{video_key(src)}-{video_key(drv)}.mp4"
        if not Path(name).suffix:
            name += ".mp4"
        try:
            weight = video_info(drv).num_frames
        except (ValueError, OSError):
            weight = 1
        items.append(WorkItem(safe_key(Path(name).stem), weight,
                              {"row": number, "source": str(src), "driving": str(drv),
                               "output": safe_key(Path(name).stem) + Path(name).suffix}))
    config = None
    if args.config:
        from mrfa.config import load_config

        config = load_config(args.config)
    animator = Animator.from_checkpoint(args.checkpoint, device=str(dist.device), batch_size=args.batch_size,
                                        config=config, cache_mb=args.cache_mb, engine=engine)
    options = {**_request_options(args), "engine": dataclasses.asdict(animator.engine)}
    signature = {"checkpoint_sha256": checkpoint_sha256(args.checkpoint), "options": options}

    def process(item: WorkItem) -> dict:
        req = AnimateRequest(source=Path(item.payload["source"]), driving=Path(item.payload["driving"]),
                             output=output / item.payload["output"], relative=args.relative,
                             adapt_scale=args.adapt_scale, best_frame=args.best_frame,
                             find_best_frame=args.find_best_frame, smoothing=smoothing, crop=args.crop,
                             paste_back=args.paste_back, feather=args.feather, visualize=args.visualize,
                             detector=args.detector, detect_stride=args.detect_stride, fps=args.fps,
                             audio=not args.no_audio, overwrite=True, cache_mb=args.cache_mb)
        result = animate_to_file(animator, req)
        return {"output": item.payload["output"], "frames": result.frames, "fps": result.fps,
                "audio": result.audio_muxed, "row": item.payload["row"]}

    def merge(done: list) -> dict:
        ok = [(it, r) for it, r in done if "error" not in r]
        return {"mode": "animate_pairs", "pairs": str(pairs), "checkpoint": str(args.checkpoint),
                "checkpoint_sha256": signature["checkpoint_sha256"], "options": options,
                "items": [{"item": it.key, "row": it.payload["row"], "source": it.payload["source"],
                           "driving": it.payload["driving"], "output": r["output"], "frames": r["frames"],
                           "fps": r["fps"], "audio": r["audio"]} for it, r in ok],
                "frames": sum(int(r["frames"]) for _, r in ok),
                "seconds": sum(float(r.get("seconds", 0.0)) for _, r in done),
                "failed_items": [{"item": it.key, "row": it.payload["row"], "source": it.payload["source"],
                                  "driving": it.payload["driving"], "error": r["error"]} for it, r in done
                                 if "error" in r]}

    report = run_batch(BatchRun(output=output, items=items, signature=signature, process=process, merge=merge,
                                layout=tuple(it.payload["output"] for it in items),
                                inputs=(pairs, args.checkpoint, args.config), overwrite=args.overwrite),
                       dist, progress=not args.quiet)
    if report is None:
        return 0
    failed = report["failed_items"]
    for item in failed:
        print(f"mrfa animate: warning: row {item['row']} ({item['item']}) failed: {item['error']}", file=sys.stderr)
    print(f"mrfa animate: {len(report['items'])} of {len(items)} pairs written to {output} ({report['frames']} "
          f"frames); report: {output / 'metrics.json'}")
    return 1 if failed else 0
