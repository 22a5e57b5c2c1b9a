"""Same-identity reconstruction of a dataset (the official ``reconstruction.py``).

Evaluation box of the paper: for every test video, frame 0 is the source and every frame 0..T-1 drives it with
absolute keypoints; the prediction is compared with the driving frame. Written per run::

    OUT/png/<video>/0000000.png ...   8-bit PNG frames of the predictions (lossless, for AKD / AED)
    OUT/mp4/<video>.mp4               source | driving | prediction, for viewing
    OUT/metrics.json                  L1 / PSNR / SSIM per video and overall (mrfa.metrics.image)

Metrics are computed on the raw float predictions, as the official code does (not on the saved PNGs).
The official script writes PNGs with ``(255 * pred).astype(uint8)`` (truncation); here they are rounded unless
``png_rounding="truncate"``. Every file is written under a temporary name and renamed when complete; the run is
sharded over torchrun processes and resumable (:mod:`mrfa.inference.batch`: ``OUT/records/`` holds one record per
video).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np

from mrfa.config import ExperimentConfig
from mrfa.inference.animate import Animator
from mrfa.inference.batch import BatchRun, WorkItem, checkpoint_sha256, init_batch, run_batch, safe_key
from mrfa.inference.engine import EngineOptions
from mrfa.media.convert import float_to_uint8
from mrfa.media.video import discover_videos, iter_video_frames, video_info
from mrfa.media.writer import FrameWriter, check_output
from mrfa.metrics.image import IMAGE_METRICS, MetricAggregator, frame_metrics
from mrfa.nn.mrfa import MRFA
from mrfa.utils.distributed import DistInfo

PathLike = Union[str, Path]
OUTPUT_LAYOUT = ("png", "mp4", "metrics.json", "records")  # what reconstruct writes into its output folder
VIEW_FPS = 25.0  # fps of the viewing mp4 when the video has none (frame folders)


def find_videos(data_root: PathLike) -> dict[str, Path]:
    """The videos to reconstruct: ``root/test`` when it exists (FOMM layout), else ``root`` itself (a folder of
    videos or a single video / frame folder); keys are the names without a video suffix.

    Raises:
        FileNotFoundError: ``data_root`` is missing or holds no video.
    """
    root = Path(data_root)
    if not root.exists():
        raise FileNotFoundError(f"dataset root not found: {root}")
    return discover_videos(root / "test" if (root / "test").is_dir() else root)


def reconstruct(model: Union[MRFA, Animator, PathLike, None] = None, data_root: Optional[PathLike] = None, output_dir: Optional[PathLike] = None, *,
                checkpoint: Optional[PathLike] = None, out_dir: Optional[PathLike] = None,
                config: Union[ExperimentConfig, PathLike, None] = None,
                device: str = "auto", batch_size: int = 8, max_videos: Optional[int] = None,
                max_frames: Optional[int] = None, write_mp4: bool = True,
                png_rounding: Literal["round", "truncate"] = "round", progress: bool = False,
                overwrite: bool = False, engine: Optional[EngineOptions] = None,
                dist: Optional[DistInfo] = None) -> Path:
    """Reconstruct every video of ``data_root`` and score it; returns the folder of PNG predictions.

    Args:
        model: an MRFA model, an :class:`Animator`, or a checkpoint path (else give ``checkpoint``).
        data_root: dataset root (``root/test/<video>``), a folder of videos or one video.
        output_dir: where ``png/``, ``mp4/`` and ``metrics.json`` go (``out_dir`` is an alias, the keyword
            ``mrfa evaluate --checkpoint`` uses).
        checkpoint: checkpoint path when ``model`` is None. config: ExperimentConfig or YAML path for
            official checkpoints of non-default size.
        device: torch device or ``"auto"``. batch_size: driving frames per forward pass.
        max_videos / max_frames: only the first N videos / frames per video (smoke runs).
        write_mp4: also write the side-by-side viewing mp4s.
        png_rounding: ``"round"`` (default) or ``"truncate"`` (the official uint8 cast).
        progress: tqdm bars on stderr.
        overwrite: start over in an output folder that an earlier mrfa run wrote (one mrfa did not write is
            refused); without it, the same call again resumes (items with a matching record are skipped).
        engine: inference engine options (default: the fp32 eager reference).
        dist: the torchrun process layout (default: joined from the environment; a single process without it).

    Returns:
        ``output_dir / "png"`` (pass it to ``mrfa evaluate --pred``); the report is in
        ``output_dir / "metrics.json"``.
    """
    output_dir = output_dir if output_dir is not None else out_dir
    if data_root is None or output_dir is None:
        raise ValueError("reconstruct needs data_root and output_dir")
    if png_rounding not in ("round", "truncate"):
        raise ValueError(f"png_rounding must be 'round' or 'truncate', got {png_rounding!r}")
    dist = dist if dist is not None else init_batch(device)
    device = str(dist.device) if dist.distributed else device
    ckpt_path = checkpoint if checkpoint is not None else (model if isinstance(model, (str, Path)) else None)
    out = Path(output_dir)
    check_output(out, inputs=[data_root, ckpt_path], overwrite=True, layout=OUTPUT_LAYOUT)  # before the model
    videos = find_videos(data_root)
    if max_videos is not None:
        videos = dict(list(videos.items())[:max_videos])
    animator = _animator(model if model is not None else checkpoint, config, device, batch_size, engine)
    engine_used = dataclasses.asdict(animator.engine)
    options = {"mode": "reconstruction", "max_frames": max_frames, "png_rounding": png_rounding,
               "write_mp4": write_mp4, "engine": engine_used, "image_size": animator.image_size}
    signature = {"checkpoint_sha256": checkpoint_sha256(ckpt_path if ckpt_path is not None else animator.model),
                 "options": options}
    items = [WorkItem(safe_key(name), _frames_of(path, max_frames), {"name": name, "path": str(path)})
             for name, path in videos.items()]

    def process(item: WorkItem) -> dict[str, Any]:
        agg = MetricAggregator()
        _reconstruct_video(animator, item.payload["name"], Path(item.payload["path"]), out, agg,
                           max_frames=max_frames, write_mp4=write_mp4, png_rounding=png_rounding, progress=False)
        rows = agg.per_frame
        return {"video": item.payload["name"], "frames": len(rows), "per_frame": rows}

    def merge(done: list[tuple[WorkItem, dict[str, Any]]]) -> dict[str, Any]:
        agg = MetricAggregator()
        for _, record in done:
            for row in record.get("per_frame", []):
                values = {m: float(row[m]) if isinstance(row.get(m), str) else row.get(m) for m in IMAGE_METRICS}
                agg.add(row["video"], row["frame"], values, keep=False)  # "inf" / "nan" come back as floats
        return {
            "mode": "reconstruction",
            "data": str(data_root),
            "checkpoint": str(ckpt_path or ""),
            "checkpoint_sha256": signature["checkpoint_sha256"],
            "engine": engine_used,
            "protocol": {"source": "frame 0", "driving": "every frame 0..T-1, absolute keypoints",
                         "metrics_on": "float predictions in [0, 1]", "image_size": animator.image_size,
                         "png": f"8-bit, {png_rounding}", "metrics": list(IMAGE_METRICS)},
            "seconds": sum(float(r.get("seconds", 0.0)) for _, r in done),
            "failed_items": [{"item": it.payload["name"], "error": r["error"]} for it, r in done if "error" in r],
            **agg.summary(per_frame=False),
        }

    run_batch(BatchRun(output=out, items=items, signature=signature, process=process, merge=merge,
                       layout=OUTPUT_LAYOUT, inputs=(data_root, ckpt_path), overwrite=overwrite), dist,
              progress=progress)
    return out / "png"


def _frames_of(path: Path, max_frames: Optional[int]) -> int:
    """Frames of a video from its header (1 when it cannot be read: the item then fails in its own run)."""
    try:
        n = video_info(path).num_frames
    except (ValueError, OSError):
        return 1
    return min(n, max_frames) if max_frames else n


def _reconstruct_video(animator: Animator, name: str, path: Path, out: Path, agg: MetricAggregator, *,
                       max_frames: Optional[int], write_mp4: bool, png_rounding: str, progress: bool) -> None:
    from itertools import islice

    info = video_info(path)  # FOMM PNG strips are videos here too
    fps = info.fps or VIEW_FPS
    total = info.num_frames if max_frames is None else min(info.num_frames, max_frames)
    frames = islice(iter_video_frames(path), max_frames)
    png = FrameWriter(out / "png" / name, overwrite=True)  # a killed run's item is redone whole
    mp4 = FrameWriter(out / "mp4" / f"{name}.mp4", fps=fps, overwrite=True) if write_mp4 else None
    source: Optional[np.ndarray] = None
    try:
        for t, (pred, driving) in enumerate(animator.reconstruct_frames(frames, total=total, progress=progress)):
            source = driving if source is None else source
            pred8 = float_to_uint8(pred, png_rounding)  # [S, S, 3]
            agg.add(name, t, frame_metrics(pred, driving))
            png.write(pred8)
            if mp4 is not None:
                mp4.write(np.concatenate([source, driving, pred8], axis=1))
        png.close()
        if mp4 is not None:
            mp4.close()
    except BaseException:
        png.abort()
        if mp4 is not None:
            mp4.abort()
        raise


def _animator(model: Union[MRFA, Animator, PathLike, None], config: Union[ExperimentConfig, PathLike, None],
              device: str, batch_size: int, engine: Optional[EngineOptions] = None) -> Animator:
    if isinstance(model, Animator):
        return model
    if model is None:
        raise ValueError("reconstruct needs a model, an Animator or a checkpoint path")
    if isinstance(model, (str, Path)):
        if isinstance(config, (str, Path)):
            from mrfa.config import load_config

            config = load_config(config)
        return Animator.from_checkpoint(model, device=device, batch_size=batch_size, config=config, engine=engine)
    return Animator(model, device=device, batch_size=batch_size, engine=engine)
